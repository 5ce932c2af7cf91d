"""Capture named layers' outputs with context-managed forward hooks (STYLE 3).

Same contract as ``mmit_interp.hooks.capture_activations`` (docs/CONTRACTS.md): layers are named by
their ``named_modules()`` dotted path, unknown names raise ``KeyError`` listing the valid ones, every
handle is removed on exit and exceptions are never swallowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def capture_activations(
    model: nn.Module, layer_names: Sequence[str], detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict filled with each named layer's output on every forward pass inside the block."""
    modules = dict(model.named_modules())
    unknown = [n for n in layer_names if n not in modules]
    if unknown:
        valid = ", ".join(n for n in modules if n)
        raise KeyError(f"unknown layer(s) {unknown}; valid names: {valid}")
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, _inp, out):
            if not torch.is_tensor(out):
                raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
            acts[name] = out.detach() if detach else out

        return hook

    try:
        for n in layer_names:
            handles.append(modules[n].register_forward_hook(make_hook(n)))
        yield acts
    finally:
        for h in handles:
            h.remove()


def list_layers(model: nn.Module, example: torch.Tensor | tuple) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """Run one forward pass and return ``(module path, type name, output shape)`` for every module."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if torch.is_tensor(out):
                shapes[name] = tuple(out.shape)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    return [(n, type(m).__name__, shapes.get(n)) for n, m in model.named_modules() if n]
