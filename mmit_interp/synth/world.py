"""The synthetic world's vocabulary, its configuration and the sampling of clip annotations.

Everything here is cheap (no pixels): ``sample_clips`` draws every clip's actions, actors, scene
and incomplete training labels from the seed, so label statistics can be studied without
rendering, and rendering later only adds motion, pixels and sound from each clip's own seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ActionClass:
    """One action class: whether it is seen and/or heard, its look-alike partner, what it is."""

    name: str
    visible: bool
    audible: bool
    similar: str | None
    description: str


# Frequency rank order: the first class is the most frequent (long tail, see SynthConfig.tail_exponent).
CATALOGUE: tuple[ActionClass, ...] = (
    ActionClass("sliding", True, False, "orbiting", "moves in a straight line at constant speed"),
    ActionClass("bouncing", True, True, "jumping", "bounces in place on a floor; a click at each contact"),
    ActionClass("spinning", True, True, "wobbling", "rotates in place; a whirring tone while it spins"),
    ActionClass("falling", True, False, "tumbling", "drops with gravity, without turning"),
    ActionClass("beeping", False, True, None, "heard only: pulsed 1 kHz beeps"),
    ActionClass("orbiting", True, False, "sliding", "travels along a wide circular arc"),
    ActionClass("growing", True, False, "pulsing", "its size increases steadily"),
    ActionClass("shaking", True, False, "vibrating", "oscillates from side to side"),
    ActionClass("jumping", True, False, "bouncing", "hops forward with rests between hops"),
    ActionClass("blinking", True, False, "pulsing", "switches on and off"),
    ActionClass("rolling", True, True, "sliding", "rolls along the floor; a low rumble"),
    ActionClass("clapping", False, True, None, "heard only: sharp hand-clap bursts"),
    ActionClass("shrinking", True, False, "growing", "its size decreases steadily"),
    ActionClass("swinging", True, False, "shaking", "swings like a pendulum"),
    ActionClass("colliding", True, True, "sliding", "runs into the frame edges and rebounds; a thud at each hit"),
    ActionClass("rising", True, False, "falling", "floats upwards, swaying a little"),
    ActionClass("wobbling", True, False, "spinning", "rocks back and forth around its centre"),
    ActionClass("zigzagging", True, False, "sliding", "travels in a zigzag"),
    ActionClass("whistling", False, True, None, "heard only: a gliding whistle"),
    ActionClass("circling", True, False, "orbiting", "runs small fast circles"),
    ActionClass("pulsing", True, False, "blinking", "its brightness swells and fades"),
    ActionClass("stretching", True, False, "flipping", "stretches wide and tall in turn"),
    ActionClass("tumbling", True, False, "falling", "falls while turning over"),
    ActionClass("vibrating", True, True, "shaking", "jitters rapidly; a buzz"),
    ActionClass("fading", True, False, "appearing", "fades out"),
    ActionClass("ringing", False, True, None, "heard only: a struck bell"),
    ActionClass("flipping", True, False, "stretching", "flips over like a coin"),
    ActionClass("appearing", True, False, "fading", "fades in"),
    ActionClass("spiralling", True, False, "circling", "spirals in towards a point"),
    ActionClass("teleporting", True, False, "sliding", "jumps instantly from place to place"),
)
CLASSES: dict[str, ActionClass] = {c.name: c for c in CATALOGUE}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
TEXTURES: tuple[str, ...] = ("plain", "dotted", "striped", "checkered", "wavy")
# Broden colour names with saturated RGB values that stay far from every scene's muted palette.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (30, 180, 50),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
    "pink": (245, 120, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (120, 65, 25),
}
# How texture marks are coloured: a darker (or, on dark actors, lighter) "shade" of the actor's colour,
# or one mid "grey" on every actor, so that a texture detector needs no colour (docs/synth.md)
MARKS: tuple[str, ...] = ("shade", "grey")
SCENES: tuple[str, ...] = ("sky", "meadow", "desert", "night", "room", "ocean")


@dataclass
class SynthConfig:
    """Every knob of the world; the defaults make the demo world (see docs/synth.md)."""

    seed: int = 0
    train_clips: int = 2000
    val_clips: int = 500
    images: int = 1000
    still_actors: int = 1  # concept stills hold 1..still_actors actors (docs/synth.md, "Concept stills")
    still_scale: tuple[float, float] = (0.8, 1.25)  # their radii in actor_size * image_size: the clips' range
    action_frames: int = 300
    size: int = 64
    frames: int = 24
    fps: int = 8
    classes: tuple[str, ...] | None = None
    missing_rate: float = 0.2
    tail_exponent: float = 1.0
    actions_per_clip: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
    bias_action: str = "spinning"
    bias_texture: str = "dotted"
    bias_strength: float = 0.8
    bias_leak: float = 0.05
    shape_affinity: float = 0.5
    actor_size: float = 0.11
    clutter: float = 1.5
    noise: float = 8.0
    camera_shake: float = 1.0
    occlusion: float = 0.3
    texture_scale: float = 1.0
    marks: str = "shade"  # texture marks' colour: "shade" of the actor's colour, or one "grey" for all (MARKS)
    image_size: int = 64
    seg_size: int = 32
    snippet_frames: int = 8
    audio_rate: int = 22050
    crf: int = 20
    workers: int = 2

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = tuple(self.classes)
            unknown = [c for c in self.classes if c not in CLASSES]
            if unknown or len(set(self.classes)) != len(self.classes) or not self.classes:
                raise ValueError(f"classes must be distinct catalogue names; unknown: {unknown}")
        self.actions_per_clip = tuple(float(p) for p in self.actions_per_clip)
        self.still_scale = tuple(float(x) for x in self.still_scale)
        if self.still_actors < 1 or len(self.still_scale) != 2 or not 0 < self.still_scale[0] <= self.still_scale[1]:
            raise ValueError("still_actors must be >= 1 and still_scale a range (low, high) with 0 < low <= high")
        if self.size % 2 or self.size < 16:
            raise ValueError("size must be even and >= 16 (H.264 needs even frame sizes)")
        if self.frames < 2 or self.fps < 1:
            raise ValueError("frames must be >= 2 and fps >= 1")
        if not 0.0 <= self.missing_rate < 1.0:
            raise ValueError("missing_rate must lie in [0, 1)")
        if not 0.0 <= self.shape_affinity <= 1.0:
            raise ValueError("shape_affinity must lie in [0, 1]")
        if not self.texture_scale > 0:
            raise ValueError("texture_scale must be > 0")
        if self.marks not in MARKS:
            raise ValueError(f"marks must be one of {MARKS}")
        if not 0.0 <= self.bias_strength <= 1.0 or not 0.0 <= self.bias_leak <= 1.0:
            raise ValueError("bias_strength and bias_leak must lie in [0, 1]")
        if self.bias_texture not in TEXTURES:
            raise ValueError(f"bias_texture must be one of {TEXTURES}")
        if abs(sum(self.actions_per_clip) - 1.0) > 1e-6 or len(self.actions_per_clip) > 4:
            raise ValueError("actions_per_clip: probabilities of 1..4 actions, summing to 1")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes in use, in frequency-rank order (index order of moments_categories.txt)."""
        return self.classes if self.classes is not None else tuple(c.name for c in CATALOGUE)

    @property
    def bias_active(self) -> bool:
        """The planted texture bias is on (non-zero strength and the bias action is in use)."""
        return self.bias_strength > 0 and self.bias_action in self.class_names

    def to_dict(self) -> dict:
        """JSON-ready copy of the world-defining configuration (for world.json; ``workers`` left out)."""
        d = dataclasses.asdict(self)
        del d["workers"]
        d["classes"] = list(self.class_names)
        d["actions_per_clip"] = list(self.actions_per_clip)
        d["still_scale"] = list(self.still_scale)
        return d


