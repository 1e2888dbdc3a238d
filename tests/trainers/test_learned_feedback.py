"""The learned-feedback rules ``sa ia aa`` (Kunin et al. 2020) against hand-derived math.

Each primitive's gradient with respect to ``B`` (autograd of the primitive) equals its
closed form, written here from ``X`` (Linear) or the unfolded receptive fields ``U``
(Conv2d, with ``F.unfold``/``F.fold``), in float64. For a grouped conv the kernels are
written as block-diagonal matrices ``W_full`` over all input channels, so the dense
formulas apply and the gradient is read back on the blocks.
"""

from __future__ import annotations

import inspect
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers import rules
from trainers.metrics import alignment, angle
from trainers.optim import build_optimizer
from trainers.rules import RULES
from trainers.rules.learned import PRIMITIVES, ConvGeometry, ia_loss
from trainers.spec import OptimSpec

LEARNED = ["sa", "ia", "aa"]
CONVS = {
    "plain": dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1),
    "strided-dilated-groups": dict(kernel_size=3, stride=2, padding=2, dilation=2, groups=2),
}


def _full(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``(out, in*kh*kw)`` block-diagonal matrix of a grouped conv kernel."""
    out, cin_g = kernel.shape[:2]
    kk = kernel.shape[2] * kernel.shape[3]
    full = kernel.new_zeros(out, groups * cin_g * kk)
    og = out // groups
    for j in range(groups):
        full[j * og : (j + 1) * og, j * cin_g * kk : (j + 1) * cin_g * kk] = kernel[
            j * og : (j + 1) * og
        ].reshape(og, -1)
    return full


def _blocks(full: torch.Tensor, like: torch.Tensor, groups: int) -> torch.Tensor:
    """The kernel-shaped blocks of a block-diagonal ``(out, in*kh*kw)`` matrix."""
    out, cin_g = like.shape[:2]
    kk = like.shape[2] * like.shape[3]
    og = out // groups
    parts = [
        full[j * og : (j + 1) * og, j * cin_g * kk : (j + 1) * cin_g * kk] for j in range(groups)
    ]
    return torch.cat(parts).reshape(like.shape)


def closed_form(name: str, x, w, b, conf: dict | None) -> torch.Tensor:
    """``dR/dB`` of primitive ``name``, from the formulas of ``trainers/rules/learned.py``."""
    if name == "decay":
        return 2 * b
    if name == "self":
        return -w
    if conf is None:
        xs = x.reshape(-1, x.shape[-1])
        n, c = xs.shape[0], xs.t() @ xs
        if name == "sparse":
            return 2 / n * b @ c
        if name == "amp":
            return -1 / n * w @ c
        return 2 / n * w @ c @ w.t() @ b  # null
    groups = conf["groups"]
    k, geo = conf["kernel_size"], dict(dilation=conf["dilation"], padding=conf["padding"])
    geo["stride"] = conf["stride"]
    wf, bf = _full(w, groups), _full(b, groups)
    u = F.unfold(x, k, **geo)  # (N, in*k*k, L)
    n = x.shape[0]
    if name in ("sparse", "amp"):
        c = torch.einsum("nil,njl->ij", u, u)
        full = 2 / n * bf @ c if name == "sparse" else -1 / n * wf @ c
    else:  # null: (2/N) sum_n V_n unfold(r_n)^T, V_n = W U_n, r_n = fold(B^T V_n)
        v = wf @ u
        r = F.fold(bf.t() @ v, x.shape[2:], k, **geo)
        full = 2 / n * torch.einsum("nol,nil->oi", v, F.unfold(r, k, **geo))
    return _blocks(full, b, groups)


@pytest.mark.parametrize("name", list(PRIMITIVES))
@pytest.mark.parametrize("kind", ["linear", *CONVS])
def test_primitive_gradient_equals_its_closed_form(name: str, kind: str) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}{kind}".encode()))
    if kind == "linear":
        conf, geometry = None, None
        x = torch.randn(3, 4, 7, generator=gen, dtype=torch.float64)  # rows: 12 samples
        w = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    else:
        conf = CONVS[kind]
        g, k = conf["groups"], conf["kernel_size"]
        geometry = ConvGeometry(
            (conf["stride"],) * 2, (conf["padding"],) * 2, (conf["dilation"],) * 2, g
        )
        x = torch.randn(3, 4, 9, 8, generator=gen, dtype=torch.float64)
        w = torch.randn(6, 4 // g, k, k, generator=gen, dtype=torch.float64)
    b = torch.randn(w.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = PRIMITIVES[name]
    value = fn(w, b) if name in ("decay", "self") else fn(x, w, b, geometry)
    (grad,) = torch.autograd.grad(value, b)
    expected = closed_form(name, x, w, b.detach(), conf)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule", LEARNED)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_layer_b_gradient_is_its_rule_loss_gradient_whatever_the_task_loss(
    rule: str, kind: str
) -> None:
    """Inside a network, ``B.grad`` after ``loss.backward()`` is the closed-form gradient of
    the rule's loss on the layer's own input and weight: the task loss (two different ones
    here) and the other layers do not enter it; the input gradient is FA's with ``B``."""
    torch.manual_seed(0)
    params = {"alpha": 0.3, "beta": 0.2} | ({"gamma": 0.1} if rule == "ia" else {})
    conf = dict(kernel_size=3, stride=2, padding=1, dilation=1, groups=2)
    base = nn.Linear(6, 4) if kind == "linear" else nn.Conv2d(4, 4, **conf)
    net = nn.Sequential(nn.Tanh(), base, nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, 6) if kind == "linear" else torch.randn(5, 4, 6, 6)
    net(x)
    net, _ = rules.convert(net.double(), rule, seed=2, **params)
    layer = net[1]
    layer_in = torch.tanh(x.double())
    grads = []
    for scale in (1.0, 7.0):
        net.zero_grad()
        (scale * net(x.double()).square().sum()).backward()
        grads.append(layer.feedback.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    w, b = layer.weight.detach(), layer.feedback.detach()
    c = None if kind == "linear" else conf
    terms = {
        "sa": {"decay": params["alpha"], "self": params["beta"]},
        "ia": {"amp": params["alpha"], "null": params["beta"], "decay": params.get("gamma")},
        "aa": {"sparse": params["alpha"], "amp": params["beta"]},
    }[rule]
    expected = sum(coef * closed_form(n, layer_in, w, b, c) for n, coef in terms.items())
    torch.testing.assert_close(grads[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", LEARNED)
def test_an_inplace_relu_may_follow_the_layer(rule: str) -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    model, _ = rules.convert(model, rule)
    model(torch.randn(3, 4, requires_grad=True)).sum().backward()
    assert model[0].feedback.grad is not None and model[0].weight.grad is not None


def test_ia_loss_sees_only_the_layers_own_tensors() -> None:
    """By construction: IA's loss takes the layer's input, weight, feedback and geometry
    (plus its coefficients), nothing from another layer, and the layer calls it with its
    own tensors."""
    params = list(inspect.signature(ia_loss).parameters)
    assert params == ["x", "weight", "feedback", "conv", "alpha", "beta", "gamma", "response"]
    layer = RULES["ia"].from_layer(nn.Linear(5, 3), seed=1, name="fc")
    assert type(layer).loss is ia_loss
    x = torch.randn(4, 5)
    own = ia_loss(x, layer.weight, layer.feedback, None, alpha=2e-3, beta=1e-3, gamma=1e-3)
    torch.testing.assert_close(layer.local_loss(x), own)
    # T_W x taken from the layer's output (less its bias) gives the same loss, conv too
    for rule in ("ia", "aa"):
        for base, inp in ((nn.Linear(5, 3), x), (nn.Conv2d(3, 4, 3, padding=1), None)):
            layer = RULES[rule].from_layer(base, seed=1, name="l").double()
            inp = torch.randn(2, 3, 5, 5, dtype=torch.float64) if inp is None else inp.double()
            y = layer.stock_forward(inp)
            torch.testing.assert_close(layer.local_loss(inp, y), layer.local_loss(inp))


def _train_b_alone(layer: nn.Module, steps: int, lr: float) -> None:
    """SGD on the rule's loss only (``W`` fixed), through the layer's own forward/backward."""
    layer.weight.requires_grad_(False)
    opt = torch.optim.SGD([layer.feedback], lr=lr)
    x_shape = (16, layer.in_features) if isinstance(layer, nn.Linear) else (4, 3, 6, 6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(x_shape, generator=gen)
        opt.zero_grad()
        (layer(x) * 0).sum().backward()  # no task gradient: B learns by its loss alone
        opt.step()
        rules.after_step(layer)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_sa_aligns_b_with_w_below_ten_degrees_and_not_without_beta(kind: str) -> None:
    angles = {}
    for beta in (2e-3, 0.0):
        torch.manual_seed(0)
        base = nn.Linear(30, 20) if kind == "linear" else nn.Conv2d(3, 8, 3)
        layer = RULES["sa"].from_layer(base, seed=1, name="l", beta=beta)
        start = angle(layer.weight, layer.feedback)
        _train_b_alone(layer, steps=20, lr=100.0)  # B <- B - lr (2 alpha B - beta W)
        angles[beta] = angle(layer.weight, layer.feedback)
    assert start > 60
    assert angles[2e-3] < 10 < angles[0.0]


def test_ia_and_aa_align_b_with_w_on_a_fixed_w() -> None:
    for rule in ("ia", "aa"):
        torch.manual_seed(0)
        layer = RULES[rule].from_layer(nn.Linear(12, 8), seed=1, name="l")
        start = angle(layer.weight, layer.feedback)
        _train_b_alone(layer, steps=150, lr=20.0)
        assert angle(layer.weight, layer.feedback) < min(20.0, start / 3), rule


def test_schedule_delays_then_ramps_the_loss() -> None:
    layer = RULES["ia"].from_layer(nn.Linear(4, 3), delay_steps=2, warmup_steps=4)
    scales = []
    for _ in range(8):
        scales.append(float(layer.schedule_scale()))
        rules.after_step(layer)
    assert scales == [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        RULES["sa"].from_layer(nn.Linear(4, 3), warmup_steps=-1)


def test_feedback_gets_its_own_group_without_weight_decay() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    model, _ = rules.convert(model, "aa", feedback_lr=0.5)
    opt = build_optimizer(rules.param_groups(model), OptimSpec(lr=0.1, weight_decay=1e-4))
    main, fb = opt.param_groups
    assert (main["lr"], main["weight_decay"]) == (0.1, 1e-4)
    assert (fb["lr"], fb["weight_decay"]) == (0.5, 0.0)
    assert {id(p) for p in fb["params"]} == {id(model[0].feedback), id(model[2].feedback)}
    assert len(main["params"]) == 4
    assert len(rules.param_groups(rules.convert(model, "fa")[0])) == 1


def _mlp_run(steps: int, state: dict | None = None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model, _ = rules.convert(model, "ia", seed=3, warmup_steps=3, delay_steps=1)
    opt = build_optimizer(rules.param_groups(model), OptimSpec(lr=0.1, momentum=0.9))
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    start = int(model[0].feedback_steps)
    for i in range(start, start + steps):
        gen = torch.Generator().manual_seed(i)
        x, y = torch.randn(5, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        rules.after_step(model)
    return model, opt


def test_checkpoint_resume_is_exact() -> None:
    straight, _ = _mlp_run(6)
    half, opt = _mlp_run(3)
    state = {"model": half.state_dict(), "optimizer": opt.state_dict()}
    assert "0.feedback" in state["model"] and int(state["model"]["0.feedback_steps"]) == 3
    resumed, _ = _mlp_run(3, state)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert "mean_angle" in alignment(resumed)
