"""Run under ``mpiexec -n N``: train with cnnkit.distributed and write what rank 0 ends with.

    mpiexec -n 2 python tests/distributed/workers/equivalence.py OUT_DIR

Writes OUT_DIR/<case>.npz (the final state dict, the epoch logs, every rank's sampler
indices) for each case of ``tests/distributed/cases.py``, and OUT_DIR/comm.json with the
results of the communicator checks. tests/distributed/test_equivalence.py compares them
with one process training on the global batches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.distributed.cases

from cnnkit import optim  # noqa: E402
from cnnkit.distributed import (  # noqa: E402
    DataParallel,
    DistributedOptimizer,
    Job,
    broadcast_parameters,
    convert_sync_batchnorm,
    shard_loader,
    world,
)
from cnnkit.errors import DistributedError  # noqa: E402
from cnnkit.train import fit  # noqa: E402
from tests.distributed.cases import CASES, make_data, make_model  # noqa: E402


def communicator_checks(comm) -> dict:
    out = {}
    rows = np.full((comm.rank + 1, 2), comm.rank, dtype=np.float32)
    out["allgather"] = comm.allgather(rows).tolist()
    a = np.array([comm.rank, -comm.rank], dtype=np.int64)
    out["max"] = comm.allreduce(a.copy(), "max").tolist()
    out["min"] = comm.allreduce(a.copy(), "min").tolist()
    out["sum"] = comm.allreduce(np.ones(3, np.float64)).tolist()
    b = np.arange(4, dtype=np.float32) if comm.rank == 0 else np.zeros(4, np.float32)
    out["broadcast"] = comm.broadcast(b).tolist()
    out["bytes"] = comm.broadcast_bytes(b"from rank 0" if comm.rank == 0 else None).decode()
    comm.barrier()
    try:
        comm.check_same("a value", f"rank {comm.rank}")
        out["check_same"] = "accepted"
    except DistributedError as error:
        out["check_same"] = str(error)
    comm.check_same("a shared value", "same everywhere")
    request = comm.iallreduce(np.ones(2, np.float32) * (comm.rank + 1))
    request.wait()
    return out


class Record:
    """Keeps this rank's sampler indices of each epoch (after DataParallel's set_epoch)."""

    def __init__(self, loader):
        self.loader, self.indices = loader, []

    def on_epoch_begin(self, epoch):
        self.indices.append(self.loader.sampler.indices().copy())


def main(out_dir: Path) -> None:
    comm = world()
    with Job("equivalence worker", comm):
        checks = communicator_checks(comm)
        if comm.rank == 0:
            (out_dir / "comm.json").write_text(json.dumps(checks))
        for case in CASES:
            model = make_model(case)
            train_set, val_set = make_data(case)
            if case.sync_bn:
                convert_sync_batchnorm(model, comm)
            broadcast_parameters(model, comm)
            loader = shard_loader(train_set, case.batch, comm, seed=case.seed, drop_last=case.drop_last)
            val_loader = shard_loader(val_set, 7, comm, shuffle=False)
            inner = optim.SGD(model.parameters(), lr=case.lr, momentum=0.9, weight_decay=1e-4)
            opt = DistributedOptimizer(inner, comm, bucket_cap_mb=case.bucket_mb, check_sync=True, model=model)
            record = Record(loader)
            history = fit(model, loader, epochs=case.epochs, optimizer=opt, val_loader=val_loader, verbose=0,
                          callbacks=[DataParallel(comm, seed=case.seed, loaders=[loader]), record])
            every = comm.allgather(np.stack(record.indices)[None])          # (ranks, epochs, per rank)
            if comm.rank == 0:
                arrays = {f"state/{k}": v for k, v in model.state_dict().items()}
                arrays.update({f"log/{k}": np.array(v) for k, v in history.history.items()})
                arrays["indices"] = every
                arrays["buckets"] = np.array(len(opt.gradients.buckets))
                np.savez(out_dir / f"{case.name}.npz", **arrays)
        comm.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
