"""`python -m webapp [--host H] [--port P]`: serve the dashboard, on 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import argparse

from .settings import SettingsError, is_local_host, load_settings


def serve(host: str | None = None, port: int | None = None) -> None:
    """Run uvicorn; a non-local bind is refused unless an upload token is configured."""
    import uvicorn

    settings = load_settings()
    host = host or settings.host
    port = port or settings.port
    if not is_local_host(host) and not settings.upload_token:
        raise SettingsError(f"refusing to bind {host}: set MMIT_UPLOAD_TOKEN so that uploads from other machines "
                            "need a token, or bind 127.0.0.1")
    from .main import create_app

    uvicorn.run(create_app(settings), host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m webapp", description=__doc__)
    p.add_argument("--host", help="address to bind (default MMIT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default MMIT_PORT or 8000)")
    a = p.parse_args(argv)
    try:
        serve(a.host, a.port)
    except SettingsError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
