"""Network Dissection with action concepts: exact streaming thresholds and tallies (``mmit-dissect``)."""


def __getattr__(name: str):
    """Lazy re-exports, so ``import dissect.cli`` stays free of torch until it is needed."""
    if name in ("run_dissection", "dissect_stream", "LayerResult"):
        from dissect import engine

        return getattr(engine, name)
    raise AttributeError(name)
