"""Run by `torchrun` in tests/test_train.py: train, then write this rank's weight digest."""
import hashlib
import os
import sys

import torch

from train.loop import TrainConfig, train

data, out = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
res = train(TrainConfig(data=data, out=out, model_kwargs={"width": 8}, size=32, frames=4, batch_size=4,
                        epochs=2, workers=0, progress=False))
h = hashlib.sha256()
for k, v in sorted(res.model.state_dict().items()):
    h.update(k.encode())
    h.update(v.detach().cpu().contiguous().numpy().tobytes())
with open(os.path.join(os.path.dirname(out), f"digest_{rank}.txt"), "w") as f:
    f.write(h.hexdigest())
