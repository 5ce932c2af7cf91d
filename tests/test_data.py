"""Annotation readers, clip decoding and the clip dataset."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmit_interp.annotations import AnnotationError, read_annotation_file, read_mmit
from mmit_interp.dataset import ClipDataset, ClipTransform, collate_clips, load_clip
from mmit_interp.video import ClipDecodeError, decode_audio, decode_frames, probe, sample_indices
from mmit_interp.vocab import Vocabulary, VocabError, mmit_v1_vocabulary


def test_vocabulary_reads_mmit_names_and_rejects_gaps(tmp_path):
    v = mmit_v1_vocabulary()
    assert len(v) == 313 and v.names[0] == "crafting" and v.index("raining") == 2
    (tmp_path / "c.txt").write_text("a,0\nb,2\n")
    with pytest.raises(VocabError, match="contiguous"):
        Vocabulary.from_file(tmp_path / "c.txt")
    v2 = Vocabulary(["x+y", "a/b"])
    v2.to_file(tmp_path / "d.txt")
    assert Vocabulary.from_file(tmp_path / "d.txt") == v2


def test_mmit_reader(tiny_mmit):
    a = read_mmit(tiny_mmit, "train")
    assert len(a) == 32 and len(a.vocab) == 4
    y = a.targets()
    assert y.shape == (32, 4) and (y.sum(1) >= 1).all()
    assert all(it.path.is_file() for it in a.items)
    assert (y.sum(0) == a.class_counts()).all()


def test_txt_twin_and_training_folder(tiny_mmit, tmp_path):
    root = tmp_path / "mmit"
    shutil.copytree(tiny_mmit / "videos", root / "training")
    shutil.copy(tiny_mmit / "moments_categories.txt", root)
    shutil.copy(tiny_mmit / "trainingSet.csv", root / "trainingSet.txt")
    a = read_mmit(root, "train")
    assert len(a) == 32 and a.items[0].path.parent.parent.name == "training"


def test_unknown_class_index_reports_line(tiny_mmit, tmp_path):
    lines = (tiny_mmit / "trainingSet.csv").read_text().splitlines()
    lines[4] = lines[4] + ",7"
    bad = tmp_path / "trainingSet.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"trainingSet.csv:5: unknown class index 7"):
        read_annotation_file(bad, Vocabulary.from_file(tiny_mmit / "moments_categories.txt"), root=tiny_mmit)


def test_missing_file_reports_line_or_skips(tiny_mmit, tmp_path):
    lines = (tiny_mmit / "trainingSet.csv").read_text().splitlines()
    lines.insert(2, "action_0/nope.mp4,0")
    bad = tmp_path / "trainingSet.csv"
    bad.write_text("\n".join(lines) + "\n")
    vocab = Vocabulary.from_file(tiny_mmit / "moments_categories.txt")
    with pytest.raises(AnnotationError, match=r"line 3: action_0/nope.mp4"):
        read_annotation_file(bad, vocab, root=tiny_mmit)
    a = read_annotation_file(bad, vocab, root=tiny_mmit, allow_missing=True)
    assert len(a) == 32 and a.missing == [(3, "action_0/nope.mp4")]


def test_single_label_mit_and_plain_csv(tiny_mmit, tmp_path):
    vocab = Vocabulary.from_file(tiny_mmit / "moments_categories.txt")
    rows = [r.split(",") for r in (tiny_mmit / "trainingSet.csv").read_text().splitlines()]
    mit = tmp_path / "mit.csv"
    mit.write_text("".join(f"{r[0]},{vocab.names[int(r[1])]},3,0\n" for r in rows))
    a = read_annotation_file(mit, vocab, root=tiny_mmit)
    assert [it.labels for it in a.items] == [(int(r[1]),) for r in rows]
    plain = tmp_path / "plain.csv"
    plain.write_text("path,labels\n" + "".join(f"{r[0]},{';'.join(vocab.names[int(c)] for c in r[1:])}\n" for r in rows))
    b = read_annotation_file(plain, None, root=tiny_mmit)
    assert b.vocab.names == vocab.names  # names sorted = same order here
    assert [it.labels for it in b.items] == [tuple(sorted(int(c) for c in r[1:])) for r in rows]
    plain.write_text("x.mp4,action_0;jumping\n")
    with pytest.raises(AnnotationError, match=r"plain.csv:1: unknown class 'jumping'"):
        read_annotation_file(plain, vocab, root=tiny_mmit)


def test_sample_indices_even_and_jittered():
    assert sample_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    rng = np.random.default_rng(0)
    j = sample_indices(80, 8, rng)
    assert ((j >= np.arange(8) * 10) & (j < np.arange(1, 9) * 10)).all()


def test_decode_frames_audio_and_flags(tiny_mmit):
    a = read_mmit(tiny_mmit, "train")
    with_audio, without = a.items[0].path, a.items[1].path
    info = probe(with_audio)
    assert info.n_frames == 8 and info.has_audio and not probe(without).has_audio
    frames, idx = decode_frames(with_audio, 4, 16)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8 and idx.tolist() == [1, 3, 5, 7]
    wav = decode_audio(with_audio, seconds=3.0)
    assert wav.shape == (66150,) and 50 < np.abs(wav).max() <= 256
    assert decode_audio(without) is None
    s = load_clip(without, ClipTransform(frames=8, size=32))
    assert s["video"].shape == (3, 8, 32, 32) and not s["has_audio"] and s["audio"].abs().sum() == 0


def test_corrupt_clip_skipped_and_counted_or_strict(tiny_mmit, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_mmit, root)
    a = read_mmit(root, "val")
    victim = a.items[3].path
    victim.write_bytes(victim.read_bytes()[:200])  # truncated container
    with pytest.raises(ClipDecodeError):
        decode_frames(victim, 8)
    ds = ClipDataset(a, ClipTransform(frames=4, size=32))
    batch = collate_clips([ds[i] for i in range(6)])
    assert batch["n_skipped"] == 1 and batch["video"].shape == (5, 3, 4, 32, 32)
    strict = ClipDataset(a, ClipTransform(frames=4, size=32), strict=True)
    with pytest.raises(ClipDecodeError, match=str(victim.name)):
        strict[3]


def test_dataset_layout_normalisation_and_jitter(tiny_mmit):
    a = read_mmit(tiny_mmit, "train")
    t = ClipTransform(frames=4, size=32)
    ds = ClipDataset(a, t, train=True, seed=1)
    s0 = ds[0]
    assert s0["video"].shape == (3, 4, 32, 32) and s0["target"].sum() == len(a.items[0].labels)
    raw = decode_frames(a.items[0].path, 4, 32)[0]
    ev = ClipDataset(a, t)[0]["video"]
    ref = (torch.from_numpy(raw).float() / 255 - torch.tensor(t.mean)) / torch.tensor(t.std)
    assert torch.allclose(ev, ref.permute(3, 0, 1, 2), atol=1e-6)
    same = ClipDataset(a, t, train=True, seed=1)[0]["video"]
    assert torch.equal(s0["video"], same)  # jitter is a function of (seed, epoch, index)
