"""Layer discovery for ``--list-layers``; capture itself is ``mmit_interp.hooks.capture_activations``."""

from __future__ import annotations

import torch
from torch import nn

from mmit_interp.hooks import capture_activations


def list_layers(model: nn.Module, example: torch.Tensor | tuple) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """Run one forward pass and return ``(module path, type name, output shape)`` for every module
    (shape None where the output is not a tensor)."""
    names = [n for n, _ in model.named_modules() if n]
    with torch.no_grad(), capture_activations(model, names, detach=False) as acts:
        model(*example) if isinstance(example, tuple) else model(example)
    return [(n, type(m).__name__, tuple(acts[n].shape) if torch.is_tensor(acts.get(n)) else None)
            for n, m in model.named_modules() if n]
