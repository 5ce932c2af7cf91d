"""Fixtures' builders for the dashboard tests: a tiny run dir made with the real APIs, and clips.

The run holds an untrained 4-class `i3d_r18` (width 8, 4 frames of 32x32), its config, per-epoch
metrics, a final evaluation, and a results store filled through the store's own writers
(dissection of `layer4` (64 units) with two concept sets and `layer3` (32), ablation, selectivity,
relations, compositional formulas and motion scores of `layer4`). One class name
is HTML, to prove names are escaped.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import torch

from mmit_interp.atomic import atomic_write_json
from mmit_interp.checkpoint import load_model, save_checkpoint
from mmit_interp.dataset import ClipTransform
from mmit_interp.metrics import evaluate
from mmit_interp.models import build_model
from mmit_interp.store import ResultsStore
from mmit_interp.unit_labels import Concept, UnitLabel
from mmit_interp.vocab import Vocabulary
from tinydata import make_tiny_mmit, write_clip

CLASSES = ["juggling", "<script>alert(1)</script>", "dancing", "barking"]
CATEGORIES = ["object", "texture", "color", "scene", "action"]


def make_data(root: Path) -> Path:
    """A 3-clip validation set in the M-MiT layout with the run's class names."""
    make_tiny_mmit(root, n_train=1, n_val=3, n_classes=len(CLASSES), frames=8, size=32)
    (root / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for i, n in enumerate(CLASSES)))
    return root


def make_run(run: Path, data: Path | None, *, n_units: int | None = None, analysed: bool = True) -> Path:
    """Write a run dir: checkpoint, config, metrics.jsonl, eval.json and (if `analysed`) a filled store and
    the clip-gallery source of `layer4` on `broden` (a real dissection of the model on a tiny concept set)."""
    torch.manual_seed(0)
    vocab = Vocabulary(CLASSES)
    kwargs = {"width": 8}
    model = build_model("i3d_r18", len(vocab), **kwargs)
    tf = ClipTransform(frames=4, size=32)
    config = {"data": str(data) if data else "/nonexistent/data", "out": str(run), "model": "i3d_r18",
              "model_kwargs": kwargs, "loss": "wlsep", "class_weights": "auto",
              "class_weights_resolved": "min_over_n", "frames": 4, "size": 32, "epochs": 3}
    rng = np.random.default_rng(0)
    y = (rng.random((24, len(vocab))) < 0.3).astype(np.float32)
    y[:, 3] = 0  # a class without positives: its AP is NaN and must show as a dash
    ev = evaluate(rng.random(y.shape), y)
    save_checkpoint(run / "checkpoints" / "best.pt", model, model_name="i3d_r18", model_kwargs=kwargs, vocab=vocab,
                    transforms=tf.to_dict(), config=config, metrics={k: v for k, v in ev.items() if k != "per_class_ap"})
    atomic_write_json(run / "config.json", config)
    (run / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for i, n in enumerate(CLASSES)))
    with open(run / "metrics.jsonl", "w") as f:
        for e in range(1, 4):
            f.write(json.dumps({"epoch": e, "train_loss": 1.0 / e, **{k: min(1.0, 0.2 * e + 0.05 * i) for i, k in
                                enumerate(("hit@1", "hit@5", "map_sample", "map_class", "map_micro"))}}) + "\n")
    atomic_write_json(run / "eval.json", {"split": "val", **ev})
    atomic_write_json(run / "baseline.json", {k: v for k, v in evaluate(np.broadcast_to(y.mean(0), y.shape), y).items()
                                              if k != "per_class_ap"})
    if analysed:
        fill_store(run, ev, n_units=n_units or 64)
        write_clip_source(run, make_concepts(run.parent / f"{run.name}-concepts"))
    return run


def make_concepts(root: Path, n: int = 6, size: int = 32, seg: int = 16) -> Path:
    """A tiny Broden concept set: a red square (object) at a random place on each noise image."""
    from mmit_interp.broden_format import BrodenWriter

    rng = np.random.default_rng(2)
    with BrodenWriter(root, ["object"], image_size=(size, size), seg_size=(seg, seg)) as w:
        square = w.add_label("square", "object")
        for _ in range(n):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            y, x = rng.integers(0, seg - 4, 2)
            mask = np.zeros((seg, seg), np.int32)
            mask[y:y + 4, x:x + 4] = square
            img[2 * y:2 * y + 8, 2 * x:2 * x + 8, 0] = 250
            w.add_image(img, pixel={"object": [mask]})
    return root


def write_clip_source(run: Path, concepts: Path) -> None:
    """Dissect the run's `layer4` frame by frame on `concepts` and write its clip-gallery source where the
    dashboard looks for the fixture's `broden` set (`dissect/broden/layer4/gallery/clips.json`)."""
    from dissect import report
    from dissect.engine import InputTransform, run_dissection

    model, meta = load_model(run)
    res = run_dissection(model, ["layer4"], [concepts], transform=InputTransform.from_checkpoint(meta["transforms"]),
                         time="frames", quantile=0.05, top_k=3, checkpoint_hash=meta["sha256"][:16], progress=False)
    report.write_clip_source(model, res[str(concepts)]["layer4"], run / "dissect" / "broden" / "layer4" / "gallery", k=3)


