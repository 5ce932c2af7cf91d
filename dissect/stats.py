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

import torch


def quantile_rank(quantile: float, n: int) -> int:
    """k = floor(q * n) computed in exact decimal arithmetic (so 0.005 * 200 is exactly 1)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    return int(Fraction(str(quantile)) * n)


class TopKQuantile:
    """Exact per-unit upper quantile by keeping each unit's running top ``k`` values (float32)."""

    def __init__(self, units: int, k: int, device: torch.device | str = "cpu"):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.units, self.k = units, k
        self.values = torch.empty((units, 0), dtype=torch.float32, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of values shaped (units, n)."""
        if x.shape[0] != self.units:
            raise ValueError(f"expected {self.units} units, got {tuple(x.shape)}")
        if x.shape[1] == 0:
            return
        x = x.detach().to(self.values.device, torch.float32)
        self.count += x.shape[1]
        if self.values.shape[1] == self.k:  # only values above a unit's current k-th can enter
            above = int((x > self.values[:, -1:]).sum(1).max())
            if above == 0:
                return
            x = torch.topk(x, min(above, x.shape[1]), dim=1, sorted=False).values
        both = torch.cat([self.values, x], dim=1)
        self.values = torch.topk(both, min(self.k, both.shape[1]), dim=1, sorted=True).values

    def merge(self, other: "TopKQuantile") -> None:
        """Merge another shard's state (exact: the top k of a union is the top k of the top ks)."""
        if (other.units, other.k) != (self.units, self.k):
            raise ValueError("cannot merge TopKQuantile states of different shapes")
        count = self.count + other.count
        self.add(other.values.to(self.values.device))
        self.count = count

    def threshold(self) -> torch.Tensor:
        """T_u per unit: the k-th largest value seen (the smallest one kept)."""
        if self.values.shape[1] < self.k:
            raise RuntimeError(f"only {self.values.shape[1]} values seen per unit, need {self.k}")
        return self.values[:, self.k - 1].clone()

    def state_dict(self) -> dict:
        """Plain-tensor state."""
        return {"values": self.values.cpu(), "count": torch.tensor(self.count), "k": torch.tensor(self.k)}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "TopKQuantile":
        """Rebuild from ``state_dict()``."""
        obj = cls(state["values"].shape[0], int(state["k"]), device)
        obj.values = state["values"].to(device).clone()
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

    From a collated batch (``pixel (N, P, sh, sw)``, ``plane_cat``, ``whole``, ``whole_cat``) it
    builds ``lab (N*S, P)``, the label numbers at pixel s of image b in row ``b*S + s``, where a label
    repeated on a later plane of the same pixel, or also given as a whole-image label of the image,
    is set to 0 (a label's mask in an image is the union of its planes; a whole-image label is the
    full mask); ``whole (N, W)`` the whole-image labels (0 = padding); and ``present (N, C)``,
    whether the image's category-c column holds any label.
    """

    def __init__(self, batch: dict, num_categories: int, device: torch.device | str = "cpu"):
        pixel = batch["pixel"].to(device)
        n, p = pixel.shape[:2]
        self.n, self.seg_size = n, tuple(pixel.shape[2:])
        self.S = pixel.shape[2] * pixel.shape[3]
        plane_cat = batch["plane_cat"].to(device)
        whole = batch["whole"].to(device)
        whole_cat = batch["whole_cat"].to(device)
        planes = list(pixel.reshape(n, p, self.S).to(torch.int32, copy=True).unbind(1))
        self.present = torch.zeros((n, num_categories), dtype=torch.bool, device=device)
        for k in range(p):
            ok = (planes[k] != 0).any(1) & (plane_cat[:, k] >= 0)
            self.present[ok.nonzero(as_tuple=True)[0], plane_cat[ok, k]] = True
        wvalid = (whole > 0) & (whole_cat >= 0)
        for j in range(1, whole.shape[1]):  # a repeated whole-image label counts once
            wvalid[:, j] &= ~(whole[:, j : j + 1] == whole[:, :j]).any(1)
        self.present[wvalid.nonzero(as_tuple=True)[0], whole_cat[wvalid]] = True
        self.whole = torch.where(wvalid, whole, torch.zeros_like(whole))
        # union semantics: find the images where a label sits on two planes, or on a plane and as
        # a whole-image label, with one bincount; only those images pay for the per-pixel dedup
        stack = torch.stack(planes, 1)  # (N, P, S)
        l1 = max(int(stack.max()), int(self.whole.max()), 0) + 1
        keys = (torch.arange(n * p, device=device, dtype=torch.int32).view(n, p, 1) * l1 + stack).view(-1)
        counts = (torch.bincount(keys, minlength=n * p * l1).view(n, p, l1) > 0).sum(1)  # (N, L1)
        counts.scatter_add_(1, self.whole, torch.ones_like(self.whole))
        counts[:, 0] = 0
        need = (counts > 1).any(1).nonzero().view(-1)
        if len(need):
            sub = [q[need] for q in planes]
            for k in range(1, p):  # a label repeated on a later plane of the same pixel counts once
                dup = torch.stack([sub[k] == sub[j] for j in range(k)]).any(0)
                sub[k] = torch.where(dup, 0, sub[k])
            for j in range(whole.shape[1]):  # a whole-image label already covers every pixel
                w = self.whole[need, j].int().view(-1, 1)
                sub = [torch.where(q == w, 0, q) for q in sub]
            for k in range(p):
                planes[k][need] = sub[k]
        self.lab = torch.stack(planes, 2).view(n * self.S, p)
        self.index = batch["index"].to(device)

    def tile_labels(self, image: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For tiles given as ``pixels (n, tt)`` of batch images ``image (n,)``: whether all their
        pixels carry the same labels on every plane ``(n,)``, and the first pixel's labels ``(n, P)``."""
        x = self.lab[(image * self.S)[:, None] + pixels]  # (n, tt, P)
        return (x.amax(1) == x.amin(1)).all(1), x[:, 0]


class Tally:
    """Exact integer tallies for one layer: I[u,l], G[l], activation areas A_lite/A_orig[u,c], A[u].

    ``label_categories (L+1, C)`` says which categories each label belongs to (label.csv). The
    NetDissect-Lite area A_lite[u,c] adds a map's active area when its active pixels overlap a label
    belonging to c (a whole-image label always overlaps); the original A_orig[u,c] adds it in every
    image whose category-c column holds a label. ``add`` takes active pixels as sparse lists, so its
    cost follows the active area, not units x pixels.
    """

    def __init__(self, units: int, num_labels: int, label_categories: torch.Tensor, device: torch.device | str = "cpu"):
        self.units, self.L = units, num_labels + 1
        self.member = torch.as_tensor(label_categories, dtype=torch.bool, device=device)
        if self.member.shape[0] != self.L:
            raise ValueError(f"label_categories needs {self.L} rows, got {tuple(self.member.shape)}")
        self.C = self.member.shape[1]
        z = dict(dtype=torch.long, device=device)
        self.inter = torch.zeros((units, self.L), **z)
        self.label_area = torch.zeros(self.L, **z)
        self.act_lite = torch.zeros((units, self.C), **z)
        self.act_orig = torch.zeros((units, self.C), **z)
        self.act_total = torch.zeros(units, **z)
        self.samples = torch.zeros((), **z)

    def add_labels(self, lb: LabelBatch, repeats: int = 1) -> None:
        """Add label areas G[l] for a batch; ``repeats`` samples per image (frames)."""
        g = torch.bincount(lb.lab.reshape(-1), minlength=self.L)[: self.L]
        g = g + torch.bincount(lb.whole.reshape(-1), minlength=self.L)[: self.L] * lb.S
        g[0] = 0
        self.label_area += g * repeats
        self.samples += lb.n * repeats

    def add(self, unit: torch.Tensor, image: torch.Tensor, pix_map: torch.Tensor, pix_s: torch.Tensor,
            lb: LabelBatch, tile_map: torch.Tensor | None = None, tile_labels: torch.Tensor | None = None,
            tile_count: torch.Tensor | None = None) -> None:
        """Add thresholded maps given sparsely. Map j is unit ``unit[j]`` on batch image ``image[j]``;
        its active pixels are the flat mask positions ``pix_s[i]`` with ``pix_map[i] == j``, plus
        ``tile_count[t]`` pixels labelled ``tile_labels[t] (P,)`` for each ``tile_map[t] == j``."""
        n = unit.shape[0]
        if n == 0:
            return
        area = torch.bincount(pix_map, minlength=n)
        flat = image[pix_map] * lb.S + pix_s
        keys = ((pix_map.int() * self.L)[:, None] + lb.lab[flat]).reshape(-1)
        hist = torch.bincount(keys, minlength=n * self.L)  # (maps x labels) pixel counts, flat
        if tile_map is not None and len(tile_map):
            area += torch.bincount(tile_map, weights=tile_count.double(), minlength=n).round().long()
            tkeys = ((tile_map.int() * self.L)[:, None] + tile_labels).reshape(-1)
            w = tile_count.double()[:, None].expand_as(tile_labels).reshape(-1)
            hist += torch.bincount(tkeys, weights=w, minlength=n * self.L).round().long()
        hist = hist.view(n, self.L)
        wl = lb.whole[image]  # (n, W)
        if wl.shape[1]:
            hist.scatter_add_(1, wl, area[:, None].expand_as(wl).contiguous())
        hist[:, 0] = 0
        self.inter.index_add_(0, unit, hist)
        overlap = ((hist > 0).float() @ self.member.float()) > 0  # (maps, C): Lite's overlap test
        self.act_lite.index_add_(0, unit, area[:, None] * overlap)
        self.act_orig.index_add_(0, unit, area[:, None] * lb.present[image])
        self.act_total.index_add_(0, unit, area)

    def merge(self, other: "Tally") -> None:
        """Merge another shard's tallies (integer sums: exact)."""
        if not torch.equal(other.member.cpu(), self.member.cpu()):
            raise ValueError("cannot merge tallies over different label sets")
        for k, v in other.state_dict().items():
            if k != "member":
                getattr(self, k).add_(v.to(getattr(self, k).device))

    def state_dict(self) -> dict:
        """Plain-tensor state."""
        keys = ["inter", "label_area", "act_lite", "act_orig", "act_total", "samples", "member"]
        return {k: getattr(self, k).cpu() for k in keys}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "Tally":
        """Rebuild from ``state_dict()``."""
        units, L = state["inter"].shape
        obj = cls(units, L - 1, state["member"], device)
        for k, v in state.items():
            setattr(obj, k, v.to(device).clone())
        return obj

    def iou(self, primary: torch.Tensor, denominator: str = "lite") -> torch.Tensor:
        """IoU[u,l] = I / (A[u, c(l)] + G[l] - I) in float64; 0 where c(l) is undefined or 0/0."""
        act = {"lite": self.act_lite, "original": self.act_orig}[denominator].double()
        prim = primary.to(act.device).long()
        valid = prim >= 0
        a = act[:, prim.clamp(min=0)]  # (U, L)
        inter = self.inter.double()
        den = a + self.label_area.double()[None] - inter
        out = torch.where(den > 0, inter / den.clamp(min=1), torch.zeros_like(den))
        return out * valid[None]