@dataclass
class ActorSpec:
    """One actor: the action it performs and its look (shape etc. are None for heard-only actions)."""

    action: str
    shape: str | None
    colour: str | None
    texture: str | None
    visible: bool
    audible: bool


@dataclass
class ClipSpec:
    """A clip's sampled annotation; rendering adds motion, pixels and sound from ``seed``."""

    name: str
    split: str
    index: int
    seed: int
    scene: str
    actors: list[ActorSpec]
    labels: list[str]
    train_labels: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """Class folder of the video, like M-MiT's: the first label the clip's CSV row carries."""
        return self.train_labels[0] if self.train_labels else self.labels[0]

    @property
    def path(self) -> str:
        """Path of the video relative to ``videos/``."""
        return f"{self.folder}/{self.name}.mp4"

    @property
    def audible(self) -> list[str]:
        """Actions that can be heard in this clip (the clip has an audio stream iff non-empty)."""
        return [a.action for a in self.actors if a.audible]


def class_weights(config: SynthConfig) -> np.ndarray:
    """Sampling weight of each class: Zipf-like ``(rank + 1) ** -tail_exponent``, normalised."""
    w = (np.arange(len(config.class_names)) + 1.0) ** -config.tail_exponent
    return w / w.sum()


def typical_shape(action: str) -> str:
    """The shape an action's actors favour (a look-alike pair shares one, so shape never separates
    them): actions correlate with objects, as in real video (juggling balls, rolling wheels)."""
    order = [c.name for c in CATALOGUE]

    def rep(name: str) -> str:
        partner = CLASSES[name].similar
        return min((name, partner) if partner in CLASSES else (name,), key=order.index)

    reps = list(dict.fromkeys(rep(c.name) for c in CATALOGUE if c.visible))
    return SHAPES[reps.index(rep(action)) % len(SHAPES)]


