"""Upload intake: size-capped copy to disk with its sha256, then a decode check of the content.

The file name and content type the client sends are ignored; what counts is the content: PyAV reads
the container (streams, size, declared length) and every frame is decoded, within the configured
time, by `mmit_interp.video`'s frame decoder, the one analysis uses. Every refusal is an `UploadRejected` with a 4xx status and
a sentence a person can act on; the HTML form and the JSON API show the same sentence.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mmit_interp.video import ClipDecodeError, ClipInfo, frame_times, probe

CHUNK = 1 << 20
MAX_FRAME_PIXELS = 3840 * 2160  # 4K UHD: a larger frame is refused before any is decoded (memory)
# Leading bytes of containers FFmpeg reads: a file that starts like one but cannot be opened is
# reported as truncated/corrupt rather than "not a video".
CONTAINER_MAGIC = (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"GIF8", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")
EXTENSIONS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi", "gif": "gif",
              "flv": "flv", "mpeg": "mpg", "ogg": "ogv", "mpegts": "ts"}


class UploadRejected(Exception):
    """A refused upload: HTTP status, a short code and a human sentence."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def public(self) -> dict:
        """JSON body of the refusal."""
        return {"error": self.code, "detail": self.message}


@dataclass(frozen=True)
class StoredClip:
    """An accepted clip: where it lies, its content hash and what decoding found."""

    path: Path
    sha256: str
    size: int
    info: ClipInfo
    frames_decoded: int


def copy_capped(src: BinaryIO, dest_dir: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy a stream to a temp file in `dest_dir`, hashing it; refuse empty or over-size content."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".upload-", suffix=".part")
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while block := src.read(CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise UploadRejected(413, "too_large", f"the file is larger than the {max_bytes / 2**20:g} MB "
                                                          "upload limit (MMIT_MAX_UPLOAD_MB)")
                h.update(block)
                out.write(block)
        if size == 0:
            raise UploadRejected(400, "empty", "the file is empty (0 bytes): choose a video clip")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), h.hexdigest(), size


def check_clip(path: Path, max_duration_s: float, decode_timeout_s: float) -> tuple[ClipInfo, int, str]:
    """Check the container (PyAV) and decode every video frame with the analysis decoder within the time limit;
    returns probe info, frames decoded and container format."""
    import av

    t0 = time.perf_counter()
    try:
        container = av.open(str(path))
    except Exception:
        with open(path, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp" or head.startswith(CONTAINER_MAGIC):
            raise UploadRejected(422, "truncated", "the file starts like a video but cannot be read: it is truncated "
                                                   "or corrupt") from None
        raise UploadRejected(415, "not_video", "the content is not a video that FFmpeg can read "
                                               "(the file name does not matter; the bytes do)") from None
    with container:
        fmt = container.format.name
        video = [s for s in container.streams if s.type == "video"]
        audio = [s for s in container.streams if s.type == "audio"]
        if not video:
            if audio:
                raise UploadRejected(415, "audio_only", "the file has a sound track but no video stream: "
                                                        "upload a video clip (audio alone cannot be analysed)")
            raise UploadRejected(415, "not_video", "the content is not a video: no video stream found")
        stream = video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > MAX_FRAME_PIXELS:
            raise UploadRejected(422, "frame_too_large", f"frames of {w}x{h} pixels are larger than 4K UHD "
                                                         "(3840x2160): scale the clip down first")
        declared = float(container.duration / 1e6) if container.duration else 0.0
        if declared > max_duration_s:
            raise UploadRejected(422, "too_long", f"the clip lasts {declared:.1f} s; the limit is "
                                                  f"{max_duration_s:g} s (MMIT_MAX_DURATION_S)")
        n, last_t = 0, 0.0
        try:
            for last_t in frame_times(path):  # the frames are decoded by the decoder analysis uses
                n += 1
                if last_t > max_duration_s:
                    raise UploadRejected(422, "too_long", f"the clip lasts more than {max_duration_s:g} s "
                                                          "(MMIT_MAX_DURATION_S)")
                if time.perf_counter() - t0 > decode_timeout_s:
                    raise UploadRejected(422, "decode_timeout", f"decoding took longer than {decode_timeout_s:g} s "
                                                                "(MMIT_DECODE_TIMEOUT_S): upload a shorter or "
                                                                "smaller clip")
        except ClipDecodeError:
            raise UploadRejected(422, "truncated", "the frame decoder cannot open the video stream: the file is "
                                                   "truncated or corrupt") from None
        if n == 0:
            raise UploadRejected(422, "truncated", "the video stream holds no decodable frame: the file is "
                                                   "truncated or corrupt")
        if stream.frames and n < 0.9 * stream.frames:
            raise UploadRejected(422, "truncated", f"only {n} of the {stream.frames} frames the file declares "
                                                   "could be decoded: the file is truncated")
        # The video's own declared length (the container's covers the longest stream, e.g. the audio).
        video_len = float(stream.duration * stream.time_base) if stream.duration else (declared if not audio else 0.0)
        if video_len and last_t < 0.9 * video_len - 0.5:
            raise UploadRejected(422, "truncated", f"frames stop at {last_t:.1f} s of the {video_len:.1f} s the video "
                                                   "declares: the file is truncated")
    try:
        info = probe(path)
    except ClipDecodeError as e:
        raise UploadRejected(422, "truncated", f"the clip cannot be probed: {e}") from None
    return info, n, fmt


def store_clip(tmp: Path, sha: str, size: int, dest_dir: Path, max_duration_s: float,
               decode_timeout_s: float) -> StoredClip:
    """Check a spooled upload and keep it content-addressed as `<sha256>.<ext>` (an existing copy is reused)."""
    try:
        existing = sorted(p for p in dest_dir.glob(f"{sha}.*") if p.suffix != ".json")  # not the sidecar
        if existing:  # same bytes were accepted before: no need to decode them again
            info = probe(existing[0])
            return StoredClip(existing[0], sha, size, info, info.n_frames)
        info, n, fmt = check_clip(tmp, max_duration_s, decode_timeout_s)
        final = dest_dir / f"{sha}.{EXTENSIONS.get(fmt, 'video')}"
        os.replace(tmp, final)
        return StoredClip(final, sha, size, info, n)
    finally:
        tmp.unlink(missing_ok=True)
