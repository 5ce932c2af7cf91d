"""The embedded default of mmit-interp: a synthetic world, trained, analysed and served (`mmit-demo`)."""

from .pipeline import PRESETS, DemoConfig, run_demo

__all__ = ["PRESETS", "DemoConfig", "run_demo"]
