"""Writing clips as mp4 (H.264 video, optional AAC mono audio) with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: int, audio: np.ndarray | None = None,
               rate: int = 22050, crf: int = 20) -> None:
    """Encode RGB uint8 frames (T x H x W x 3) and, if given, float mono audio in [-1, 1] to an mp4.

    Single-threaded libx264 keeps the output identical from run to run; the fastest x264 preset and
    AAC coder keep generation quick (quality is ample at 64 px). Without audio there is no audio stream.
    """
    with av.open(str(path), mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=Fraction(fps, 1))
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.thread_count = 1
        vs.options = {"crf": str(crf), "preset": "ultrafast", "threads": "1"}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=rate, layout="mono")
            astream.bit_rate = 48000
            astream.options = {"aac_coder": "fast"}
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            container.mux(vs.encode(vf))
        container.mux(vs.encode(None))
        if astream is not None:
            samples = np.ascontiguousarray(audio, np.float32)[None, :]
            step = astream.codec_context.frame_size or 1024
            for start in range(0, samples.shape[1], step):
                af = av.AudioFrame.from_ndarray(samples[:, start:start + step].copy(), format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = start
                container.mux(astream.encode(af))
            container.mux(astream.encode(None))
