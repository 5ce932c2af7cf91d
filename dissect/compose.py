"""Compositional unit labels: a beam search over formulas of concepts (Mu & Andreas 2020,
"Compositional Explanations of Neurons", NeurIPS), exact and streaming.

A formula is built left to right, ``((l0 op1 l1) op2 l2) ...`` with ops AND, OR, AND NOT; its mask is
the pixelwise boolean combination of its labels' masks (a label's mask is the union of its planes;
a whole-image label covers the whole image). It is scored by the plain IoU |A & F| / |A | F| over
every pixel of every sample, A = the unit's thresholded upsampled map (``BilinearBlocks``, the
engine's exact masks). Every candidate ``F op l`` of a beam formula F is exact from integer counts:

    AND:      |A & X| = |A&F&L|                    |X| = |F&L|
    OR:       |A & X| = |A&F| + |A&L| - |A&F&L|    |X| = |F| + |L| - |F&L|
    AND NOT:  |A & X| = |A&F| - |A&F&L|            |X| = |F| - |F&L|

so one pass over the data per beam step (``FormulaCounts``: mergeable integer sums) scores every
(unit, beam formula, label, op). Step 0 is the same with F = TRUE: the single labels.
``compose_stream`` is the pure search over a ``batches`` callable (layers share its passes);
``run_formulas`` the loop over a model and concept sets, with its cache (as ``dissect_stream`` and
``run_dissection``). docs/dissect.md, "Compositional labels".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dissect.engine import (BilinearBlocks, InputTransform, LayerResult, all_merge, feature_batches, is_main,
                            sample_labels, to_samples)
from mmit_interp.atomic import atomic_write_json

OPS = ("and", "or", "and not")
Formula = tuple[tuple[int, int], ...]  # ((op code, label), ...) read as TRUE op0 l0 op1 l1 ...; op0 = "and"
PAD = (1, -1)  # "or" with a label no pixel carries: the identity term that pads shorter formulas


def render(formula: Formula, names: Sequence[str]) -> str:
    """A formula as text, e.g. ``(spinning AND dotted) AND NOT red``."""
    text = ""
    for i, (op, label) in enumerate(formula):
        text = names[label] if i == 0 else f"{'(' + text + ')' if i > 1 else text} {OPS[op].upper()} {names[label]}"
    return text


def truth_key(formula: Formula) -> tuple:
    """The formula's labels (sorted) and its truth table over them: equal keys, equal masks."""
    leaves = sorted({label for _, label in formula})
    table = []
    for bits in itertools.product((False, True), repeat=len(leaves)):
        value = dict(zip(leaves, bits))
        f = True
        for op, label in formula:
            x = value[label]
            f = (f and x) if op == 0 else (f or x) if op == 1 else (f and not x)
        table.append(f)
    return tuple(leaves), tuple(table)


