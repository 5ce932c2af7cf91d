"""Sounds of the synthetic world: one generator per audible action, mixed into a mono clip track.

Visible sounding actions are synchronised with their motion (a click at each bounce contact, a thud
at each wall hit, a tone whose wobble follows the spin rate); heard-only actions (beeping,
clapping, whistling, ringing) have no actor on screen. A clip without any audible action gets no
track at all (``None``), so that readers exercise their "no audio stream" path.
"""

from __future__ import annotations

import numpy as np


def _decay_at(tt: np.ndarray, times: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Envelope exp(-(t - e) / tau) after the most recent event e, and the time since it."""
    since = np.full(tt.shape, np.inf)
    for e in np.sort(times):
        since = np.where(tt >= e, tt - e, since)
    heard = np.isfinite(since)
    since = np.where(heard, since, 0.0)
    return np.where(heard, np.exp(-np.minimum(since, 60 * tau) / tau), 0.0), since


def _sound(action: str, tt: np.ndarray, events: np.ndarray, speed: float, rng: np.random.Generator) -> np.ndarray:
    """Waveform (peak ~1) of one audible action over sample times ``tt`` (seconds)."""
    U = rng.uniform
    two_pi = 2 * np.pi
    if action == "bouncing":
        env, since = _decay_at(tt, events, 0.004)
        return env * np.sin(two_pi * U(2000, 3000) * since) + 0.5 * env * rng.standard_normal(tt.size)
    if action == "colliding":
        env, since = _decay_at(tt, events, 0.05)
        return env * np.sin(two_pi * U(90, 140) * since) + 0.3 * env * rng.standard_normal(tt.size)
    if action == "spinning":
        return np.sin(two_pi * (250 + 40 * speed) * tt) * (0.7 + 0.3 * np.sin(speed * tt))
    if action == "vibrating":
        return 0.6 * np.sign(np.sin(two_pi * U(100, 140) * tt))
    if action == "rolling":
        noise = np.convolve(rng.standard_normal(tt.size), np.ones(40) / 40, mode="same")
        return noise / (np.abs(noise).max() + 1e-9) * (0.8 + 0.2 * np.sin(speed * tt))
    if action == "beeping":
        gate = (tt / U(0.35, 0.5) + U(0, 1)) % 1.0 < 0.4
        return gate * np.sin(two_pi * U(900, 1100) * tt)
    if action == "clapping":
        claps = np.cumsum(U(0.22, 0.4, 16)) - U(0, 0.3)
        env, _ = _decay_at(tt, claps, 0.012)
        return env * rng.standard_normal(tt.size)
    if action == "whistling":
        f0, f1 = U(1100, 1500), U(1800, 2400)
        freq = f0 + (f1 - f0) * (0.5 - 0.5 * np.cos(np.pi * tt / tt[-1])) + 30 * np.sin(two_pi * 5.5 * tt)
        return np.sin(two_pi * np.cumsum(freq) * (tt[1] - tt[0]))
    if action == "ringing":
        f0 = U(500, 800)
        env, since = _decay_at(tt, np.sort(U(0, tt[-1] * 0.6, int(rng.integers(1, 3)))), 0.6)
        return env * sum(a * np.sin(two_pi * f0 * k * since) for k, a in ((1, 1.0), (2.76, 0.5), (5.4, 0.25))) / 1.75
    raise ValueError(f"no sound for action {action!r}")


def clip_audio(sources: list[tuple[str, np.ndarray, float]], duration: float, rate: int,
               rng: np.random.Generator) -> np.ndarray | None:
    """Mix the sounds of ``(action, event times, speed)`` sources into float32 mono in [-1, 1]; None if none."""
    if not sources:
        return None
    tt = np.arange(int(round(duration * rate))) / rate
    mix = rng.normal(0, 0.004, tt.size)
    for action, events, speed in sources:
        mix += rng.uniform(0.25, 0.45) * _sound(action, tt, np.asarray(events), speed, rng)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)
