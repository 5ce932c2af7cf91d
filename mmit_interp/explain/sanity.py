"""Sanity check of explanation methods (Adebayo et al. 2018): cascading model-parameter randomisation.

The trained model's parameters are re-initialised group by group from the head down — `fc`, then
each stage of the (visual) trunk, `layer4` ... `layer1`, then the stem (`conv1`, `bn1`) — every
module's own `reset_parameters()` under a fixed seed (Quantus's MPRT does the same per module;
BatchNorm's also resets its running statistics). After each step a method's maps of the same clips
and classes are compared with the trained model's by Spearman rank correlation (`faithfulness.
rank_correlation`). A method whose maps survive full randomisation (correlation >= 0.5) explains
the input rather than the model and fails. Fusion models: the head and the visual trunk are
randomised; the audio trunk is left as trained.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

from ..analysis.trunk import trunk_prefix

STEM = ("conv1", "bn1")


def cascade_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """`(name, modules)` to randomise, top down: the head, the trunk's stages in reverse, the stem."""
    trunk, prefix = model.trunk(), trunk_prefix(model)
    stages = [(n, c) for n, c in trunk.named_children() if n not in STEM and n != "fc" and any(True for _ in c.parameters())]
    groups = [("fc", [model.fc])] + [(prefix + n, [c]) for n, c in reversed(stages)]
    stem = [getattr(trunk, n) for n in STEM if hasattr(trunk, n)]
    return groups + ([(prefix + "stem", stem)] if stem else [])


def cascading_randomisation(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield `(group name, model copy)` with one more group randomised at each step (the copy is
    the same object each time; the trained `model` is untouched)."""
    rand = copy.deepcopy(model).eval()
    names = {id(m): n for n, m in model.named_modules()}
    mapping = dict(rand.named_modules())
    for step, (name, mods) in enumerate(cascade_groups(model)):
        torch.manual_seed(seed + step)
        for mod in mods:
            for sub in mapping[names[id(mod)]].modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
        yield name, rand
