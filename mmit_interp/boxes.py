"""Frame boxes on a grid: the one rule for which cells a box covers (localisation scores, action concepts).

Rule: a cell belongs to a box when the cell's centre, in frame pixels, lies in `[x1, x2) x [y1, y2)`;
a box too small to hold any cell centre still marks the one cell holding its own centre, so no box
vanishes from a coarse grid. A mask of several boxes is the union of theirs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


def box_mask(boxes: Sequence[Box], frame_hw: tuple[int, int], grid_hw: tuple[int, int]) -> np.ndarray:
    """`(gh, gw)` bool mask of the grid cells the boxes of an `(fh, fw)` frame cover (see module doc)."""
    (fh, fw), (gh, gw) = frame_hw, grid_hw
    cy = (np.arange(gh) + 0.5) * fh / gh
    cx = (np.arange(gw) + 0.5) * fw / gw
    m = np.zeros((gh, gw), bool)
    for x1, y1, x2, y2 in boxes:
        b = ((cy >= y1) & (cy < y2))[:, None] & ((cx >= x1) & (cx < x2))[None, :]
        if not b.any():
            b[min(gh - 1, int((y1 + y2) / 2 * gh / fh)), min(gw - 1, int((x1 + x2) / 2 * gw / fw))] = True
        m |= b
    return m
