"""Class vocabulary: names <-> contiguous indices, read and written as `moments_categories.txt`."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence


class VocabError(ValueError):
    """A vocabulary file or a class reference that does not fit the vocabulary."""


class Vocabulary:
    """Ordered class names; index i is the class whose column is i in targets and logits."""

    def __init__(self, names: Sequence[str]):
        names = [str(n) for n in names]
        seen: dict[str, int] = {}
        for i, n in enumerate(names):
            if not n:
                raise VocabError(f"class {i} has an empty name")
            if n in seen:
                raise VocabError(f"class name {n!r} appears twice (indices {seen[n]} and {i})")
            seen[n] = i
        self.names = names
        self._index = seen

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.names == other.names

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} classes)"

    def index(self, name: str) -> int:
        """Index of a class name; the error lists a few valid names."""
        try:
            return self._index[name]
        except KeyError:
            raise VocabError(f"unknown class {name!r} (vocabulary has {len(self)} classes, "
                             f"e.g. {', '.join(self.names[:5])})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        """Read `name,index` lines (M-MiT `moments_categories.txt`) or one name per line."""
        path = Path(path)
        if not path.is_file():
            raise VocabError(f"{path}: vocabulary file not found")
        entries: list[tuple[int, str]] = []
        plain: list[str] = []
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            name, sep, idx = line.rpartition(",")
            if sep and idx.strip().lstrip("-").isdigit():
                entries.append((int(idx), name.strip()))
            else:
                plain.append(line)
        if entries and plain:
            raise VocabError(f"{path}: mixes `name,index` lines with bare names")
        if plain:
            return cls(plain)
        entries.sort()
        idxs = [i for i, _ in entries]
        if idxs != list(range(len(idxs))):
            missing = sorted(set(range(max(idxs) + 1)) - set(idxs))
            raise VocabError(f"{path}: class indices must be 0-based and contiguous "
                             f"(missing {missing[:5]}, duplicates or negatives present: {len(idxs) != len(set(idxs))})")
        return cls([n for _, n in entries])

    def to_file(self, path: str | Path) -> None:
        """Write `name,index` lines, the M-MiT format."""
        Path(path).write_text("".join(f"{n},{i}\n" for i, n in enumerate(self.names)), encoding="utf-8")

    def indices(self, names: Iterable[str]) -> list[int]:
        """Indices of several names."""
        return [self.index(n) for n in names]


def mmit_v1_vocabulary() -> Vocabulary:
    """The 313 Multi-Moments in Time v1 class names shipped with the package."""
    return Vocabulary.from_file(Path(__file__).parent / "data" / "mmit_categories.txt")
