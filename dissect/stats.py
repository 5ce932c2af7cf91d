"""Streaming statistics for Network Dissection as small mergeable objects (STYLE 5).

Each object has ``add(...)``, ``merge(other)``, named read-outs and ``state_dict()`` /
``from_state_dict()`` of plain tensors, which gives caching, resuming and exact distributed merges.

Threshold definition (DESIGN 8): for a unit with N raw values (every spatial position of every
sample), sorted descending v_1 >= ... >= v_N, and k = floor(q N), T = v_{k+1}, i.e.
``np.sort(a)[N - 1 - k]``. Then exactly k values (fewer only under ties) satisfy a > T, so
P(a > T) = floor(qN)/N. Keeping the running top k+1 values per unit makes it exact and streaming.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import torch

PLANE_MODES = ("lite", "union")  # label planes counted one by one (NetDissect-Lite), or their union per label


def quantile_rank(quantile: float, n: int) -> int:
    """k = floor(q * n) computed in exact decimal arithmetic (so 0.005 * 200 is exactly 1)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    return int(Fraction(str(quantile)) * n)


@lru_cache(maxsize=None)
def _popcount_table(bits: int, device: str) -> torch.Tensor:
    """Number of set bits of every integer below 2**bits (float64, the weights of a bincount)."""
    v = torch.arange(1 << bits, device=device)
    return ((v[:, None] >> torch.arange(bits, device=device)) & 1).sum(1).double()


class TopKQuantile:
    """Exact per-unit upper quantile by keeping each unit's running top ``k`` values (float32).

    Once k values are kept, a batch only contributes the values above each unit's k-th largest
    at the last compaction; they wait in a padded buffer, and the top k of kept + buffered values
    is taken only when the buffer holds k columns (or on read-out), so the costly top-k runs
    rarely instead of every batch.
    """

    def __init__(self, units: int, k: int, device: torch.device | str = "cpu"):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.units, self.k = units, k
        self.values = torch.empty((units, 0), dtype=torch.float32, device=device)
        self.pending: list[torch.Tensor] = []
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of values shaped (units, ...) (any layout: a transposed view is not copied)."""
        if x.shape[0] != self.units:
            raise ValueError(f"expected {self.units} units, got {tuple(x.shape)}")
        if x[0].numel() == 0:
            return
        x = x.detach().to(self.values.device, torch.float32)
        self.count += x[0].numel()
        if self.values.shape[1] < self.k:
            both = torch.cat([self.values, x.reshape(self.units, -1)], dim=1)
            self.values = torch.topk(both, min(self.k, both.shape[1]), dim=1, sorted=False).values
            self.bound = self.values.amin(1, keepdim=True)
            return
        above = x > self.bound.view(-1, *[1] * (x.dim() - 1))  # only these can be among a unit's top k
        n_above = above.sum(tuple(range(1, x.dim())))
        width = int(n_above.max())
        if width == 0:
            return
        vals = x[above]  # unit-major, so each unit's values are consecutive
        unit = torch.repeat_interleave(n_above)
        slot = torch.arange(len(unit), device=x.device) - (torch.cumsum(n_above, 0) - n_above).index_select(0, unit)
        buf = torch.full((self.units, width), float("-inf"), device=x.device)
        buf.view(-1).index_copy_(0, unit * width + slot, vals)
        self.pending.append(buf)
        if sum(b.shape[1] for b in self.pending) >= self.k:
            self._compact()

    def _compact(self) -> None:
        """Keep the top k of the kept and buffered values."""
        if self.pending:
            both = torch.cat([self.values, *self.pending], dim=1)
            self.values = torch.topk(both, self.k, dim=1, sorted=False).values
            self.bound = self.values.amin(1, keepdim=True)
            self.pending = []

    def merge(self, other: "TopKQuantile") -> None:
        """Merge another shard's state (exact: the top k of a union is the top k of the top ks)."""
        if (other.units, other.k) != (self.units, self.k):
            raise ValueError("cannot merge TopKQuantile states of different shapes")
        count = self.count + other.count
        other._compact()
        self.add(other.values.to(self.values.device))
        self.count = count

    def threshold(self) -> torch.Tensor:
        """T_u per unit: the k-th largest value seen (the smallest one kept)."""
        if self.values.shape[1] < self.k:
            raise RuntimeError(f"only {self.values.shape[1]} values seen per unit, need {self.k}")
        self._compact()
        return self.values.amin(1)

    def state_dict(self) -> dict:
        """Plain-tensor state."""
        self._compact()
        return {"values": self.values.cpu(), "count": torch.tensor(self.count), "k": torch.tensor(self.k)}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "TopKQuantile":
        """Rebuild from ``state_dict()``."""
        obj = cls(state["values"].shape[0], int(state["k"]), device)
        obj.add(state["values"].to(device))
        obj.count = int(state["count"])
        return obj


