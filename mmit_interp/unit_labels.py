"""Dissection's result per unit as one typed record, produced once (``dissect``) and consumed by the
report files, the results store and the dashboard. Standard library only, so the store can use it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    """A concept scored against a unit: label name, its primary category, IoU and label number."""

    label: str
    category: str
    iou: float
    number: int

    def as_dict(self) -> dict:
        """``{label, category, iou}``: the shape the store and the dashboard keep."""
        return {"label": self.label, "category": self.category, "iou": self.iou}


@dataclass(frozen=True)
class UnitLabel:
    """One unit's dissection result on one layer and concept set (``unit`` 0-based).

    ``label``/``category``/``iou``/``label_number`` name the best concept (NetDissect-Lite's rule),
    ``interpretable`` is decided here once (IoU >= the threshold), ``threshold`` is T_u,
    ``runner_ups`` the next best labels over every category, and ``bests`` each category's best label
    in category order (label "", number 0, IoU 0.0 where the category has no label)."""

    unit: int
    category: str
    label: str
    label_number: int
    iou: float
    interpretable: bool
    threshold: float
    runner_ups: tuple[Concept, ...]
    bests: tuple[Concept, ...]
