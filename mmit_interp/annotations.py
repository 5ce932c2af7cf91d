"""Readers for annotation lists: the Multi-Moments in Time layout, single-label MiT, plain CSV.

Every reader returns an `AnnotationSet`: the vocabulary, the resolved clip paths and their label
indices, each item remembering the line it came from so errors can point at it.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .vocab import Vocabulary, VocabError

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": ("trainingSet",),
    "val": ("validationSet",),
    "test": ("testSet",),
}
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is; the message names file and line."""


@dataclass(frozen=True)
class Annotation:
    """One clip: its path (absolute), its positive class indices and where it was read from."""

    path: Path
    labels: tuple[int, ...]
    line: int
    rel: str


@dataclass
class AnnotationSet:
    """The clips of one split with their vocabulary."""

    vocab: Vocabulary
    items: list[Annotation]
    source: Path
    missing: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def targets(self) -> np.ndarray:
        """Multi-hot targets (N x C, float32)."""
        y = np.zeros((len(self.items), len(self.vocab)), dtype=np.float32)
        for i, a in enumerate(self.items):
            y[i, list(a.labels)] = 1.0
        return y

    def class_counts(self) -> np.ndarray:
        """Number of positive clips per class."""
        return self.targets().sum(0).astype(np.int64)


def find_split_file(root: str | Path, split: str) -> Path:
    """The annotation file of a split in an M-MiT folder (`.csv` or `.txt`)."""
    root = Path(root)
    if split not in SPLIT_FILES:
        raise AnnotationError(f"unknown split {split!r}; use one of {sorted(SPLIT_FILES)}")
    for stem in SPLIT_FILES[split]:
        for ext in (".csv", ".txt"):
            p = root / f"{stem}{ext}"
            if p.is_file():
                return p
    raise AnnotationError(f"{root}: no {SPLIT_FILES[split][0]}.csv or .txt for split {split!r}")


def _resolve(root: Path, split: str, rel: str) -> Path | None:
    """Find a clip under the usual video roots: videos/, training/|validation/, or the root."""
    for base in (root / "videos", root / SPLIT_DIRS.get(split, split), root):
        p = base / rel
        if p.is_file():
            return p
    return None


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), 1)
                if row and any(c.strip() for c in row)]


def _finish(vocab: Vocabulary, root: Path, split: str, source: Path,
            parsed: list[tuple[int, str, list[int]]], check_files: bool,
            allow_missing: bool) -> AnnotationSet:
    items, missing = [], []
    for line, rel, labels in parsed:
        p = _resolve(root, split, rel) if check_files else (root / rel)
        if p is None:
            missing.append((line, rel))
            continue
        items.append(Annotation(p, tuple(sorted(set(labels))), line, rel))
    if missing:
        shown = "; ".join(f"line {ln}: {r}" for ln, r in missing[:10])
        msg = f"{source}: {len(missing)} clip file(s) not found under {root} ({shown})"
        if not allow_missing:
            raise AnnotationError(msg)
        log.warning("%s; skipped", msg)
    return AnnotationSet(vocab, items, source, missing)


def read_mmit(root: str | Path, split: str, vocab: Vocabulary | None = None,
              check_files: bool = True, allow_missing: bool = False) -> AnnotationSet:
    """Read one split of a folder in the M-MiT layout (`moments_categories.txt` + split CSV).

    Rows are `<folder>/<clip>.mp4,<idx>,<idx>,...`; the single-label MiT layout
    (`path,label_name,n_agree,n_disagree`) and plain `path,label;label` CSVs are detected too.
    """
    root = Path(root)
    if vocab is None:
        vocab = Vocabulary.from_file(root / "moments_categories.txt")
    return read_annotation_file(find_split_file(root, split), vocab, root=root, split=split,
                                check_files=check_files, allow_missing=allow_missing)


def read_annotation_file(path: str | Path, vocab: Vocabulary | None, root: str | Path | None = None,
                         split: str = "train", check_files: bool = True,
                         allow_missing: bool = False) -> AnnotationSet:
    """Read an annotation list in any of the three supported formats, detected per file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    root = Path(root) if root is not None else path.parent
    rows = _rows(path)
    if not rows:
        raise AnnotationError(f"{path}: no annotation rows")
    fmt = _detect(rows)
    if fmt == "plain":
        if rows and rows[0][1][0].lower() in ("path", "video", "clip", "filename"):
            rows = rows[1:]
        if vocab is None:
            names = sorted({n for _, r in rows for n in _split_names(r[1] if len(r) > 1 else "")})
            vocab = Vocabulary(names)
    if vocab is None:
        raise AnnotationError(f"{path}: a vocabulary (moments_categories.txt) is needed for this format")
    parsed: list[tuple[int, str, list[int]]] = []
    for line, row in rows:
        rel = row[0]
        if not rel:
            raise AnnotationError(f"{path}:{line}: empty clip path")
        try:
            if fmt == "mmit":
                labels = [int(c) for c in row[1:] if c != ""]
                bad = [i for i in labels if not 0 <= i < len(vocab)]
                if bad:
                    raise AnnotationError(f"{path}:{line}: unknown class index {bad[0]} "
                                          f"(vocabulary has {len(vocab)} classes, 0..{len(vocab) - 1})")
            elif fmt == "mit":
                labels = [vocab.index(row[1])]
            else:
                labels = vocab.indices(_split_names(row[1] if len(row) > 1 else ""))
        except AnnotationError:
            raise
        except VocabError as e:
            raise AnnotationError(f"{path}:{line}: {e}") from None
        except ValueError:
            raise AnnotationError(f"{path}:{line}: malformed row {','.join(row)!r}") from None
        if not labels:
            raise AnnotationError(f"{path}:{line}: clip {rel!r} has no label")
        parsed.append((line, rel, labels))
    return _finish(vocab, root, split, path, parsed, check_files, allow_missing)


def _split_names(cell: str) -> list[str]:
    return [n.strip() for n in cell.split(";") if n.strip()]


def _detect(rows: Sequence[tuple[int, list[str]]]) -> str:
    """`mmit` (indices), `mit` (name + agreement counts) or `plain` (`;`-separated names)."""
    probe = [r for _, r in rows[1:6]] or [rows[0][1]]
    if all(len(r) >= 2 and all(c.isdigit() for c in r[1:] if c) for r in probe):
        return "mmit"
    if all(len(r) == 4 and not r[1].isdigit() and r[2].isdigit() and r[3].isdigit() for r in probe):
        return "mit"
    return "plain"
