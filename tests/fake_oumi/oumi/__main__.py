"""A stand-in for `python -m oumi train` in tests (Oumi is not installed).

It does what dcvlr's side of the contract needs checked: it is started by a
real torchrun, joins a real c10d (Gloo) process group on the rendezvous
address dcvlr gave torchrun, all-reduces its rank, and writes what it was
given (argv, environment, the config file) to
<training.output_dir>/rank-<RANK>.json.
"""
import json
import os
import sys

import torch
import torch.distributed as dist


def main(argv):
    if not argv or argv[0] != "train":
        sys.exit("usage: python -m oumi train -c CONFIG [--key value ...]")
    config = argv[argv.index("-c") + 1]
    output_dir = argv[argv.index("--training.output_dir") + 1]
    dist.init_process_group("gloo")
    total = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(total)
    os.makedirs(output_dir, exist_ok=True)
    with open(config) as f:
        config_text = f.read()
    names = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
             "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES",
             "DCVLR_JOB_ID", "DCVLR_CHECKPOINT_DIR"]
    record = {
        "argv": argv,
        "env": {name: os.environ.get(name) for name in names},
        "rank_sum": total.item(),
        "config": config_text,
    }
    path = os.path.join(output_dir, "rank-%d.json" % dist.get_rank())
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.rename(path + ".tmp", path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
