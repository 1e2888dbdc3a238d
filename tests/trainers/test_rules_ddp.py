"""DDP with two gloo processes (torch.multiprocessing): for every rule, both ranks hold
identical weights and identical feedback (buffers and plastic parameters) after several
steps, although each rank initialises its model from a different torch seed and sees
different data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from trainers import rules
from trainers.metrics import alignment
from trainers.optim import build_optimizer
from trainers.spec import OptimSpec

STEPS = 4
PARAMS = {"kp": {"decay": 0.01}, "pfa": {"decay": 0.01}, "pfa_o": {"decay": 0.01}}


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3),
    )  # fmt: skip


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        for name in rules.RULES:
            torch.manual_seed(100 + rank)  # different init per rank: DDP must sync it
            model, _ = rules.convert(_net(), name, seed=7, **PARAMS.get(name, {}))
            ddp = nn.parallel.DistributedDataParallel(model)
            opt = build_optimizer(ddp.parameters(), OptimSpec(lr=0.05, manhattan=name == "sc"))
            gen = torch.Generator().manual_seed(rank)
            for _ in range(STEPS):
                x = torch.randn(5, 1, 6, 6, generator=gen)
                y = torch.randint(0, 3, (5,), generator=gen)
                loss = F.cross_entropy(ddp(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rules.after_step(ddp)
            assert "mean_angle" in alignment(ddp)
            torch.save(model.state_dict(), Path(out_dir) / f"{name}-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_for_every_rule(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for name in rules.RULES:
        a = torch.load(tmp_path / f"{name}-0.pt")
        b = torch.load(tmp_path / f"{name}-1.pt")
        assert a.keys() == b.keys()
        feedback = [k for k in a if k.rsplit(".", 1)[-1] not in ("weight", "bias")]
        assert feedback or name == "bp", name
        for key in a:
            if key.startswith("1."):  # BatchNorm statistics: local per rank, as in any DDP run
                continue
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs across ranks"
        fresh = rules.convert(_net(), name, seed=7, **PARAMS.get(name, {}))[0]
        assert fresh.state_dict()["4.weight"].shape == a["4.weight"].shape
        assert not torch.equal(fresh.state_dict()["4.weight"], a["4.weight"])
