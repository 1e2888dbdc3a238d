"""DDP with two gloo processes (torch.multiprocessing): for every rule, both ranks hold
identical weights and identical feedback (buffers and plastic parameters) after several
steps, although each rank initialises its model from a different torch seed and sees
different data. The optimizer takes ``rules.param_groups`` (the learned-feedback rules'
``B`` in a group of its own, here at its own ``feedback_lr``), as the training loop does."""

from __future__ import annotations

import gc
from collections.abc import Callable
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
PARAMS |= {"sa": {"feedback_lr": 1.0}, "ia": {"feedback_lr": 1.0}, "aa": {"feedback_lr": 1.0}}
LEARNED = ("sa", "ia", "aa")  # B learns by its own loss: it must have moved


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3),
    )  # fmt: skip


def _in_group(
    rank: int, world: int, init_file: str, body: Callable[[int, str], None], out: str
) -> None:
    """Run ``body(rank, out)`` in a gloo group of ``world`` processes, then tear it down in
    order: the body's DDP models collected (they hold the group in reference cycles), every
    rank past a barrier, the group destroyed. A DDP model left to the interpreter's exit
    destroys the group's threads there, which aborts the process now and then."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        body(rank, out)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(body: Callable[[int, str], None], tmp_path: Path) -> None:
    mp.spawn(_in_group, args=(2, str(tmp_path / "init"), body, str(tmp_path)), nprocs=2)


def _every_rule(rank: int, out_dir: str) -> None:
    for name in rules.RULES:
        torch.manual_seed(100 + rank)  # different init per rank: DDP must sync it
        model, _ = rules.convert(_net(), name, seed=7, **PARAMS.get(name, {}))
        ddp = nn.parallel.DistributedDataParallel(model)
        groups = rules.param_groups(ddp)
        opt = build_optimizer(groups, OptimSpec(lr=0.05, manhattan=name == "sc"))
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


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_for_every_rule(tmp_path: Path) -> None:
    _spawn(_every_rule, tmp_path)
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
        if name in LEARNED:
            assert not torch.equal(fresh.state_dict()["4.feedback"], a["4.feedback"])


WM_PARAMS = {"mirror_every": 2, "mirror_batch": 37, "mirror_lr": 0.05}  # 37: shares 19 + 18


def _wm_sharded(rank: int, out_dir: str) -> None:
    torch.manual_seed(100 + rank)  # different init per rank: DDP must sync it
    model, _ = rules.convert(_net(), "wm", seed=7, **WM_PARAMS)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = build_optimizer(ddp.parameters(), OptimSpec(lr=0.05))
    gen = torch.Generator().manual_seed(rank)
    for _ in range(5):  # mirror phases after steps 1, 3 and 5
        x = torch.randn(5, 1, 6, 6, generator=gen)
        loss = F.cross_entropy(ddp(x), torch.randint(0, 3, (5,), generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rules.after_step(ddp)  # no forward after the last one: DDP broadcasts nothing
    torch.save(model.state_dict(), Path(out_dir) / f"trained-{rank}.pt")
    # one mirror iteration of a bare layer (same W on both ranks, no DDP)
    torch.manual_seed(0)
    layer = rules.RULES["wm"].from_layer(nn.Linear(12, 5), seed=3, name="fc", mirror_batch=7)
    layer.mirror()
    torch.save(layer.state_dict(), Path(out_dir) / f"layer-{rank}.pt")


@pytest.mark.slow
def test_wm_mirror_noise_is_sharded_over_ranks_and_b_is_identical(tmp_path: Path) -> None:
    """Each rank draws its share of the mirror noise from its own seed; one all-reduce adds
    the Hebbian sums, so both ranks hold the same ``B`` = the estimate of all the samples."""
    from trainers.rules.base import layer_seed

    _spawn(_wm_sharded, tmp_path)
    a, b = (torch.load(tmp_path / f"trained-{r}.pt") for r in (0, 1))
    assert int(a["4.mirror_count"]) == 3 and int(a["4.step_count"]) == 5
    for key in ("0.feedback", "4.feedback", "6.feedback", "4.weight"):
        assert torch.equal(a[key], b[key]), key
    fresh = rules.convert(_net(), "wm", seed=7, **WM_PARAMS)[0].state_dict()
    assert not torch.equal(fresh["4.feedback"], a["4.feedback"])

    # the bare layer's first iteration (rate 1: a running mean) by hand, from the two
    # ranks' noise: B = sum over ranks r of sum_i (W x_ri) x_ri^T / N, N = 4 + 3 samples
    s0, s1 = (torch.load(tmp_path / f"layer-{r}.pt") for r in (0, 1))
    assert torch.equal(s0["feedback"], s1["feedback"])
    w = s0["weight"].double()
    seed = layer_seed(3, "fc")
    total = torch.zeros_like(w)
    for rank, n in ((0, 4), (1, 3)):
        gen = torch.Generator().manual_seed(layer_seed(seed, f"wm0/{rank}"))
        x = torch.randn(n, 12, generator=gen).double()
        total += (x @ w.t()).t() @ x
    torch.testing.assert_close(s0["feedback"].double(), total / 7, rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(layer_seed(seed, "wm0"))
    alone = torch.randn(7, 12, generator=gen).double()  # what one process alone would draw
    assert not torch.allclose(s0["feedback"].double(), (alone @ w.t()).t() @ alone / 7)
