"""Frame rendering of the synthetic world with numpy and OpenCV: scenes, actors, motions, nuisances.

An actor is a filled polygon (OpenCV ``fillPoly``, sub-pixel vertices) whose texture is computed in
its own rotating, scaling frame, so that a dotted spinner shows its rotation. Every frame keeps an
*owner map* (which actor each pixel shows), from which the truth boxes are read: a box is the
bounding box of the actor's visible pixels, after clipping to the frame and occlusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .audio import clip_audio
from .world import COLOURS, SCENES, SHAPES, TEXTURES, ClipSpec, SynthConfig

Box = tuple[int, int, int, int]


def _star(points: int, inner: float) -> np.ndarray:
    """Vertices of a star polygon of unit outer radius."""
    a = np.arange(2 * points) * np.pi / points - np.pi / 2
    rad = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], 1)


def _regular(n: int, phase: float) -> np.ndarray:
    """Vertices of a regular n-gon of unit radius."""
    a = np.arange(n) * 2 * np.pi / n + phase
    return np.stack([np.cos(a), np.sin(a)], 1)


_W = 0.33
POLYGONS: dict[str, np.ndarray] = {
    "circle": _regular(24, 0.0),
    "square": _regular(4, np.pi / 4) * 1.05,
    "triangle": _regular(3, -np.pi / 2) * 1.15,
    "star": _star(5, 0.45) * 1.15,
    "diamond": np.array([[0.0, -1.1], [0.7, 0.0], [0.0, 1.1], [-0.7, 0.0]]),
    "cross": np.array([[-_W, -1], [_W, -1], [_W, -_W], [1, -_W], [1, _W], [_W, _W], [_W, 1], [-_W, 1],
                       [-_W, _W], [-1, _W], [-1, -_W], [-_W, -_W]]),
}
assert set(POLYGONS) == set(SHAPES)


def texture_pattern(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean pattern mask of a texture at actor-local coordinates (u, v in actor radii)."""
    if texture == "plain":
        return np.zeros(np.broadcast(u, v).shape, bool)
    if texture == "dotted":
        fu, fv = (u * 1.8) % 1.0 - 0.5, (v * 1.8) % 1.0 - 0.5
        return fu * fu + fv * fv < 0.29**2
    if texture == "striped":
        return (u * 1.6) % 1.0 < 0.5
    if texture == "checkered":
        return (np.floor(u * 1.6) + np.floor(v * 1.6)) % 2 == 1
    if texture == "wavy":
        return ((v + 0.25 * np.sin(u * 5.0)) * 1.6) % 1.0 < 0.5
    raise ValueError(f"unknown texture {texture!r}")


MARK_GREY = np.full(3, 128.0, np.float32)


def mark_colour(rgb: tuple[int, int, int], marks: str = "shade") -> np.ndarray:
    """Colour of an actor's texture marks: for "shade" a darker shade of its colour (a lighter one for dark
    colours), for "grey" one mid grey whatever the colour (no palette colour is near it)."""
    if marks == "grey":
        return MARK_GREY
    c = np.asarray(rgb, np.float32)
    return c * 0.35 if c.mean() > 70 else c * 0.5 + 110


@dataclass
class Sprite:
    """An actor's pose over frames (arrays of length T) with its polygon vertices, ready to draw."""

    shape: str
    rgb: tuple[int, int, int]
    texture: str
    cx: np.ndarray
    cy: np.ndarray
    r: float
    sx: np.ndarray
    sy: np.ndarray
    ang: np.ndarray
    alpha: np.ndarray
    bright: np.ndarray
    texture_scale: float = 1.0  # texture period in actor radii, relative to `texture_pattern`'s
    marks: str = "shade"  # see `mark_colour`

    def __post_init__(self) -> None:
        """Compute every frame's vertices and integer bounds at once (vectorised over frames)."""
        self.sx = np.where(np.abs(self.sx) < 0.08, np.where(self.sx < 0, -0.08, 0.08), self.sx)
        ca, sa = np.cos(self.ang)[:, None], np.sin(self.ang)[:, None]
        px = POLYGONS[self.shape][:, 0] * (self.r * self.sx)[:, None]
        py = POLYGONS[self.shape][:, 1] * (self.r * self.sy)[:, None]
        self.verts = np.stack([px * ca - py * sa + self.cx[:, None], px * sa + py * ca + self.cy[:, None]], -1)
        self.lo = np.floor(self.verts.min(1)).astype(int)
        self.hi = np.ceil(self.verts.max(1)).astype(int) + 1

    @classmethod
    def still(cls, shape: str, rgb: tuple[int, int, int], texture: str, cx: float, cy: float, r: float, sx: float,
              sy: float, ang: float, texture_scale: float = 1.0, marks: str = "shade") -> "Sprite":
        """A one-frame sprite (concept images)."""
        one = np.ones(1)
        return cls(shape, rgb, texture, cx * one, cy * one, r, sx * one, sy * one, ang * one, one, one, texture_scale,
                   marks)