class TopKImages:
    """Per-unit running top-k images by a score (per-image max activation); ties go to lower index."""

    def __init__(self, units: int, k: int, device: torch.device | str = "cpu"):
        self.units, self.k = units, k
        self.scores = torch.empty((units, 0), dtype=torch.float32, device=device)
        self.images = torch.empty((units, 0), dtype=torch.long, device=device)

    def add(self, scores: torch.Tensor, images: torch.Tensor) -> None:
        """Add scores shaped (n_images, units) for global image indices (n_images,)."""
        s = torch.cat([self.scores, scores.detach().to(self.scores.device, torch.float32).T], dim=1)
        i = torch.cat([self.images, images.to(self.images.device).view(1, -1).expand(self.units, -1)], dim=1)
        order = torch.argsort(i, dim=1, stable=True)  # index ascending, then stable score sort
        s, i = s.gather(1, order), i.gather(1, order)
        order = torch.argsort(s, dim=1, descending=True, stable=True)[:, : self.k]
        self.scores, self.images = s.gather(1, order), i.gather(1, order)

    def merge(self, other: "TopKImages") -> None:
        """Merge another shard's state exactly."""
        if other.units != self.units:
            raise ValueError("cannot merge TopKImages of different unit counts")
        s = torch.cat([self.scores, other.scores.to(self.scores.device)], dim=1)
        i = torch.cat([self.images, other.images.to(self.images.device)], dim=1)
        self.scores = torch.empty((self.units, 0), dtype=torch.float32, device=s.device)
        self.images = torch.empty((self.units, 0), dtype=torch.long, device=s.device)
        order = torch.argsort(i, dim=1, stable=True)
        s, i = s.gather(1, order), i.gather(1, order)
        order = torch.argsort(s, dim=1, descending=True, stable=True)[:, : self.k]
        self.scores, self.images = s.gather(1, order), i.gather(1, order)

    def state_dict(self) -> dict:
        """Plain-tensor state."""
        return {"scores": self.scores.cpu(), "images": self.images.cpu(), "k": torch.tensor(self.k)}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "TopKImages":
        """Rebuild from ``state_dict()``."""
        obj = cls(state["scores"].shape[0], int(state["k"]), device)
        obj.scores, obj.images = state["scores"].to(device).clone(), state["images"].to(device).clone()
        return obj


