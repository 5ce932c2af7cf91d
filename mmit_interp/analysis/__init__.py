"""Representation analyses on trained runs: what the units do and why a class fires.

- `ablation`: zero a random fraction of a block's units, re-evaluate (Fig. 9).
- `selectivity`: class selectivity of single units (Fig. 10).
- `relations`: unit <-> class relations and block-4 -> block-3 concept paths ("why juggling? polka dots").
- `bias`: the planted bias as a causal test (lure excess, paths to texture units, ablating them).
- `clip_analysis`: one clip's predictions, CAMs and mCAM, recorded in the run's store (the dashboard's service).
- `figures`: the matplotlib figures of these analyses.
- `trunk`: a model's residual blocks by name, running a model up to / on from a block.
"""