def draw_actor(frame: np.ndarray, owner: np.ndarray, pattern_out: np.ndarray | None, idx: int, sp: Sprite,
               f: int) -> None:
    """Composite frame ``f`` of a sprite into a float32 frame, marking its opaque pixels with ``idx`` in ``owner``."""
    alpha = float(sp.alpha[f])
    if alpha <= 0.0:
        return
    h, w = owner.shape
    x0, y0 = max(sp.lo[f, 0], 0), max(sp.lo[f, 1], 0)
    x1, y1 = min(sp.hi[f, 0], w), min(sp.hi[f, 1], h)
    if x1 <= x0 or y1 <= y0:
        return
    verts = sp.verts[f]
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.rint((verts - [x0, y0]) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    m = mask.astype(bool)
    if not m.any():
        return
    patch = frame[y0:y1, x0:x1]
    rgb, bright = np.asarray(sp.rgb, np.float32), np.float32(sp.bright[f])
    if sp.texture == "plain":
        pat = None
        col = rgb * bright
    else:
        cx, cy, ca, sa = sp.cx[f], sp.cy[f], np.cos(sp.ang[f]), np.sin(sp.ang[f])
        dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
        k = sp.r * sp.texture_scale
        pat = texture_pattern(sp.texture, (ca * dx + sa * dy) / (k * sp.sx[f]), (-sa * dx + ca * dy) / (k * sp.sy[f]))
        col = (np.where(pat[..., None], mark_colour(sp.rgb, sp.marks), rgb) * bright)[m]
    patch[m] = col if alpha >= 1.0 else alpha * col + (1.0 - alpha) * patch[m]
    if alpha >= 0.3:
        owner[y0:y1, x0:x1][m] = idx
        if pattern_out is not None and pat is not None:
            pattern_out[y0:y1, x0:x1][m] = pat[m]


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] (bicubic upsampling of a coarse grid)."""
    return np.clip(cv2.resize(rng.random((cells, cells), dtype=np.float32), (w, h),
                              interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _mix(a: np.ndarray, b: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Blend colours a -> b by weights k (broadcast over the colour axis)."""
    return a + (b - a) * k[..., None]


