"""The synthetic multi-action world (`mmit-synth`): clips with sound, complete truth, concept sets.

``generate_world(out, SynthConfig(...))`` writes a folder in the Multi-Moments in Time layout plus
``truth.jsonl``, a Broden-format concept set and action-region frames; ``sample_clips`` draws the
annotations alone; ``load_truth`` reads the truth back. See docs/synth.md.
"""

from .generate import WorldSummary, generate_world
from .truth import ActorTruth, ClipTruth, load_truth
from .world import CATALOGUE, SynthConfig, label_stats, sample_clips

__all__ = ["ActorTruth", "CATALOGUE", "ClipTruth", "SynthConfig", "WorldSummary", "generate_world", "label_stats",
           "load_truth", "sample_clips"]
