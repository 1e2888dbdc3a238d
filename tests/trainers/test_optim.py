"""Batch Manhattan and the optimizer registry against hand-written update formulas."""

from __future__ import annotations

import torch

from trainers.optim import BatchManhattan, build_optimizer
from trainers.spec import OptimSpec


def test_batch_manhattan_with_momentum_and_weight_decay() -> None:
    lr, mu, wd = 0.1, 0.9, 0.01
    w0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    grads = [torch.tensor([0.3, -2.0, 0.0, 1e-6]), torch.tensor([-5.0, 0.1, 1.0, -1.0])]
    p = torch.nn.Parameter(w0.clone())
    opt = build_optimizer([p], OptimSpec(lr=lr, momentum=mu, weight_decay=wd, manhattan=True))
    w, v = w0.clone(), None
    for g in grads:
        p.grad = g.clone()
        opt.step()
        d = torch.sign(g) + wd * w
        v = d if v is None else mu * v + d
        w = w - lr * v
        torch.testing.assert_close(p.detach(), w)


def test_plain_sgd_unchanged_and_manhattan_idempotent() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([p], OptimSpec(lr=0.5, momentum=0.0, weight_decay=0.0))
    p.grad = torch.tensor([2.0, -4.0, 0.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.0, 3.0, 1.0]))
    assert BatchManhattan(BatchManhattan(opt)) is opt
    p.grad = torch.tensor([2.0, -4.0, 0.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.5, 3.5, 1.0]))


def test_adam_builds() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer([p], OptimSpec(name="adam", lr=1e-3))
    assert isinstance(opt, torch.optim.Adam)
    torch.optim.lr_scheduler.StepLR(BatchManhattan(opt), step_size=1)


def test_batch_manhattan_leaves_the_true_gradients() -> None:
    """After a Batch Manhattan step ``p.grad`` is the gradient backward() produced, not its
    sign (clipping logs, gradient alignment and hooks read it), and the step used the sign."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    w0 = model.weight.detach().clone()
    opt = build_optimizer(
        model.parameters(), OptimSpec(lr=0.1, momentum=0.0, weight_decay=0.0, manhattan=True)
    )
    model(torch.randn(8, 4)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert not all(torch.equal(g.abs(), torch.ones_like(g)) for g in grads)
    opt.step()
    for p, g in zip(model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)
    torch.testing.assert_close(model.weight.detach(), w0 - 0.1 * torch.sign(grads[0]))