class LabelBatch:
    """Per-batch label tensors prepared once and shared by every layer's tally.

    From a collated batch (``pixel (N, P, sh, sw)``, ``whole``, ``whole_cat``) it keeps
    ``planes (N, P, S)`` (int32), the label numbers at flat pixel s; ``whole (N, W)`` the
    whole-image labels (0 = padding); ``has (N, L1)``, whether image n holds label l anywhere;
    ``label_area``, the pixel count of each label number; and ``tiles``, the labels per tile of
    ``partition`` (``(rows, rows_ok, cols, cols_ok)`` as ``TileLabels`` takes; default: 4 x 4 blocks),
    whose few entries give the rest without a pass over every pixel.

    ``planes="lite"`` counts every plane, as NetDissect-Lite bincounts the stacked planes: a pixel
    carrying l on two planes (or on a plane and as a whole-image label) counts twice in G and I.
    ``planes="union"`` makes a label's mask in an image the union of its planes: a repeat on a later
    plane of the same pixel, or a pixel label also given as a whole-image label, is set to 0.
    """

    def __init__(self, batch: dict, device: torch.device | str = "cpu",
                 partition: tuple[torch.Tensor, ...] | None = None, planes: str = "lite"):
        if planes not in PLANE_MODES:
            raise ValueError(f"planes must be one of {PLANE_MODES}, got {planes!r}")
        pixel = batch["pixel"].to(device)
        if pixel.shape[1] == 0:  # only whole-image labels: one empty plane keeps the tiling shapes
            pixel = pixel.new_zeros((pixel.shape[0], 1, *pixel.shape[2:]))
        n, p = pixel.shape[:2]
        self.n, self.seg_size = n, tuple(pixel.shape[2:])
        self.S = pixel.shape[2] * pixel.shape[3]
        whole = batch["whole"].to(device)
        whole_cat = batch["whole_cat"].to(device)
        self.planes = pixel.reshape(n, p, self.S).to(torch.int32)
        wvalid = (whole > 0) & (whole_cat >= 0)
        if planes == "union":
            for j in range(1, whole.shape[1]):  # a repeated whole-image label counts once
                wvalid[:, j] &= ~(whole[:, j : j + 1] == whole[:, :j]).any(1)
        self.whole = torch.where(wvalid, whole, torch.zeros_like(whole))
        partition = partition or (block_axis(self.seg_size[0], device=device) + block_axis(self.seg_size[1], device=device))
        self.tiles = TileLabels(self, *partition)
        # per (image, plane) label sets from the tile entries: the labels each image holds, and (union)
        # the images where a label sits on two planes or on a plane and as a whole-image label
        group = torch.div(self.tiles.group, self.tiles.T * p, rounding_mode="floor") * p + self.tiles.group % p
        l1 = max(int(self.tiles.label.max()) if len(self.tiles.label) else 0, int(self.whole.max()) if self.whole.numel() else 0) + 1
        seen = torch.bincount(group * l1 + self.tiles.label, minlength=n * p * l1).view(n, p, l1) > 0
        counts = seen.sum(1)  # (N, L1)
        counts.scatter_add_(1, self.whole, torch.ones_like(self.whole))
        counts[:, 0] = 0
        self.has = counts > 0
        if planes == "union":
            self._union((counts > 1).any(1).nonzero().view(-1), partition)
        area = torch.bincount(self.tiles.label, weights=self.tiles.popcount.index_select(0, self.tiles.mask), minlength=l1)
        self.label_area = area.round().long() + torch.bincount(self.whole.reshape(-1), minlength=l1) * self.S
        self.label_area[0] = 0
        self.index = batch["index"].to(device)

    def _union(self, need: torch.Tensor, partition: tuple[torch.Tensor, ...]) -> None:
        """Count a label once per pixel in images ``need`` (the only ones that pay for a per-pixel dedup)."""
        if not len(need):
            return
        self.planes = self.planes.clone()  # never the caller's tensor
        sub = list(self.planes[need].unbind(1))
        for k in range(1, len(sub)):  # a label repeated on a later plane of the same pixel counts once
            dup = torch.stack([sub[k] == sub[j] for j in range(k)]).any(0)
            sub[k] = torch.where(dup, 0, sub[k])
        for j in range(self.whole.shape[1]):  # a whole-image label already covers every pixel
            w = self.whole[need, j].int().view(-1, 1)
            sub = [torch.where(q == w, 0, q) for q in sub]
        self.planes[need] = torch.stack(sub, 1)
        self.tiles = TileLabels(self, *partition)


