"""`serve()`: run the dashboard with uvicorn, on 127.0.0.1 unless told otherwise (used by `mmit-demo`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from .settings import SettingsError, expand_runs, is_local_host, load_settings, name_runs


def serve(runs: Sequence[str | Path] | None = None, host: str | None = None, port: int | None = None) -> None:
    """Serve `runs` (run dirs or folders of them; default: the settings'), refusing a non-local bind without a token."""
    import uvicorn

    settings = load_settings()
    if runs is not None:
        found = expand_runs([Path(r) for r in runs], "serve(runs=...)")
        settings = dataclasses.replace(settings, runs=found, run_names=name_runs(found),
                                       runs_source=", ".join(str(r) for r in runs))
    host = host or settings.host
    port = port or settings.port
    if not is_local_host(host) and not settings.upload_token:
        raise SettingsError(f"refusing to bind {host}: set MMIT_UPLOAD_TOKEN so that uploads from other machines "
                            "need a token, or bind 127.0.0.1")
    from .main import create_app

    uvicorn.run(create_app(settings), host=host, port=port)