def scene_background(scene: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 HxWx3 background of one scene type, with random colour jitter and layout."""
    y = (np.arange(h, dtype=np.float32) / h)[:, None] * np.ones((1, w), np.float32)
    x = (np.arange(w, dtype=np.float32) / w)[None, :] * np.ones((h, 1), np.float32)
    jit = rng.uniform(-12, 12, 3).astype(np.float32)
    sky = _mix(np.array([110, 150, 200], np.float32), np.array([185, 205, 222], np.float32), y)
    horizon = rng.uniform(0.3, 0.45)
    if scene == "sky":
        clouds = np.clip(_smooth(rng, h, w, 5) * 2.2 - 1.2, 0, 1)
        img = _mix(sky, np.array([200, 208, 222], np.float32), clouds * 0.8)
    elif scene == "meadow":
        grass = np.array([90, 130, 80], np.float32) + (_smooth(rng, h, w, 8)[..., None] - 0.5) * 40
        img = np.where((y > horizon)[..., None], grass, sky)
    elif scene == "desert":
        dunes = 0.5 + 0.5 * np.sin(x * rng.uniform(5, 9) + y * 14 + rng.uniform(0, 6.3))
        sand = _mix(np.array([205, 180, 135], np.float32), np.array([180, 150, 110], np.float32), dunes)
        img = np.where((y > horizon - 0.08)[..., None], sand, sky)
    elif scene == "night":
        img = _mix(np.array([38, 42, 80], np.float32), np.array([60, 66, 112], np.float32), y)
        stars = rng.random((h, w)) < 0.012
        img[stars] = rng.uniform(150, 220)
    elif scene == "room":
        floor = rng.uniform(0.55, 0.7)
        wall = np.array([190, 180, 160], np.float32) + (_smooth(rng, h, w, 4)[..., None] - 0.5) * 16
        img = np.where((y > floor)[..., None], np.array([150, 120, 95], np.float32), wall)
        img[np.abs(y - floor) < 1.5 / h] = (95, 80, 65)
    elif scene == "ocean":
        waves = 0.5 + 0.5 * np.sin(y * rng.uniform(50, 70) + np.sin(x * 9 + rng.uniform(0, 6.3)) * 1.5)
        water = _mix(np.array([55, 100, 140], np.float32), np.array([90, 135, 165], np.float32), waves)
        img = np.where((y > horizon)[..., None], water, sky)
    else:
        raise ValueError(f"unknown scene {scene!r}; known: {SCENES}")
    return np.clip(img + jit, 0, 255).astype(np.float32)


@dataclass
class Motion:
    """Per-frame pose of an actor (centre, scales, angle, opacity, brightness) and its sound cues."""

    cx: np.ndarray
    cy: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    ang: np.ndarray
    alpha: np.ndarray
    bright: np.ndarray
    events: np.ndarray
    speed: float = 0.0


def _motion(t: np.ndarray, cx, cy, sx=1.0, sy=1.0, ang=0.0, alpha=1.0, bright=1.0, events=(), speed=0.0) -> Motion:
    """Build a Motion, broadcasting scalars to the frame count."""
    def full(a):
        return np.broadcast_to(np.asarray(a, np.float64), t.shape).copy()
    return Motion(full(cx), full(cy), full(sx), full(sy), full(ang), full(alpha), full(bright),
                  np.asarray(events, np.float64), float(speed))


def _sign(rng: np.random.Generator) -> float:
    """Random direction, +1 or -1."""
    return 1.0 if rng.random() < 0.5 else -1.0


def _tri(p: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1, range [-1, 1]."""
    return 2.0 * np.abs(2.0 * (p % 1.0) - 1.0) - 1.0


def make_motion(action: str, rng: np.random.Generator, t: np.ndarray, duration: float, s: float, r: float) -> Motion:
    """Sample the motion of one visible action over times ``t`` (seconds) in an s x s frame."""
    U = rng.uniform
    a0 = U(0, 2 * np.pi)
    x0, y0 = U(0.2, 0.8) * s, U(0.25, 0.75) * s
    if action == "bouncing":
        floor, h, period, ph = U(0.6, 0.85) * s, U(0.22, 0.33) * s, U(0.5, 0.8), U(0, 1)
        phase = t / period + ph
        near = np.abs(phase - np.round(phase))
        sy = 1.0 - 0.25 * np.exp(-((near / 0.08) ** 2))
        ks = np.arange(np.ceil(ph), np.floor(duration / period + ph) + 1)
        return _motion(t, x0, floor - h * np.abs(np.sin(np.pi * phase)), 1 / np.sqrt(sy), sy, a0,
                       events=(ks - ph) * period)
    if action == "jumping":
        floor, h, period, ph, d = U(0.6, 0.85) * s, U(0.15, 0.25) * s, U(0.7, 1.0), U(0, 1), _sign(rng)
        cyc = t / period + ph
        p = np.minimum((cyc % 1.0) / 0.55, 1.0)
        step = U(0.1, 0.14) * s
        travel = step * (duration / period + 1)
        x = 0.5 * s - d * travel / 2 + d * step * (np.floor(cyc) - np.floor(ph) + p)
        return _motion(t, x, floor - h * 4 * p * (1 - p), ang=a0)
    if action in ("sliding", "rolling"):
        v, th = U(0.2, 0.32) * s, U(0, 2 * np.pi)
        if action == "rolling":
            th = 0.0 if rng.random() < 0.5 else np.pi
            y0 = U(0.6, 0.85) * s
        c = np.array([U(0.35, 0.65) * s, y0 if action == "rolling" else U(0.35, 0.65) * s])
        dist = (t - duration / 2) * v
        x, y = c[0] + dist * np.cos(th), c[1] + dist * np.sin(th)
        if action == "sliding":
            return _motion(t, x, y, ang=a0)
        return _motion(t, x, y, ang=a0 + dist * np.cos(th) / r, speed=v / r)
    if action in ("orbiting", "circling", "spiralling"):
        if action == "orbiting":
            w, rad, c = U(0.7, 1.2), U(0.26, 0.34) * s, 0.5 * s + U(-0.08, 0.08, 2) * s
        elif action == "circling":
            w, rad, c = U(4.5, 7.0), U(0.07, 0.12) * s, U(0.25, 0.75, 2) * s
        else:
            w, rad, c = U(2.5, 3.5), U(0.25, 0.33) * s * (1 - 0.85 * t / duration), 0.5 * s + U(-0.08, 0.08, 2) * s
        w *= _sign(rng)
        ph = U(0, 2 * np.pi)
        return _motion(t, c[0] + rad * np.cos(w * t + ph), c[1] + rad * np.sin(w * t + ph), ang=a0)
    if action == "spinning":
        w = U(2.5, 4.5) * _sign(rng)
        return _motion(t, x0, y0, ang=a0 + w * t, speed=abs(w))
    if action == "wobbling":
        return _motion(t, x0, y0, ang=a0 + U(0.35, 0.6) * np.sin(2 * np.pi * U(0.8, 1.3) * t))
    if action == "shaking":
        th, amp = U(0, np.pi), U(0.05, 0.09) * s
        osc = amp * np.sin(2 * np.pi * U(2.2, 3.2) * t + U(0, 6.3))
        return _motion(t, x0 + osc * np.cos(th), y0 + osc * np.sin(th), ang=a0)
    if action == "vibrating":
        j = rng.normal(0, 0.025 * s, (2, t.size))
        return _motion(t, x0 + j[0], y0 + j[1], ang=a0 + rng.normal(0, 0.05, t.size))
    if action == "swinging":
        px, py, length = U(0.3, 0.7) * s, U(0.05, 0.2) * s, U(0.3, 0.45) * s
        th = U(0.5, 0.8) * np.sin(2 * np.pi * U(0.4, 0.7) * t + U(0, 6.3))
        return _motion(t, px + length * np.sin(th), py + length * np.cos(th), ang=a0 - th)
    if action == "blinking":
        period = U(0.4, 0.7)
        return _motion(t, x0, y0, ang=a0, alpha=((t / period + U(0, 1)) % 1.0 < 0.5).astype(float))
    if action == "pulsing":
        return _motion(t, x0, y0, ang=a0, bright=1 + 0.5 * np.sin(2 * np.pi * U(0.7, 1.2) * t + U(0, 6.3)))
    if action in ("growing", "shrinking"):
        lo, hi = U(0.45, 0.6), U(1.3, 1.6)
        sc = lo * (hi / lo) ** (t / duration)
        return _motion(t, x0, y0, sc if action == "growing" else sc[::-1], sc if action == "growing" else sc[::-1], a0)
    if action == "stretching":
        sx = 1 + 0.45 * np.sin(2 * np.pi * U(0.6, 1.0) * t + U(0, 6.3))
        return _motion(t, x0, y0, sx, 1 / sx, a0)
    if action == "flipping":
        return _motion(t, x0, y0, np.cos(U(3, 5) * t + U(0, 6.3)), 1.0, a0)
    if action in ("falling", "tumbling"):
        top, t0 = U(0.1, 0.3) * s, U(0, 0.3) * duration
        g = 2 * U(0.5, 0.65) * s / (duration - t0) ** 2
        dt = np.maximum(t - t0, 0.0)
        if action == "falling":
            return _motion(t, x0, top + 0.5 * g * dt**2, ang=a0)
        return _motion(t, x0 + U(-0.1, 0.1) * s * dt, top + 0.5 * g * dt**2, ang=a0 + U(3, 5) * _sign(rng) * dt)
    if action == "rising":
        return _motion(t, x0 + 0.05 * s * np.sin(2 * np.pi * 0.6 * t + U(0, 6.3)), U(0.75, 0.9) * s - U(0.15, 0.22) * s * t,
                       ang=a0)
    if action == "colliding":
        lo, hi, v, d = r, s - r, U(0.5, 0.8) * s, _sign(rng)
        span = hi - lo
        pos = (x0 - lo) + d * v * t
        m = pos % (2 * span)
        ks = np.arange(np.ceil(min(pos[0], pos[-1]) / span), np.floor(max(pos[0], pos[-1]) / span) + 1)
        return _motion(t, lo + np.where(m < span, m, 2 * span - m), y0, ang=a0,
                       events=np.sort((ks * span - (x0 - lo)) / (d * v)))
    if action == "zigzagging":
        v, d = U(0.18, 0.25) * s, _sign(rng)
        x = 0.5 * s + d * v * (t - duration / 2)
        return _motion(t, x, y0 + U(0.1, 0.15) * s * _tri(t / U(0.6, 0.9) + U(0, 1)), ang=a0)
    if action in ("fading", "appearing"):
        t0, dur = U(0.15, 0.35) * duration, U(0.35, 0.5) * duration
        k = np.clip((t - t0) / dur, 0.0, 1.0)
        return _motion(t, x0, y0, ang=a0, alpha=1 - k if action == "fading" else k)
    if action == "teleporting":
        period, ph = U(0.5, 0.8), U(0, 1)
        slot = np.floor(t / period + ph).astype(int)
        spots = U(0.2, 0.8, (slot.max() + 1, 2)) * s
        return _motion(t, spots[slot, 0], spots[slot, 1], ang=a0)
    raise ValueError(f"no motion for action {action!r}")


@dataclass
class RenderedClip:
    """Rendered frames (T x H x W x 3 uint8), per-actor per-frame boxes, the mono audio (or None), and
    per frame the owner map (T x H x W int8: the visible actor each pixel shows, -1 none; the boxes
    bound it) and texture marks (T x H x W bool, set by patterned actors only)."""

    frames: np.ndarray
    boxes: list[list[Box | None]]
    audio: np.ndarray | None
    owner: np.ndarray | None = None
    pattern: np.ndarray | None = None


def _boxes_from_owner(owner: np.ndarray, n: int) -> list[Box | None]:
    """Bounding box (x1, y1, x2, y2; x2, y2 exclusive) of each owner id's pixels, None if absent."""
    out: list[Box | None] = []
    for i in range(n):
        m = owner == i
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if rows.size else None)
    return out


