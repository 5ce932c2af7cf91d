"""Dashboard settings: which run dirs to serve and the upload limits, from env vars or a JSON file.

Read once at start-up; a path that was named but does not exist is an error there, not a 500 later.
The default run folder (the embedded demo's) may be missing: the dashboard then shows how to make it.
"""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_RUNS = Path("demo_out/runs")
RUN_MARKERS = ("config.json", "checkpoints", "results.sqlite", "eval.json")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


@dataclass(frozen=True)
class ServedRun:
    """A run the dashboard serves: its URL name and its dir (the dir never leaves the server)."""

    name: str
    dir: Path


@dataclass(frozen=True)
class Settings:
    """Everything the dashboard is configured by (env var names in `ENV`)."""

    runs: tuple[Path, ...] = ()
    runs_source: str = f"default ({DEFAULT_RUNS})"
    host: str = "127.0.0.1"
    port: int = 8000
    upload_token: str | None = None
    max_upload_mb: float = 50.0
    max_duration_s: float = 30.0
    decode_timeout_s: float = 15.0
    queue_size: int = 32
    keep_jobs: int = 200
    top_k: int = 5
    run_names: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_upload_bytes(self) -> int:
        """Upload size limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    def served(self, name: str) -> ServedRun | None:
        """The served run called `name`, or None."""
        path = self.run_names.get(name)
        return None if path is None else ServedRun(name, path)


ENV = {
    "runs": "MMIT_RUNS",
    "host": "MMIT_HOST",
    "port": "MMIT_PORT",
    "upload_token": "MMIT_UPLOAD_TOKEN",
    "max_upload_mb": "MMIT_MAX_UPLOAD_MB",
    "max_duration_s": "MMIT_MAX_DURATION_S",
    "decode_timeout_s": "MMIT_DECODE_TIMEOUT_S",
    "queue_size": "MMIT_QUEUE_SIZE",
    "keep_jobs": "MMIT_KEEP_JOBS",
    "top_k": "MMIT_TOP_K",
}
CONFIG_ENV = "MMIT_WEBAPP_CONFIG"


def is_run_dir(p: Path) -> bool:
    """A folder that looks like a run dir (config, checkpoints, store or evaluation inside)."""
    return p.is_dir() and any((p / m).exists() for m in RUN_MARKERS)


def expand_runs(entries: list[Path], source: str) -> tuple[Path, ...]:
    """Each entry is a run dir or a folder of run dirs; every named path must exist."""
    runs: list[Path] = []
    for e in entries:
        if not e.is_dir():
            raise SettingsError(f"{source}: {e} is not a directory")
        if is_run_dir(e):
            runs.append(e.resolve())
            continue
        inner = sorted(c.resolve() for c in e.iterdir() if is_run_dir(c))
        if not inner:
            raise SettingsError(f"{source}: {e} is neither a run dir nor a folder of run dirs "
                                f"(a run dir holds one of {', '.join(RUN_MARKERS)})")
        runs.extend(inner)
    return tuple(runs)


def name_runs(runs: tuple[Path, ...]) -> dict[str, Path]:
    """URL names of runs: the folder name, or parent/name when two runs share a folder name."""
    names: dict[str, Path] = {}
    for r in runs:
        base = r.name
        clash = [o for o in runs if o.name == base and o != r]
        names[f"{r.parent.name}-{base}" if clash else base] = r
    return names


def _coerce(name: str, raw: object, source: str) -> object:
    """Convert a raw env/config value to the field's type, naming the source on failure."""
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "int":
            v = int(raw)  # type: ignore[arg-type]
        elif kind == "float":
            v = float(raw)  # type: ignore[arg-type]
        else:
            return None if raw in ("", None) else str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: {name} must be a number, got {raw!r}") from None
    if v <= 0:
        raise SettingsError(f"{source}: {name} must be positive, got {raw!r}")
    return v


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings from a JSON config file (`MMIT_WEBAPP_CONFIG`), overridden by `MMIT_*` env vars."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    raw_runs: list[str] | None = None
    source = "default"
    if env.get(CONFIG_ENV):
        cfg_path = Path(env[CONFIG_ENV])
        if not cfg_path.is_file():
            raise SettingsError(f"{CONFIG_ENV}: {cfg_path} not found")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SettingsError(f"{cfg_path}: not valid JSON ({e})") from None
        unknown = set(cfg) - set(ENV)
        if unknown:
            raise SettingsError(f"{cfg_path}: unknown keys {sorted(unknown)}; known: {sorted(ENV)}")
        for k, v in cfg.items():
            if k == "runs":
                raw_runs = [str(Path(cfg_path.parent, p)) for p in (v if isinstance(v, list) else [v])]
                source = str(cfg_path)
            else:
                values[k] = _coerce(k, v, str(cfg_path))
    for k, var in ENV.items():
        if k != "runs" and var in env:
            values[k] = _coerce(k, env[var], var)
    if env.get(ENV["runs"]):
        raw_runs = [p for p in env[ENV["runs"]].split(os.pathsep) if p]
        source = ENV["runs"]
    if raw_runs is None:
        runs = expand_runs([DEFAULT_RUNS], "default") if DEFAULT_RUNS.is_dir() and any(
            is_run_dir(c) for c in DEFAULT_RUNS.iterdir()) else ()
        source = f"default ({DEFAULT_RUNS})"
    else:
        runs = expand_runs([Path(p) for p in raw_runs], source)
    return Settings(runs=runs, runs_source=source, run_names=name_runs(runs), **values)  # type: ignore[arg-type]


def is_local_host(host: str) -> bool:
    """True for loopback addresses and `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
