"""Every registered rule against the hand-written formulas of papers.md.

Linear: ``grad_x = grad_y @ B``, ``grad_W = grad_y^T x``, ``grad_b = sum grad_y``.
Conv2d: ``grad_x = conv2d_input(B, grad_y)``, ``grad_W = conv2d_weight(x, grad_y)``.
``B`` is the layer's ``backward_weight()``, read after the forward pass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers import rules
from trainers.rules import RULES, convert

WITH_MATRIX = [name for name, cls in RULES.items() if cls.has_backward_weight]

CONV_CONFIGS = [
    dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1, bias=True),
    dict(kernel_size=3, stride=2, padding=2, dilation=2, groups=2, bias=False),
    dict(kernel_size=(1, 3), stride=(2, 1), padding=0, dilation=1, groups=1, bias=True),
]


def _linear(rule: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return RULES[rule].from_layer(nn.Linear(6, 5), seed=1, name="fc", **params)


@pytest.mark.parametrize("rule", WITH_MATRIX)
@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 6)])
def test_linear_grads_follow_formula(rule: str, shape: tuple[int, ...]) -> None:
    layer = _linear(rule)
    assert isinstance(layer, nn.Linear)
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    b = layer.backward_weight().detach().clone()
    assert b.shape == layer.weight.shape
    y.backward(g)
    torch.testing.assert_close(x.grad, g @ b)
    g2, x2 = g.reshape(-1, 5), x.detach().reshape(-1, 6)
    torch.testing.assert_close(layer.weight.grad, g2.t() @ x2)
    torch.testing.assert_close(layer.bias.grad, g2.sum(0))
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("rule", WITH_MATRIX)
@pytest.mark.parametrize("conf", CONV_CONFIGS, ids=["plain", "strided-dilated-groups", "rect"])
def test_conv2d_grads_follow_formula(rule: str, conf: dict) -> None:
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, **conf)
    layer = RULES[rule].from_layer(base, seed=1, name="conv")
    assert isinstance(layer, nn.Conv2d)
    x = torch.randn(2, 4, 9, 8, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    b = layer.backward_weight().detach().clone()
    assert b.shape == layer.weight.shape
    y.backward(g)
    args = (layer.stride, layer.padding, layer.dilation, layer.groups)
    torch.testing.assert_close(x.grad, torch.nn.grad.conv2d_input(x.shape, b, g, *args))
    torch.testing.assert_close(
        layer.weight.grad, torch.nn.grad.conv2d_weight(x.detach(), layer.weight.shape, g, *args)
    )
    if conf["bias"]:
        torch.testing.assert_close(layer.bias.grad, g.sum((0, 2, 3)))
    torch.testing.assert_close(y, F.conv2d(x, layer.weight, layer.bias, *args))


@pytest.mark.parametrize("rule", WITH_MATRIX)
def test_conv2d_padding_mode_reflect(rule: str) -> None:
    """Non-zero padding modes pad first; the formula holds on the padded input."""
    torch.manual_seed(0)
    layer = RULES[rule].from_layer(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, layer.stock_forward(x))
    g = torch.randn_like(y)
    b = layer.backward_weight().detach().clone()
    y.backward(g)
    grad_padded = torch.nn.grad.conv2d_input((2, 3, 8, 8), b, g)
    xr = x.detach().clone().requires_grad_()
    F.pad(xr, (1, 1, 1, 1), mode="reflect").backward(grad_padded)  # stock pad adjoint
    torch.testing.assert_close(x.grad, xr.grad)


def test_bp_equals_stock_autograd_exactly() -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5))
    model = convert(ref_copy := _clone(ref), "bp")[0]
    x = torch.randn(3, 3, 8, 8)
    for net in (ref, model):
        F.cross_entropy(net(x), torch.tensor([0, 1, 2])).backward()
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), model.named_parameters(), strict=True):
        assert n1 == n2
        assert torch.equal(p1.grad, p2.grad), n1
    assert ref_copy is model


def _clone(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 8),
        nn.ReLU(),
        nn.Sequential(nn.Linear(8, 4)),
    )


@pytest.mark.parametrize("rule", list(RULES))
def test_convert_counts_keeps_weights_and_loads_bp_state(rule: str) -> None:
    model = _mlp()
    bp_state = {k: v.clone() for k, v in model.state_dict().items()}
    model, counts = convert(model, rule, seed=3)
    assert counts == {"Linear": 2, "Conv2d": 1}
    assert all(isinstance(m, rules.FeedbackLayer) for m in (model[0], model[3], model[5][0]))
    for key, value in bp_state.items():
        assert torch.equal(model.state_dict()[key], value)
    model.load_state_dict(bp_state)  # strict: missing feedback keys keep their values
    out = model(torch.randn(2, 1, 6, 6))
    assert out.shape == (2, 4)


def test_convert_last_layer_bp() -> None:
    model, counts = convert(_mlp(), "fa", last_layer="bp")
    assert counts == {"Linear": 1, "Conv2d": 1}
    assert model[5][0].rule_name == "bp" and model[3].rule_name == "fa"


def test_convert_unknown_rule_and_param() -> None:
    with pytest.raises(ValueError, match="valid rules: .*fa"):
        convert(_mlp(), "nope")
    with pytest.raises(ValueError, match="unknown params"):
        convert(_mlp(), "fa", wrong=1)


def test_register_rule_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        rules.register_rule("fa")(type("Again", (rules.FeedbackLayer,), {}))


def test_feedback_seeded_by_seed_and_name() -> None:
    a = convert(_mlp(), "fa", seed=0)[0]
    b = convert(_mlp(), "fa", seed=0)[0]
    c = convert(_mlp(), "fa", seed=1)[0]
    assert torch.equal(a[3].feedback, b[3].feedback)
    assert not torch.equal(a[3].feedback, c[3].feedback)
    assert not torch.equal(a[0].feedback.flatten()[:8], a[3].feedback.flatten()[:8])


def test_ss_is_scaled_sign() -> None:
    layer = _linear("ss")
    s = float(layer.weight.detach().double().std())
    torch.testing.assert_close(layer.backward_weight(), s * torch.sign(layer.weight))


def test_eval_without_grad_uses_stock_forward() -> None:
    layer = _linear("fa")
    x = torch.randn(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("rule", ["fa", "ss"])
def test_autocast_bfloat16(rule: str) -> None:
    layer = _linear(rule)
    conv = RULES[rule].from_layer(nn.Conv2d(2, 3, 3))
    x = torch.randn(4, 6, requires_grad=True)
    xc = torch.randn(2, 2, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        yc = conv(xc)
    assert y.dtype == torch.bfloat16
    (y.float().sum() + yc.float().sum()).backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    assert xc.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    ref = torch.ones(4, 5) @ layer.backward_weight().detach()
    torch.testing.assert_close(x.grad, ref, atol=0.05, rtol=0.02)