def render_clip(spec: ClipSpec, config: SynthConfig) -> RenderedClip:
    """Render one clip's frames, boxes and sound, deterministically from ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    s, n_t = config.size, config.frames
    t = np.arange(n_t) / config.fps
    duration = n_t / config.fps
    pad = int(np.ceil(3 * config.camera_shake))
    bg = scene_background(spec.scene, rng, s + 2 * pad, s + 2 * pad)
    shake = np.zeros((n_t, 2), int)
    if pad:
        shake = np.clip(np.rint(rng.normal(0, config.camera_shake * rng.uniform(0.5, 1.5), (n_t, 2))), -pad, pad)
        shake = shake.astype(int)

    visible = [a for a in spec.actors if a.visible]
    radii = [config.actor_size * s * rng.uniform(0.8, 1.25) for _ in visible]
    motions = [make_motion(a.action, rng, t, duration, s, r) for a, r in zip(visible, radii)]

    distractors = []
    for _ in range(min(int(rng.poisson(config.clutter)), 4)):
        rgb = tuple(0.45 * np.asarray(COLOURS[str(rng.choice(list(COLOURS)))]) + 0.55 * 128.0)
        walk = np.cumsum(rng.normal(0, 0.004 * s, (2, n_t)), 1)
        vel = rng.uniform(-0.08, 0.08, 2) * s
        xy = rng.uniform(0.1, 0.9, 2) * s
        distractors.append(Sprite(str(rng.choice(SHAPES)), rgb, "plain", xy[0] + vel[0] * t + walk[0] - shake[:, 0],
                                  xy[1] + vel[1] * t + walk[1] - shake[:, 1], config.actor_size * s * rng.uniform(0.4, 0.6),
                                  np.ones(n_t), np.ones(n_t), np.full(n_t, rng.uniform(0, 6.3)), np.ones(n_t),
                                  np.ones(n_t)))
    occluder = None
    if rng.random() < config.occlusion:
        width, at = rng.uniform(0.1, 0.18) * s, rng.uniform(0.25, 0.75) * s
        vertical = rng.random() < 0.5
        occluder = (vertical, int(at - width / 2), int(at + width / 2), np.array([100, 100, 85]) + rng.uniform(-8, 8, 3))

    sprites = [Sprite(a.shape, COLOURS[a.colour], a.texture, m.cx - shake[:, 0], m.cy - shake[:, 1], r, m.sx, m.sy,
                      m.ang, m.alpha, m.bright, config.texture_scale, config.marks)
               for a, m, r in zip(visible, motions, radii)]
    frames = np.empty((n_t, s, s, 3), np.float32)
    owners = np.full((n_t, s, s), -1, np.int8)
    patterns = np.zeros((n_t, s, s), bool)
    boxes: list[list[Box | None]] = [[] for _ in visible]
    depth = rng.permutation(len(visible))
    for f in range(n_t):
        ox, oy = shake[f]
        fr, owner = frames[f], owners[f]
        fr[:] = bg[pad + oy:pad + oy + s, pad + ox:pad + ox + s]
        for sp in distractors:
            draw_actor(fr, owner, None, -1, sp, f)
        for i in depth:
            draw_actor(fr, owner, patterns[f], int(i), sprites[i], f)
        if occluder is not None:
            vertical, lo, hi, rgb = occluder
            sl = (slice(None), slice(max(lo - ox, 0), max(hi - ox, 0))) if vertical else \
                (slice(max(lo - oy, 0), max(hi - oy, 0)), slice(None))
            fr[sl] = rgb
            owner[sl] = -1
        for i, b in enumerate(_boxes_from_owner(owner, len(visible))):
            boxes[i].append(b)
    sigma = config.noise * rng.uniform(0.5, 1.5)
    if sigma > 0:
        frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(frames, 0, 255, out=frames)
    sources = [(a.action, m.events, m.speed) for a, m in zip(visible, motions) if a.audible]
    sources += [(a.action, np.zeros(0), 0.0) for a in spec.actors if not a.visible]
    audio = clip_audio(sources, duration, config.audio_rate, rng)
    return RenderedClip(np.rint(frames).astype(np.uint8), boxes, audio, owners, patterns)


@dataclass
class Still:
    """A concept image with, per pixel, the index of the actor shown (-1: scene) and its texture marks."""

    image: np.ndarray
    owner: np.ndarray
    pattern: np.ndarray
    scene: str
    actors: list[tuple[str, str, str]]


def render_still(rng: np.random.Generator, config: SynthConfig) -> Still:
    """Render one still concept image: a scene and 1..`still_actors` actors of random shape, colour and
    texture, their radii drawn from `still_scale` (in `actor_size * image_size`)."""
    s = config.image_size
    scene = str(rng.choice(SCENES))
    img = scene_background(scene, rng, s, s)
    owner = np.full((s, s), -1, np.int8)
    pattern = np.zeros((s, s), bool)
    actors = []
    colours = list(rng.permutation(list(COLOURS)))
    for i in range(int(rng.integers(1, config.still_actors + 1))):
        look = (str(rng.choice(SHAPES)), str(colours.pop()), str(rng.choice(TEXTURES)))
        r = config.actor_size * s * rng.uniform(*config.still_scale)
        sp = Sprite.still(look[0], COLOURS[look[1]], look[2], rng.uniform(0.15, 0.85) * s, rng.uniform(0.15, 0.85) * s,
                          r, rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2), rng.uniform(0, 6.3),
                          config.texture_scale, config.marks)
        draw_actor(img, owner, pattern, i, sp, 0)
        actors.append(look)
    if config.noise > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(config.noise)
    return Still(np.rint(np.clip(img, 0, 255)).astype(np.uint8), owner, pattern, scene, actors)
