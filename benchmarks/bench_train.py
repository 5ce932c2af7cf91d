"""Training throughput of the small demo model and the share of step time spent waiting for data.

Generates a small synthetic world (or uses --data), trains one epoch with 0 and with 2 DataLoader
workers side by side, and prints clips/s and data-wait share for each. Target: wait < 10% with
2 workers. Not a timed test: machines are noisy (PERF-NOTES), read the ratios.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="existing M-MiT-layout folder (default: generate a 400-clip synthetic world)")
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model-kwargs", default='{"width": 16, "layer4_stride": 1}')
    args = p.parse_args()
    from mmit_interp.synth import SynthConfig, generate_world
    from train.loop import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = str(Path(tmp) / "world")
            generate_world(data, SynthConfig(train_clips=args.clips, val_clips=32, images=0, action_frames=0),
                           progress=False)
        rows = []
        for workers in (0, 2):
            out = Path(tmp) / f"run_w{workers}"
            train(TrainConfig(data=data, out=str(out), model_kwargs=json.loads(args.model_kwargs), epochs=1,
                              batch_size=args.batch_size, workers=workers, progress=False, max_val_clips=32))
            rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            rows.append((workers, rec["clips_per_s"], rec["data_wait_share"]))
        print(f"{'workers':>8} {'clips/s':>8} {'data wait':>10}")
        for w, cps, wait in rows:
            print(f"{w:>8} {cps:>8.1f} {100 * wait:>9.1f}%")
        print(f"speed-up of 2 workers over 0: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
