"""`python -m webapp [--host H] [--port P] [RUN ...]`: serve the dashboard, on 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import argparse

from .serve import serve
from .settings import SettingsError


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m webapp", description=__doc__)
    p.add_argument("runs", nargs="*", help="run dirs or folders of run dirs (default MMIT_RUNS, else demo_out/runs)")
    p.add_argument("--host", help="address to bind (default MMIT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default MMIT_PORT or 8000)")
    a = p.parse_args(argv)
    try:
        serve(a.runs or None, a.host, a.port)
    except SettingsError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
