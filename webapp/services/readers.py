"""Reading a run dir: JSON files, its results store (opened per request, closed by `with`), its vocabulary."""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mmit_interp.store import DB_NAME, ResultsStore, StoreError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


def finite(v: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it does not exist."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line, or [] when the file does not exist."""
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@contextmanager
def open_store(run: Path) -> Iterator[ResultsStore | None]:
    """`with open_store(run) as store:` the run's results store, or None when it has none with a registered
    run (never creates one); closed on leaving the block."""
    if not (run / DB_NAME).is_file():
        yield None
        return
    with ResultsStore(run) as store:
        yield store if _has_run(store) else None


def _has_run(store: ResultsStore) -> bool:
    """Whether the store has a registered run (a store made by hand or half-written may not)."""
    try:
        store.run_id()
    except StoreError:
        return False
    return True


def class_names(run: Path, store: ResultsStore | None = None) -> list[str]:
    """The run's vocabulary: the store's classes, else `moments_categories.txt`."""
    if store is not None:
        return store.classes()
    from mmit_interp.vocab import Vocabulary

    f = run / "moments_categories.txt"
    return list(Vocabulary.from_file(f).names) if f.is_file() else []


def images_in(extra: Any) -> list[str]:
    """Image paths named anywhere in a record's extra fields (galleries written by dissection)."""
    if isinstance(extra, str):
        return [extra] if extra.lower().endswith(IMAGE_SUFFIXES) else []
    if isinstance(extra, dict):
        return [p for v in extra.values() for p in images_in(v)]
    if isinstance(extra, (list, tuple)):
        return [p for v in extra for p in images_in(v)]
    return []


def run_model(run: Path) -> Any:
    """The run's model (`checkpoint.cached_model`: loaded once per checkpoint), or None when it has none that loads."""
    from mmit_interp.checkpoint import CheckpointError, cached_model

    try:
        return cached_model(run)[0]
    except CheckpointError:
        return None
