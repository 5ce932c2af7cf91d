"""Resumable stages: each result is keyed by everything it depends on and reused when unchanged.

A stage writes a marker `stages/<name>.json` (key hash, summary, seconds) atomically *after* its
outputs are complete, so an interrupted run redoes only the unfinished stage, and a second run
with the same inputs reuses every finished one. A stage whose dependency ran in this pipeline
(forced, or rebuilt for a changed key) runs again too: a rebuilt stage may replace the folders its
dependents wrote into (a training stage starts its run folder afresh), even where its key is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmit_interp.atomic import atomic_write_json

CODE_VERSION = "mmit-demo/1"


def key_hash(key: Any) -> str:
    """Stable hash of a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageResult:
    """A finished stage: its summary, whether it was reused, and how long it took when it ran."""

    name: str
    summary: dict
    cached: bool
    seconds: float
    key: str


@dataclass
class Pipeline:
    """Runs stages in order under `out/`, printing each stage's progress and time."""

    out: Path
    skip: set[str] = field(default_factory=set)
    force: set[str] = field(default_factory=set)
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    results: dict[str, StageResult] = field(default_factory=dict)
    _running: tuple[str, bool] | None = None  # (key hash, must restart) of the stage now running

    def marker(self, name: str) -> Path:
        """Where a stage's completion marker lives."""
        return self.out / "stages" / f"{name}.json"

    def run(self, name: str, key: dict, fn: Callable[[], dict], deps: tuple[str, ...] = ()) -> StageResult | None:
        """Run `fn` unless a marker with the same key (incl. the dependencies' keys) exists."""
        if name in self.skip:
            self.log(f"[skip] {name}")
            return None
        missing = [d for d in deps if d not in self.results]
        if missing:
            self.log(f"[skip] {name}: needs {', '.join(missing)}")
            return None
        full = {"code": CODE_VERSION, "stage": name, "key": key, "deps": {d: self.results[d].key for d in deps}}
        h = key_hash(full)
        m = self.marker(name)
        rebuilt = [d for d in deps if not self.results[d].cached]  # forced or rerun above: outputs are new
        why = f" (after {', '.join(rebuilt)})" if rebuilt and m.is_file() else ""
        if m.is_file() and name not in self.force and not rebuilt:
            saved = json.loads(m.read_text())
            if saved.get("key_hash") == h:
                res = StageResult(name, saved["summary"], True, saved["seconds"], h)
                self.results[name] = res
                self.log(f"[done] {name:<16} reused (ran in {saved['seconds']:.1f} s)")
                return res
        m.unlink(missing_ok=True)
        self.log(f"[run ] {name} ...{why}")
        self._running = (h, bool(rebuilt) or name in self.force)
        t0 = time.perf_counter()
        try:
            summary = fn()
        finally:
            self._running = None
        dt = time.perf_counter() - t0
        atomic_write_json(m, {"key_hash": h, "key": full, "summary": summary, "seconds": dt})
        res = StageResult(name, summary, False, dt, h)
        self.results[name] = res
        self.log(f"[done] {name:<16} {dt:7.1f} s")
        return res

    def claim(self, folder: Path) -> bool:
        """For the stage now running: True when `folder` holds this stage's own unfinished work (started
        under the same key, nothing upstream rebuilt since, not forced), so it may resume; otherwise
        empties `folder` and tags it with the key. A key alone would not do: a forced or rebuilt
        dependency keeps its key but may have changed what the stage reads (e.g. a checkpoint's contents
        at the same path)."""
        if self._running is None:
            raise RuntimeError("Pipeline.claim is for the function of a running stage")
        h, restart = self._running
        tag = folder / ".stage-key"
        if not restart and tag.is_file() and tag.read_text() == h:
            return True
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        tag.write_text(h)
        return False

    def timings(self) -> list[dict]:
        """Per-stage time table (seconds of the run that produced each result)."""
        return [{"stage": r.name, "seconds": round(r.seconds, 1), "reused": r.cached} for r in self.results.values()]