def _combine(f: torch.Tensor, x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """``f op x`` elementwise with op codes broadcast against them (0 and, 1 or, 2 and not)."""
    return torch.where(op == 1, f | x, f & torch.where(op == 2, ~x, x))


class PixelLabels:
    """A batch's boolean label masks as the distinct per-pixel label lists ("signatures") ``sig (G, Q)``:
    the labels of every plane and every whole-image label at a pixel, a label repeated there kept once
    (0: none); ``weight (G,)`` pixels carry each, ``of_pixel (R * S,)`` is each pixel's signature
    (row-major: row r, flat pixel s). Every count over pixels is a sum over these few rows. Rows are
    ``sample_labels``' (still images, or tube frames aligned with the samples); whole-image labels with
    ``whole_cat < 0`` are ignored, as in ``LabelBatch``."""

    def __init__(self, labels: dict, device: torch.device | str = "cpu"):
        pixel = labels["pixel"].to(device)
        r, p = pixel.shape[:2]
        self.size = tuple(pixel.shape[2:])
        self.S = self.size[0] * self.size[1]
        whole = labels["whole"].to(device).long()
        whole = torch.where((whole > 0) & (labels["whole_cat"].to(device) >= 0), whole, torch.zeros_like(whole))
        planes = pixel.reshape(r, p, self.S).long()
        cols = [planes[:, j].reshape(-1) for j in range(p)] + [whole[:, j].repeat_interleave(self.S)
                                                               for j in range(whole.shape[1])]
        for k in range(1, len(cols)):  # a label repeated at a pixel counts once
            dup = torch.zeros_like(cols[k], dtype=torch.bool)
            for j in range(k):
                dup |= cols[k] == cols[j]
            cols[k] = torch.where(dup, 0, cols[k])
        # exact keys: mixed-radix numbers of the label lists, renumbered densely before they could overflow
        base = max([int(c.max()) for c in cols if len(c)] + [0]) + 1
        key = torch.zeros(r * self.S, dtype=torch.long, device=pixel.device)
        bound = 1
        for c in cols:
            if bound * base >= 1 << 62:
                key = torch.unique(key, return_inverse=True)[1]
                bound = int(key.max()) + 1
            key = key * base + c
            bound *= base
        # runs of equal keys along the rows first (regions are contiguous), then the distinct keys of the runs
        run_key, of_run, run_len = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
        _, of_sig = torch.unique(run_key, return_inverse=True)
        self.of_pixel = of_sig[of_run]
        self.weight = torch.zeros(int(of_sig.max()) + 1 if len(of_sig) else 0, dtype=torch.long,
                                  device=pixel.device).index_add_(0, of_sig, run_len)
        first = torch.cumsum(run_len, 0) - run_len
        self.sig = torch.zeros((len(self.weight), len(cols)), dtype=torch.long, device=pixel.device)
        if cols:
            self.sig[of_sig] = torch.stack([c[first] for c in cols], 1)


class FormulaCounts:
    """Exact integer counts of one beam step: for the distinct formulas F_d of every unit's beam,
    |F_d & L| ``fl (D, L1)`` and |F_d| ``f (D,)``; per unit u and beam slot b (formula ``beams[u, b]``,
    -1: empty), |A_u & F & L| ``afl (U, L1, B)``, |A_u & F| ``af (U, B)``; and |A_u| ``a (U,)``.
    Integer sums, so shards merge exactly."""

    def __init__(self, formulas: Sequence[Formula], beams: torch.Tensor, num_labels: int,
                 device: torch.device | str = "cpu"):
        self.formulas = [tuple(f) for f in formulas]
        self.beams = beams.to(device)
        self.L1 = num_labels
        width = max([len(f) for f in self.formulas] + [1])
        terms = torch.tensor([list(f) + [PAD] * (width - len(f)) for f in self.formulas] or [[PAD]],
                             dtype=torch.long, device=device).view(-1, width, 2)
        self.ops, self.leaves = terms[..., 0], terms[..., 1]  # (D, width) each
        u, b = self.beams.shape
        z = dict(dtype=torch.long, device=device)
        self.fl = torch.zeros((len(self.formulas), num_labels), **z)
        self.f = torch.zeros(len(self.formulas), **z)
        self.afl = torch.zeros((u, num_labels, b), **z)
        self.af = torch.zeros((u, b), **z)
        self.a = torch.zeros(u, **z)

    def evaluate(self, pl: PixelLabels) -> torch.Tensor:
        """Every formula on every signature of a batch: ``(max(D, 1), G)`` bool (TRUE where D = 0)."""
        f = torch.ones((len(self.leaves), len(pl.sig)), dtype=torch.bool, device=pl.sig.device)
        for j in range(self.leaves.shape[1]):
            f = _combine(f, (pl.sig[None] == self.leaves[:, j, None, None]).any(2), self.ops[:, j, None])
        return f

    def add_labels(self, pl: PixelLabels, f: torch.Tensor, repeats: int = 1) -> None:
        """Add |F & L| and |F| over every pixel of a batch from ``f = evaluate(pl)``; ``repeats``
        samples per label row."""
        if not self.formulas:
            return
        fw = f.long() * (pl.weight * repeats)[None]  # (D, G)
        self.f += fw.sum(1)
        for q in range(pl.sig.shape[1]):
            keep = (pl.sig[:, q] > 0).nonzero().view(-1)
            self.fl.index_add_(1, pl.sig[keep, q], fw.index_select(1, keep))

    def add_units(self, pl: PixelLabels, f: torch.Tensor, row: torch.Tensor, unit: torch.Tensor,
                  pixel: torch.Tensor) -> None:
        """Add the active pixels ``(row, unit, pixel)`` (one entry per pixel of a unit's mask in a sample;
        ``row`` is the sample's label row): |A|, |A & F| and |A & F & L|, from the pixels per (unit,
        signature) and ``f = evaluate(pl)``."""
        if not len(unit):
            return
        self.a += torch.bincount(unit, minlength=len(self.a))
        g = len(pl.sig)
        key, count = torch.unique(unit * g + pl.of_pixel[row * pl.S + pixel], return_counts=True)
        unit, sig = torch.div(key, g, rounding_mode="floor"), key % g
        slot = self.beams.index_select(0, unit)  # (E, B)
        w = (f[slot.clamp(min=0), sig[:, None]] & (slot >= 0)).long() * count[:, None]
        self.af.index_add_(0, unit, w)
        flat = self.afl.view(-1, self.afl.shape[2])  # (U * L1, B)
        lab = pl.sig.index_select(0, sig)
        for q in range(lab.shape[1]):
            keep = (lab[:, q] > 0).nonzero().view(-1)
            flat.index_add_(0, unit[keep] * self.L1 + lab[keep, q], w.index_select(0, keep))

    def merge(self, other: "FormulaCounts") -> None:
        """Merge another shard's counts of the same step (integer sums: exact)."""
        if other.formulas != self.formulas or not torch.equal(other.beams.cpu(), self.beams.cpu()):
            raise ValueError("cannot merge counts of different beam steps")
        for k in ("fl", "f", "afl", "af", "a"):
            getattr(self, k).add_(getattr(other, k).to(getattr(self, k).device))

    def state_dict(self) -> dict:
        """Plain state (formulas as lists of (op, label) pairs)."""
        return {"formulas": [list(map(list, f)) for f in self.formulas], "beams": self.beams.cpu(),
                **{k: getattr(self, k).cpu() for k in ("fl", "f", "afl", "af", "a")}}

    @classmethod
    def from_state_dict(cls, s: dict, device: torch.device | str = "cpu") -> "FormulaCounts":
        """Rebuild from ``state_dict()``."""
        obj = cls([tuple(map(tuple, f)) for f in s["formulas"]], s["beams"], s["fl"].shape[1], device)
        for k in ("fl", "f", "afl", "af", "a"):
            setattr(obj, k, s[k].to(device).clone())
        return obj


def _active_pixels(s: torch.Tensor, thr: torch.Tensor, rep: int, blocks: BilinearBlocks,
                   maps_per_chunk: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The engine's thresholded maps of samples ``s (M, U, h, w)`` as pixel lists ``(row, unit, pixel)``
    (row = sample // rep, pixel flat in the mask), in chunks of maps as ``_tally_layer`` takes them."""
    rows, _, cols, _ = blocks.partition
    tile_pix = (rows[:, None, :, None] * blocks.sw + cols[None, :, None, :]).reshape(len(rows) * len(cols), -1)
    shifts = torch.arange(tile_pix.shape[1], device=s.device, dtype=torch.int32)
    s = s.contiguous()
    flat = s.view(-1, *s.shape[2:])
    mi, ui = (s.amax((2, 3)) > thr[None]).nonzero(as_tuple=True)
    for c in range(0, len(mi), maps_per_chunk):
        m, u = mi[c : c + maps_per_chunk], ui[c : c + maps_per_chunk]
        tile_map, tile, act = blocks.active(flat.index_select(0, m * s.shape[1] + u), thr.index_select(0, u))
        i, j = (((act[:, None] >> shifts) & 1) > 0).nonzero(as_tuple=True)
        mp = tile_map.index_select(0, i)
        yield (torch.div(m.index_select(0, mp), rep, rounding_mode="floor"), u.index_select(0, mp),
               tile_pix[tile.index_select(0, i), j])


def _count_pass(batches: Callable[[], Iterable[tuple[dict[str, torch.Tensor], dict]]],
                plans: Mapping[str, tuple[LayerResult, str, list[Formula], torch.Tensor]],
                device: torch.device | str) -> dict[str, FormulaCounts]:
    """One pass over the data for every layer of ``plans`` (``{layer: (result, time mode, formulas,
    each unit's beam slots)}``): their counts, merged over ranks. A batch's labels are aligned and
    listed once per alignment (still sets: once)."""
    counts = {n: FormulaCounts(f, b, len(res.label_names), device) for n, (res, _, f, b) in plans.items()}
    thr = {n: res.thresholds.to(device) for n, (res, *_) in plans.items()}
    blocks: dict[tuple, BilinearBlocks] = {}
    with torch.no_grad():
        for feats, labels in batches():
            tube = labels["pixel"].dim() == 5
            pls: dict[int | None, tuple[PixelLabels, int]] = {}
            for name, (_, time, _, _) in plans.items():
                if time == "mean" and tube:
                    raise ValueError("a tube concept set has masks per frame: compositional labels need time='frames'")
                s, rep = to_samples(feats[name].to(device).float(), time)
                align = rep if tube else None
                if align not in pls:
                    aligned, lrep = sample_labels(labels, rep)
                    pls[align] = PixelLabels(aligned, device), lrep
                pl, lrep = pls[align]
                f = counts[name].evaluate(pl)
                counts[name].add_labels(pl, f, lrep)
                geom = tuple(s.shape[2:]) + pl.size
                if geom not in blocks:
                    blocks[geom] = BilinearBlocks(*geom, device=device)
                for row, unit, pixel in _active_pixels(s, thr[name], lrep, blocks[geom]):
                    counts[name].add_units(pl, f, row, unit, pixel)
    return all_merge(counts, lambda st: FormulaCounts.from_state_dict(st, device))


def plain_iou(inter: torch.Tensor, a: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """|A & X| / (|A| + |X| - |A & X|) in float64 from integer counts; 0 where the union is empty."""
    union = (a + size - inter).double()
    return torch.where(union > 0, inter.double() / union.clamp(min=1), torch.zeros_like(union))


def _select(pool_old: list[tuple[float, Formula]], scores: torch.Tensor, beam_u: list[Formula],
            width: int) -> list[tuple[float, Formula]]:
    """The best ``width`` formulas of a unit with a positive IoU, no two with the same mask, from its
    current beam ``pool_old`` (first on ties: the shorter formulas) and the extensions ``scores (B, L1, 3)``
    of ``beam_u`` (-1: not a candidate; ties: lower beam slot, label, op). Candidates are read in
    growing sorted chunks, so a unit costs its few best, not its B * L1 * 3 candidates, in Python."""
    n_labels = scores.shape[1]
    vals_t, idx_t = torch.sort(scores.reshape(-1), descending=True, stable=True)
    vals: list[float] = []
    idx: list[int] = []
    out: list[tuple[float, Formula]] = []
    seen: set = set()
    i = j = 0
    while len(out) < width:
        if j == len(vals) and j < len(vals_t):
            take = max(4 * width, j)
            vals += vals_t[j : j + take].tolist()
            idx += idx_t[j : j + take].tolist()
        cand = j < len(vals) and vals[j] > 0
        if i < len(pool_old) and (not cand or pool_old[i][0] >= vals[j]):
            iou, f = pool_old[i]
            i += 1
        elif cand:
            b, rest = divmod(idx[j], n_labels * 3)
            iou, f = vals[j], beam_u[b] + ((rest % 3, rest // 3),)
            j += 1
        else:
            break
        key = truth_key(f)
        if key not in seen:
            seen.add(key)
            out.append((iou, f))
    return out


@dataclass(frozen=True)
class FormulaLabel:
    """A unit's compositional label: the best formula found and its plain IoU, next to the best single
    label under the same IoU (``gain`` = what the formula adds). ``terms``: (op, label number) pairs."""

    unit: int
    formula: str
    terms: tuple[tuple[str, int], ...]
    iou: float
    label: str
    label_number: int
    label_iou: float

    @property
    def length(self) -> int:
        """Number of concepts in the formula."""
        return len(self.terms)

    @property
    def gain(self) -> float:
        """IoU the formula adds over the single best label."""
        return self.iou - self.label_iou

    def as_dict(self) -> dict:
        """A JSON-able row (report files and the results store)."""
        return {"unit": self.unit, "formula": self.formula, "length": self.length, "iou": self.iou,
                "label": self.label, "label_number": self.label_number, "label_iou": self.label_iou,
                "gain": self.gain, "terms": [list(t) for t in self.terms]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "FormulaLabel":
        """Rebuild from ``as_dict()``."""
        return cls(unit=int(d["unit"]), formula=d["formula"], terms=tuple((op, int(lab)) for op, lab in d["terms"]),
                   iou=float(d["iou"]), label=d["label"], label_number=int(d["label_number"]),
                   label_iou=float(d["label_iou"]))


class BeamSearch:
    """One layer's beam search between passes: step 0 from single-label counts (``start``), then one
    ``advance`` per pass with the counts of ``plan()``'s formulas; ``labels()`` reads the result."""

    def __init__(self, result: LayerResult, *, beam: int, ops: Sequence[str], candidates: int | None):
        self.result, self.width, self.candidates = result, beam, candidates
        self.op_ok = torch.tensor([op in ops for op in OPS])
        self.L1 = len(result.label_names)
        self.beams: list[list[tuple[float, Formula]]] = []
        self.singles: list[tuple[float, Formula]] = []

    def start(self, a: torch.Tensor, al: torch.Tensor, label_area: torch.Tensor) -> None:
        """Step 0 from |A| ``(U,)``, |A & L| ``(U, L1)`` and |L| ``(L1,)``: each unit's best single labels."""
        self.a, self.al, self.label_area = a.cpu(), al.cpu(), label_area.cpu()
        allowed = (self.label_area > 0) & (self.result.primary.cpu() >= 0)
        allowed[0] = False
        single = torch.where(allowed[None], plain_iou(self.al, self.a[:, None], self.label_area[None]),
                             torch.full(self.al.shape, -1.0, dtype=torch.float64))
        if self.candidates is not None:
            order = torch.sort(single, dim=1, descending=True, stable=True).indices  # ties: the lower label
            top = order[:, : self.candidates]
            self.pick = torch.zeros_like(single, dtype=torch.bool).scatter_(1, top, True) & (single >= 0)
        else:
            self.pick = allowed[None].expand(len(single), -1)
        scores = torch.full((len(single), 1, self.L1, 3), -1.0, dtype=torch.float64)
        scores[:, 0, :, 0] = single
        self.beams = [_select([], scores[u], [()], self.width) for u in range(len(single))]
        self.singles = [b[0] if b else (0.0, ()) for b in self.beams]

    def plan(self) -> tuple[list[Formula], torch.Tensor]:
        """The distinct formulas of every unit's beam and each unit's slots ``(U, B)`` into them (-1: empty)."""
        table: dict[Formula, int] = {}
        for bu in self.beams:
            for _, f in bu:
                table.setdefault(f, len(table))
        slots = torch.full((len(self.beams), max([len(bu) for bu in self.beams] + [1])), -1, dtype=torch.long)
        for u, bu in enumerate(self.beams):
            for b, (_, f) in enumerate(bu):
                slots[u, b] = table[f]
        return list(table), slots

    def advance(self, c: FormulaCounts, units_per_chunk: int = 128) -> None:
        """Score every extension (unit, beam formula, label, op) from ``plan()``'s counts and keep each
        unit's best; units go in chunks, so the (units, B, L1, 3) scores stay small."""
        fl_all, f_all, afl_all, af_all = c.fl.cpu(), c.f.cpu(), c.afl.cpu(), c.af.cpu()
        beams = []
        for u0 in range(0, len(self.beams), units_per_chunk):
            us = slice(u0, u0 + units_per_chunk)
            slots = c.beams.cpu()[us]
            d = slots.clamp(min=0)
            fl, f = fl_all[d], f_all[d][..., None]  # (u, B, L1), (u, B, 1)
            afl, af = afl_all[us].transpose(1, 2), af_all[us][..., None]
            al = self.al[us][:, None]
            inter = torch.stack([afl, af + al - afl, af - afl], 3)
            size = torch.stack([fl, f + self.label_area[None, None] - fl, f - fl], 3)
            iou = plain_iou(inter, self.a[us][:, None, None, None], size)
            ok = (slots >= 0)[:, :, None, None] & self.pick[us][:, None, :, None] & self.op_ok[None, None, None]
            for k, bu in enumerate(self.beams[us]):
                for b, (_, form) in enumerate(bu):
                    ok[k, b, [label for _, label in form]] = False  # a label once per formula
            iou = torch.where(ok, iou, torch.full_like(iou, -1.0))
            beams += [_select(bu, iou[k], [fm for _, fm in bu], self.width) for k, bu in enumerate(self.beams[us])]
        self.beams = beams

    def labels(self) -> list[FormulaLabel]:
        """One ``FormulaLabel`` per unit: the best formula of its beam beside its best single label."""
        names = self.result.label_names
        out = []
        for u, (bu, (s_iou, s)) in enumerate(zip(self.beams, self.singles)):
            best_iou, best = bu[0] if bu else (0.0, ())
            out.append(FormulaLabel(unit=u, formula=render(best, names),
                                    terms=tuple((OPS[op], lab) for op, lab in best), iou=float(best_iou),
                                    label=names[s[0][1]] if s else "", label_number=s[0][1] if s else 0,
                                    label_iou=float(s_iou)))
        return out


def compose_stream(
    batches: Callable[[], Iterable[tuple[dict[str, torch.Tensor], dict]]],
    results: Mapping[str, LayerResult],
    *,
    length: int = 3,
    beam: int = 5,
    ops: Sequence[str] = OPS,
    candidates: int | None = None,
    time: str | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, list[FormulaLabel]]:
    """Compositional labels of every unit of each layer in ``results`` (``{layer: LayerResult}``,
    ``dissect_stream``'s output), one pass of ``batches()`` per beam step shared by the layers.

    ``batches`` yields ``({layer: features}, labels)`` as for ``dissect_stream`` (the same callable
    serves both); thresholds come from the results, the time mode too unless ``time`` is given.
    Formulas have up to ``length`` labels joined by ``ops``; each step extends every formula of a
    unit's ``beam`` by every label present in the data (labels with no primary category excluded,
    as in ``unit_labels``) or, with ``candidates=N``, by the unit's N best single labels (compexp's
    ``BEAM_SEARCH_LIMIT``). Step 0 comes from the engine's tally where it counted label masks as
    unions (``planes="union"``), else from one more pass.
    """
    if length < 1 or beam < 1:
        raise ValueError(f"length and beam must be >= 1, got length={length}, beam={beam}")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {OPS}, got {list(ops)}")
    if candidates is not None and candidates < 1:
        raise ValueError(f"candidates must be >= 1 or None, got {candidates}")
    times = {n: time or res.settings.get("time", "mean") for n, res in results.items()}
    searches = {n: BeamSearch(res, beam=beam, ops=ops, candidates=candidates) for n, res in results.items()}
    counted = {n: (res, times[n], [()], torch.zeros((res.units, 1), dtype=torch.long))
               for n, res in results.items() if res.settings.get("planes") != "union"}
    firsts = _count_pass(batches, counted, device) if counted else {}
    for n, res in results.items():
        if n in firsts:
            searches[n].start(firsts[n].a, firsts[n].afl[:, :, 0], firsts[n].fl[0])
        else:
            searches[n].start(res.tally.act_total, res.tally.inter, res.tally.label_area)
    for _ in range(1, length):
        plans = {n: (results[n], times[n], *s.plan()) for n, s in searches.items()}
        plans = {n: p for n, p in plans.items() if p[2]}  # a layer whose units found nothing is done
        if not plans:
            break
        for n, c in _count_pass(batches, plans, device).items():
            searches[n].advance(c)
    return {n: s.labels() for n, s in searches.items()}


def formula_cache_key(result: LayerResult, settings: Mapping) -> str:
    """Key of a layer's cached formulas: the dissection's own settings (checkpoint, concept set,
    transform, time, planes, ...), the layer and the search settings."""
    blob = json.dumps({"layer": result.layer, "dissection": result.settings, "search": dict(settings)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def run_formulas(
    model: nn.Module,
    results: Mapping[str, Mapping[str, LayerResult]],
    *,
    transform: InputTransform | None = None,
    input_adapter: Callable[[torch.Tensor], tuple] | None = None,
    length: int = 3,
    beam: int = 5,
    ops: Sequence[str] = OPS,
    candidates: int | None = None,
    batch_size: int = 16,
    workers: int = 0,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, dict[str, list[FormulaLabel]]]:
    """Compositional labels for ``run_dissection``'s results (``{concept set: {layer: result}}``),
    read on the same images (the results' concept set, categories and snippets; ``transform`` by default
    the one the results were computed with, from their settings) with
    ``length`` passes per concept set shared by its layers; under ``torchrun`` each rank takes a
    strided shard and the counts merge exactly. Cached per layer in ``cache_dir`` (JSON)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    search = {"length": length, "beam": beam, "ops": list(ops), "candidates": candidates}
    out: dict[str, dict[str, list[FormulaLabel]]] = {}
    for cs, layers in results.items():
        keys = {layer: formula_cache_key(res, search) for layer, res in layers.items()}
        done: dict[str, list[FormulaLabel]] = {}
        for layer, key in keys.items():
            p = Path(cache_dir or ".") / f"{key}.formulas.json"
            if cache_dir is not None and p.is_file():
                done[layer] = [FormulaLabel.from_dict(d) for d in json.loads(p.read_text())]
        todo = {layer: res for layer, res in layers.items() if layer not in done}
        if todo:
            first = next(iter(todo.values())).settings
            tf = transform or InputTransform.from_settings(first)
            ds = tf.dataset(first.get("concept_set", cs), categories=first.get("categories"),
                                   use_snippets=first.get("snippets", True))
            with feature_batches(model, ds, list(todo), input_adapter=input_adapter, device=device,
                                 batch_size=batch_size, workers=workers, progress=progress,
                                 desc=f"formulas {Path(cs).name}") as batches:
                fresh = compose_stream(batches, todo, length=length, beam=beam, ops=ops, candidates=candidates,
                                       device=device)
            if cache_dir is not None and is_main():
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                for layer, recs in fresh.items():
                    atomic_write_json(Path(cache_dir) / f"{keys[layer]}.formulas.json", [r.as_dict() for r in recs])
            done.update(fresh)
        out[cs] = {layer: done[layer] for layer in layers}
    return out
