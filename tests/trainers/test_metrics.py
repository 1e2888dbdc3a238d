"""Alignment metrics against hand-computed angles and norms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers import metrics
from trainers.rules import convert


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def test_alignment_matches_hand_formula() -> None:
    model, _ = convert(_model(), "fa", seed=0)
    out = metrics.alignment(model)
    w, b = model[0].weight.detach().flatten(), model[0].feedback.flatten()
    cos = float(w @ b / (w.norm() * b.norm()))
    assert math.isclose(out["0.angle"], math.degrees(math.acos(cos)), abs_tol=1e-4)
    assert math.isclose(out["0.norm_ratio"], float(b.norm() / w.norm()), rel_tol=1e-5)
    mean = (out["0.angle"] + out["2.angle"]) / 2
    assert math.isclose(out["mean_angle"], mean)
    w64 = model[2].weight.detach().double().flatten()
    c = w64 - w64.mean()
    kurt = float((c**4).mean() / (c**2).mean() ** 2 - 3)
    assert math.isclose(out["2.kurtosis"], kurt, rel_tol=1e-9)
    assert math.isclose(out["2.std"], float(w64.std()), rel_tol=1e-9)


def test_bp_and_ss_angles() -> None:
    assert metrics.alignment(convert(_model(), "bp")[0])["mean_angle"] < 1e-3
    ss = metrics.alignment(convert(_model(), "ss")[0])
    assert ss["mean_sign_concordance"] == 1.0 and ss["mean_angle"] < 40


def test_alignment_unwraps_data_parallel() -> None:
    model, _ = convert(_model(), "fa")
    wrapped = nn.DataParallel(model)
    assert metrics.alignment(wrapped) == metrics.alignment(model)


def test_gradient_alignment() -> None:
    model, _ = convert(_model(), "fa")
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    out = metrics.gradient_alignment(model, (x, y), F.cross_entropy)
    assert out["2.grad_angle"] < 1e-3  # the top layer's gradient is local: exact
    assert 1 < out["0.grad_angle"] < 180  # its error came through the random B
    assert math.isclose(out["mean_grad_angle"], (out["0.grad_angle"] + out["2.grad_angle"]) / 2)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    bp = metrics.gradient_alignment(convert(_model(), "bp")[0], (x, y), F.cross_entropy)
    assert bp["mean_grad_angle"] < 1e-3


def _dropout_bn_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)
    )


def test_gradient_alignment_of_bp_is_zero_in_both_modes_and_modes_restored() -> None:
    """BP against itself: 0 degrees whether the probe runs in eval (running BN statistics,
    no dropout) or train mode (batch statistics, the same dropout masks in both passes)."""
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for training in (True, False):
        model = convert(_dropout_bn_model(), "bp")[0].train(training)
        model[1].train(not training)  # a module whose flag differs from its parent's
        stats = model[1].running_mean.clone()
        for mode in ("train", "eval"):
            out = metrics.gradient_alignment(model, (x, y), F.cross_entropy, mode=mode)
            assert out["0.grad_angle"] < 1e-3 and out["4.grad_angle"] < 1e-3, (mode, out)
        assert model.training is training and model[3].training is training
        assert model[1].training is (not training)
        assert torch.equal(model[1].running_mean, stats)
    fa = convert(_dropout_bn_model(), "fa")[0]
    assert metrics.gradient_alignment(fa, (x, y), F.cross_entropy)["0.grad_angle"] > 1