def fill_store(run: Path, ev: dict, n_units: int) -> None:
    """Results as the analyses and dissection would write them, through the store's writers."""
    import cv2

    _, meta = load_model(run)
    rng = np.random.default_rng(1)
    with ResultsStore(run) as st:
        st.register_run(meta)
        st.write_eval(ev)
        for cs, cats in (("broden", CATEGORIES[:4]), ("broden+actions", CATEGORIES)):
            gallery = run / "dissect" / cs / "layer4" / "gallery"  # dissection's layout
            gallery.mkdir(parents=True, exist_ok=True)
            records = []
            for u in range(n_units):
                cat = cats[u % len(cats)]
                if u < 4:
                    cv2.imwrite(str(gallery / f"unit_{u:04d}.jpg"), rng.integers(0, 255, (40, 120, 3), dtype=np.uint8))
                iou = float(rng.uniform(0.0, 0.2))
                ru = cats[(u + 1) % len(cats)]
                records.append(UnitLabel(
                    u, cat, f"{cat}-{u % 7}" if u % 5 else "polka <dots>", u % 7, iou, iou >= 0.04, 0.5,
                    runner_ups=tuple(Concept(f"{ru}-{k}", ru, 0.01 * k, k) for k in range(3)),
                    bests=tuple(Concept(f"{c}-{u % 3}", c, 0.01 * (j + 1), j) for j, c in enumerate(cats))))
            st.write_units("layer4", cs, records)
        st.write_units("layer3", "broden", [UnitLabel(u, "texture", f"stripes-{u}", u, 0.05 + 0.001 * u, True, 0.5, (), ())
                                            for u in range(32)])
        st.write_ablation("layer4", [{"metric": m, "p": p, "seed": s, "value": 0.5 * (1 - p), "rel": 1 - p + 0.01 * s}
                                     for m in ("map_sample", "map_class") for p in (0.0, 0.25, 0.5, 1.0) for s in (0, 1)])
        for b, v in (("layer3.1", 0.3), ("layer4.1", 0.6)):
            st.write_selectivity(b, list(rng.uniform(v - 0.1, v + 0.1, n_units)))
        st.write_localisation("synth-val", [{"method": m, "score": sc, "class_idx": c, "frame": -1, "value": v, "n": 12}
                                            for m, v in (("cam_max", 0.6), ("mcam", 0.7)) for sc in ("pointing", "energy")
                                            for c in (-1, 0)])
        st.write_relations("layer4.1", "unit_to_class", {u: [(u % 4, 0.9), ((u + 1) % 4, 0.5)] for u in range(n_units)},
                           prob="logit")
        st.write_unit_formulas("layer4", "broden", [  # every unit but 1 (mod 3); unit 2's formula adds 0.06
            {"unit": u, "formula": f"(color-{u % 7} AND scene-{u % 3}) OR texture-1", "length": 3,
             "iou": 0.21 if u == 2 else 0.1 + 0.001 * u, "label": f"color-{u % 7}", "label_iou": 0.15 if u == 2 else 0.1,
             "gain": 0.06 if u == 2 else 0.0005 * u, "terms": [["", u % 7], ["and", 3], ["or", 5]]}
            for u in range(n_units) if u % 3 != 1])
        st.write_unit_motion("world:val", "layer4", [  # unit 2 follows motion, 3 appearance, 5 never moved
            {"unit": u, "score": None if u == 5 else (0.82 if u == 2 else 0.12 if u == 3 else u / n_units),
             "d_frozen": 0.1, "d_shuffled": 0.1, "d_appearance": 0.1, "n": 8} for u in range(n_units)])


def tiny_clip(path: Path, *, seconds: float = 3.0, fps: int = 8, size: int = 48, seed: int = 0,
              audio: bool = True) -> Path:
    """A generated mp4: a bright square moving over noise, with a tone when `audio`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    x = rng.integers(60, 120, (n, size, size, 3), dtype=np.uint8)
    for t in range(n):
        c = int((size - 12) * t / max(1, n - 1))
        x[t, 10:22, c:c + 12] = (230, 30, 30)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(22050 * seconds)) / 22050) if audio else None
    write_clip(path, x, fps=fps, audio=tone)
    return path


def mkv_clip(path: Path, n: int = 24, fps: int = 8, size: int = 48) -> Path:
    """A Matroska clip (its header declares the duration up front, unlike an mp4's trailing index)."""
    import av

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), (i * 10) % 255, np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def wav_bytes(path: Path, seconds: float = 1.0) -> Path:
    """A mono 16-bit WAV file (audio only, no video stream)."""
    t = np.arange(int(8000 * seconds)) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16).tobytes())
    return path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a thread, for the browser and load tests."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