def block_axis(size: int, tile: int = 4, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of a partition into runs of ``tile`` pixels, as ``TileLabels`` takes it: (index, ok)."""
    idx = torch.arange(0, size, tile, device=device)[:, None] + torch.arange(tile, device=device)
    return idx.clamp(max=size - 1), idx < size


def _as_slices(idx: torch.Tensor) -> list[slice | torch.Tensor]:
    """Each column of ``idx (T, t)`` as a slice where it is an increasing arithmetic progression."""
    out: list[slice | torch.Tensor] = []
    for v in idx.T.tolist():
        step = v[1] - v[0] if len(v) > 1 else 1
        regular = step > 0 and all(b - a == step for a, b in zip(v, v[1:]))
        out.append(slice(v[0], v[-1] + 1, step) if regular else idx[:, len(out)])
    return out


class TileLabels:
    """A batch's labels per tile of a partition of the mask, as lists of (label, pixel bitmask).

    The tiles are the products of row groups ``rows (Ty, ty)`` and column groups ``cols (Tx, tx)``
    (output indices; ``rows_ok``/``cols_ok`` mark the real ones, ty * tx <= 16); tile t = iy*Tx + ix
    and bit i*tx + j of a mask is its pixel (rows[iy, i], cols[ix, j]). A tile-plane carrying one
    label gives one entry, others one entry per distinct label; label 0 gives none. Entries of
    (image b, tile t) are ``label[off[r]:off[r+1]]``, r = b*T + t, with ``group`` = r*P + plane.
    Built once per batch and partition, they let a layer count an active tile's labels by
    ``popcount(active & mask)`` per entry instead of visiting its pixels and planes.
    """

    def __init__(self, lb: LabelBatch, rows: torch.Tensor, rows_ok: torch.Tensor, cols: torch.Tensor,
                 cols_ok: torch.Tensor):
        (Ty, ty), (Tx, tx) = rows.shape, cols.shape
        tt, T = ty * tx, Ty * Tx
        if tt > 16:
            raise ValueError(f"tiles hold at most 16 pixels, got {ty} x {tx}")
        dev, n, p = rows.device, lb.n, lb.planes.shape[1]
        self.T = T
        self.popcount = _popcount_table(tt, str(dev))
        ok = (rows_ok[:, None, :, None] & cols_ok[None, :, None, :]).reshape(T, tt)
        full = (ok.int() << torch.arange(tt, device=dev, dtype=torch.int32)).sum(1, dtype=torch.int32)
        # pixel i*tx + j of every tile as an (N*P, Ty, Tx) array: a strided view where the partition
        # is regular, else a gather (padding repeats a real pixel)
        rows = torch.where(rows_ok, rows, rows[:, :1])
        cols = torch.where(cols_ok, cols, cols[:, :1])
        sw = lb.seg_size[1]
        pix = (rows[:, None, :, None] * sw + cols[None, :, None, :]).reshape(T, tt)
        img = lb.planes.view(n * p, *lb.seg_size)
        ys, xs = _as_slices(rows), _as_slices(cols)
        x = []
        for i, j in ((i, j) for i in range(ty) for j in range(tx)):
            if isinstance(ys[i], slice) and isinstance(xs[j], slice):
                x.append(img[:, ys[i], xs[j]])
            else:
                x.append(torch.gather(img.view(n * p, -1), 1, pix[:, i * tx + j].view(1, T).expand(n * p, T)))
        uniform = x[1] == x[0] if tt > 1 else torch.ones_like(x[0], dtype=torch.bool)
        for q in x[2:]:
            uniform &= q == x[0]
        # entries go in (image, tile, plane) order
        uniform = uniform.view(n, p, T).permute(0, 2, 1).contiguous()
        first = x[0].reshape(n, p, T).permute(0, 2, 1).contiguous()
        one = uniform & (first != 0)
        count = one.int()
        mixed = (~uniform).view(-1).nonzero().view(-1)  # flat (b, t, p)
        t = torch.div(mixed, p, rounding_mode="floor") % T
        base = (torch.div(mixed, T * p, rounding_mode="floor") * p + mixed % p) * lb.S
        y = lb.planes.view(-1).index_select(0, (base[:, None] + pix.index_select(0, t)).view(-1)).view(-1, tt)
        lab, mask, rank, col = self._split(y, full.index_select(0, t))
        mixed = mixed.index_select(0, col)
        count.view(-1).index_add_(0, mixed, torch.ones_like(mixed, dtype=torch.int32))
        # an exclusive prefix sum gives each (image, tile, plane) group's first entry
        c = count.view(-1)
        start = torch.cumsum(c, 0) - c
        uni = one.view(-1).nonzero().view(-1)
        self.label = torch.empty(int(c.sum()), dtype=torch.int32, device=dev)
        self.mask = torch.empty_like(self.label)
        self.group = torch.empty(len(self.label), dtype=torch.long, device=dev)
        for pos, group, label, m in ((start.index_select(0, uni), uni, first.view(-1).index_select(0, uni),
                                      full.index_select(0, torch.div(uni, p, rounding_mode="floor") % T)),
                                     (start.index_select(0, mixed) + rank, mixed, lab, mask)):
            self.label.index_copy_(0, pos, label)
            self.mask.index_copy_(0, pos, m)
            self.group.index_copy_(0, pos, group)
        self.off = torch.cat([start[::p], start.new_full((1,), len(self.label))])  # row r: entries off[r]:off[r+1]

    @staticmethod
    def _split(y: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Group the pixels of mixed tile-planes ``y (k, tt)`` (real pixels: bits ``valid (k,)``) by
        label, the largest label left first; returns, per nonzero label, its label, its pixel bitmask,
        its rank among its tile-plane's entries, and its row in y."""
        bit = (1 << torch.arange(y.shape[1], device=y.device)).float()
        col = torch.arange(y.shape[0], device=y.device)
        out = [(y[:0, 0], y[:0, 0], col[:0], col[:0])]
        while len(col):
            lab = y.amax(1)
            left = (lab > 0).nonzero().view(-1)  # rows with a nonzero label not yet grouped
            y, valid, col, lab = (v.index_select(0, left) for v in (y, valid, col, lab))
            other = (y != lab[:, None]).view(torch.uint8)  # uint8: bool -> float conversions are slow
            mask = ~(other.float() @ bit).int() & valid  # exact: below 2**16
            out.append((lab, mask, torch.full_like(col, len(out) - 1), col))
            y = y * other  # grouped pixels become 0
        return tuple(torch.cat(v) for v in zip(*out))

    def expand(self, image: torch.Tensor, tile: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For active tiles (batch image, tile, active-pixel bitmask): per entry, the tile's index,
        the label and the active pixels carrying it (float64 counts, for a weighted bincount)."""
        r = image * self.T + tile
        start = self.off.index_select(0, r)
        cnt = self.off.index_select(0, r + 1) - start
        which = torch.repeat_interleave(cnt)
        idx = torch.arange(len(which), device=r.device) + (start - (torch.cumsum(cnt, 0) - cnt)).index_select(0, which)
        m = self.mask.index_select(0, idx) & act.index_select(0, which)
        return which, self.label.index_select(0, idx), self.popcount.index_select(0, m)


IOU_EPSILON = {"lite": 1e-10, "original": 1e-20}  # NetDissect-Lite's tally() and the original's makeresult


class Tally:
    """Exact integer tallies for one layer: I[u,l], G[l], activation areas A_lite/A_orig[u,c], A[u].

    ``primary (L+1,)`` is each label's primary category c(l) (-1: none); as NetDissect's
    ``labelcat = onehot(c(l))`` with label 0 in no category, a label counts for c(l) only, never
    for the other categories that list it. NetDissect-Lite's area A_lite[u,c] adds a map's active
    area when its active pixels overlap a label l with c(l) = c (a whole-image label always overlaps);
    the original's A_orig[u,c] adds it in every image holding a label l with c(l) = c. ``add`` takes
    the active tiles as sparse lists of bitmasks, so its cost follows the active area, not units x pixels.
    """

    def __init__(self, units: int, primary: torch.Tensor, num_categories: int, device: torch.device | str = "cpu"):
        self.primary = torch.as_tensor(primary, dtype=torch.long).to(device)
        self.units, self.L, self.C = units, self.primary.shape[0], num_categories
        if int(self.primary.max()) >= num_categories:
            raise ValueError(f"primary categories must lie below {num_categories}, got {int(self.primary.max())}")
        ok = ((self.primary >= 0) & (torch.arange(self.L, device=device) > 0)).nonzero().view(-1)  # label 0: none
        self.labelcat = torch.zeros((self.L, self.C), dtype=torch.float32, device=device)
        self.labelcat[ok, self.primary[ok]] = 1.0
        z = dict(dtype=torch.long, device=device)
        self.inter = torch.zeros((units, self.L), **z)
        self.label_area = torch.zeros(self.L, **z)
        self.act_lite = torch.zeros((units, self.C), **z)
        self.act_orig = torch.zeros((units, self.C), **z)
        self.act_total = torch.zeros(units, **z)
        self.samples = torch.zeros((), **z)

    def add_labels(self, lb: LabelBatch, repeats: int = 1) -> None:
        """Add label areas G[l] for a batch; ``repeats`` samples per image (frames)."""
        g = lb.label_area[: self.L]
        self.label_area[: len(g)] += g * repeats
        self.samples += lb.n * repeats

    def add(self, unit: torch.Tensor, image: torch.Tensor, tile_map: torch.Tensor, tile: torch.Tensor,
            act: torch.Tensor, lb: LabelBatch, tiles: TileLabels) -> None:
        """Add thresholded maps given sparsely. Map j is unit ``unit[j]`` on batch image ``image[j]``;
        its active pixels are the bits ``act[i]`` of tile ``tile[i]`` of ``tiles`` for ``tile_map[i] == j``."""
        n = unit.shape[0]
        if n == 0:
            return
        area = torch.bincount(tile_map, weights=tiles.popcount.index_select(0, act), minlength=n).round().long()
        which, labels, count = tiles.expand(image.index_select(0, tile_map), tile, act)
        keys = tile_map.index_select(0, which) * self.L + labels
        hist = torch.bincount(keys, weights=count, minlength=n * self.L).round().long().view(n, self.L)
        wl = lb.whole[image]  # (n, W)
        if wl.shape[1]:
            hist.scatter_add_(1, wl, area[:, None].expand_as(wl).contiguous())
        hist[:, 0] = 0
        self.inter.index_add_(0, unit, hist)
        overlap = ((hist > 0).view(torch.uint8).float() @ self.labelcat) > 0  # (maps, C): Lite's tally_cat > 0
        present = (lb.has.view(torch.uint8).float() @ self.labelcat[: lb.has.shape[1]]) > 0  # (images, C)
        self.act_lite.index_add_(0, unit, area[:, None] * overlap)
        self.act_orig.index_add_(0, unit, area[:, None] * present[image])
        self.act_total.index_add_(0, unit, area)

    def merge(self, other: "Tally") -> None:
        """Merge another shard's tallies (integer sums: exact)."""
        if not torch.equal(other.primary.cpu(), self.primary.cpu()) or other.C != self.C:
            raise ValueError("cannot merge tallies over different label sets")
        for k, v in other.state_dict().items():
            if k != "primary":
                getattr(self, k).add_(v.to(getattr(self, k).device))

    def state_dict(self) -> dict:
        """Plain-tensor state."""
        keys = ["inter", "label_area", "act_lite", "act_orig", "act_total", "samples", "primary"]
        return {k: getattr(self, k).cpu() for k in keys}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "Tally":
        """Rebuild from ``state_dict()``."""
        obj = cls(state["inter"].shape[0], state["primary"], state["act_lite"].shape[1], device)
        for k, v in state.items():
            setattr(obj, k, v.to(device).clone())
        return obj

    def iou(self, denominator: str = "lite") -> torch.Tensor:
        """IoU[u,l] = I / (A[u, c(l)] + G[l] - I + eps) in float64, NetDissect's formula and epsilon
        (Lite 1e-10, which also decides exact ties; original 1e-20); 0 where c(l) is undefined."""
        act = {"lite": self.act_lite, "original": self.act_orig}[denominator].double()
        valid = self.primary >= 0
        a = act[:, self.primary.clamp(min=0)]  # (U, L)
        inter = self.inter.double()
        return inter / (a + self.label_area.double()[None] - inter + IOU_EPSILON[denominator]) * valid[None]
