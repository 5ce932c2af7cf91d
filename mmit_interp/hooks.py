"""Forward hooks as a context manager: capture named layers' outputs, always clean up."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn


def resolve_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Modules by `named_modules()` dotted path; an unknown name lists the valid ones."""
    table = dict(model.named_modules())
    missing = [n for n in names if n not in table]
    if missing:
        valid = [n for n in table if n]
        raise KeyError(f"no layer named {missing[0]!r} in {type(model).__name__}; "
                       f"valid names include: {', '.join(valid[:40])}{' ...' if len(valid) > 40 else ''}")
    return {n: table[n] for n in names}


@contextmanager
def capture_activations(model: nn.Module, names: Sequence[str], detach: bool = True
                        ) -> Iterator[dict[str, torch.Tensor]]:
    """`with capture_activations(model, ["layer4"]) as acts: model(x)` fills `acts[name]` with each
    layer's latest output (detached unless `detach=False`, for gradient methods)."""
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _inp, out):
            acts[name] = out.detach() if detach else out
        return hook

    try:
        for name, mod in resolve_modules(model, names).items():
            handles.append(mod.register_forward_hook(make(name)))
        yield acts
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replace_output(model: nn.Module, name: str, fn) -> Iterator[None]:
    """Within the block, layer `name`'s output is replaced by `fn(output)` (ablation, probes)."""
    mod = resolve_modules(model, [name])[name]
    h = mod.register_forward_hook(lambda _m, _i, out: fn(out))
    try:
        yield
    finally:
        h.remove()
