"""Shared fixtures: a tiny generated M-MiT-layout data set (session-scoped, written once)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinydata import make_tiny_mmit  # noqa: E402


@pytest.fixture(scope="session")
def tiny_mmit(tmp_path_factory) -> Path:
    """32 training and 12 validation clips, 4 classes, 8 frames of 32x32, half with sound."""
    return make_tiny_mmit(tmp_path_factory.mktemp("tiny_mmit"))