def _shape(rng: np.random.Generator, action: str, config: SynthConfig) -> str:
    """An actor's shape: its action's typical shape with probability `shape_affinity`, else uniform."""
    return typical_shape(action) if rng.random() < config.shape_affinity else str(rng.choice(SHAPES))


def _texture(rng: np.random.Generator, action: str, config: SynthConfig) -> str:
    """Draw an actor's texture, applying the planted bias (bias action -> mostly bias texture)."""
    if not config.bias_active:
        return str(rng.choice(TEXTURES))
    others = [t for t in TEXTURES if t != config.bias_texture]
    share = config.bias_strength if action == config.bias_action else config.bias_leak
    return config.bias_texture if rng.random() < share else str(rng.choice(others))


def _sample_clip(rng: np.random.Generator, split: str, index: int, config: SynthConfig) -> ClipSpec:
    """Draw one clip's actions (distinct, long-tailed), actors, colours and scene."""
    names = config.class_names
    probs = np.asarray(config.actions_per_clip)
    k = min(int(rng.choice(len(probs), p=probs)) + 1, len(names))
    picked = rng.choice(len(names), size=k, replace=False, p=class_weights(config))
    labels = [names[i] for i in sorted(picked)]
    colours = list(rng.permutation(list(COLOURS)))
    actors = []
    for a in rng.permutation(labels):
        cls = CLASSES[str(a)]
        if cls.visible:
            actors.append(ActorSpec(cls.name, _shape(rng, cls.name, config), str(colours.pop()),
                                    _texture(rng, cls.name, config), True, cls.audible))
        else:
            actors.append(ActorSpec(cls.name, None, None, None, False, True))
    seed = int(rng.integers(2**63 - 1))
    return ClipSpec(f"{split}_{index:06d}", split, index, seed, str(rng.choice(SCENES)), actors, labels)


def drop_labels(clips: list[ClipSpec], rate: float, rng: np.random.Generator) -> None:
    """Fill ``train_labels``: leave out ``round(rate * #true labels)`` labels, at least one kept per clip.

    Exactly that share is dropped (not per-label coin flips, which single-label clips could never
    honour), chosen uniformly among the (clip, label) pairs whose clip keeps another label.
    """
    pairs = [(i, lab) for i, c in enumerate(clips) for lab in c.labels]
    target = int(round(rate * len(pairs)))
    kept = [set(c.labels) for c in clips]
    dropped = 0
    for j in rng.permutation(len(pairs)):
        if dropped >= target:
            break
        i, lab = pairs[j]
        if len(kept[i]) > 1:
            kept[i].discard(lab)
            dropped += 1
    for c, keep in zip(clips, kept):
        c.train_labels = [lab for lab in c.labels if lab in keep]


def sample_clips(config: SynthConfig) -> list[ClipSpec]:
    """All clip annotations of a world (training then validation), without rendering anything."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    train = [_sample_clip(rng, "train", i, config) for i in range(config.train_clips)]
    val = [_sample_clip(rng, "val", i, config) for i in range(config.val_clips)]
    drop_labels(train, config.missing_rate, np.random.default_rng(np.random.SeedSequence([config.seed, 2])))
    for c in val:
        c.train_labels = list(c.labels)
    return train + val


def label_stats(clips: list[ClipSpec], config: SynthConfig) -> dict:
    """Label statistics of a clip list: class counts, tail ratio, multi-label share, missing share."""
    names = config.class_names
    counts = {n: 0 for n in names}
    for c in clips:
        for lab in c.labels:
            counts[lab] += 1
    n_true = sum(len(c.labels) for c in clips)
    n_train = sum(len(c.train_labels) for c in clips)
    nz = [v for v in counts.values() if v > 0]
    return {
        "clips": len(clips),
        "counts": counts,
        "tail_ratio": (max(nz) / min(nz)) if nz else None,
        "classes_present": len(nz),
        "multi_label_share": sum(len(c.labels) >= 2 for c in clips) / max(len(clips), 1),
        "labels_per_clip": n_true / max(len(clips), 1),
        "missing_share": 1.0 - n_train / max(n_true, 1),
        "audible_share": sum(bool(c.audible) for c in clips) / max(len(clips), 1),
    }
