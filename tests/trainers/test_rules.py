"""Every registered rule against the hand-written formulas of papers.md.

Linear: ``grad_x = grad_y @ B``, ``grad_W = grad_y^T x``, ``grad_b = sum grad_y``.
Conv2d: ``grad_x = conv2d_input(B, grad_y)``, ``grad_W = conv2d_weight(x, grad_y)``.
``B`` is the layer's ``backward_weight()``, read after the forward pass.
"""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("rule", ["fa", "ss", "kp", "pfa"])
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


# --- rule-specific math ------------------------------------------------------------------


def test_dfa_hidden_errors_come_from_output_error() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    net, counts = convert(net, "dfa", seed=2)
    assert counts == {"Linear": 3, "Conv2d": 0}
    x = torch.randn(4, 6, requires_grad=True)
    t = torch.tensor([0, 2, 1, 2])
    logits = net(x)
    F.cross_entropy(logits, t).backward()
    e = (torch.softmax(logits.detach(), 1) - F.one_hot(t, 3)) / 4  # dL/dlogits by hand
    l1, l2, l3 = net[0], net[2], net[4]
    d1, d2, d3 = l1.feedback_direct, l2.feedback_direct, l3.feedback_direct
    assert d1.shape == (3, 6) and d2.shape == (3, 7) and d3.shape == l3.weight.shape
    with torch.no_grad():
        a1 = l1.stock_forward(x)
        h1 = torch.relu(a1)
        a2 = l2.stock_forward(h1)
        h2 = torch.relu(a2)
    delta2 = (e @ d3) * (a2 > 0)
    delta1 = (e @ d2) * (a1 > 0)
    torch.testing.assert_close(l3.weight.grad, e.t() @ h2)
    torch.testing.assert_close(l2.weight.grad, delta2.t() @ h1)
    torch.testing.assert_close(l1.weight.grad, delta1.t() @ x.detach())
    torch.testing.assert_close(x.grad, e @ d1)


def test_dfa_conv_and_last_layer_bp() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    net, counts = convert(net, "dfa", last_layer="bp")
    assert counts == {"Linear": 0, "Conv2d": 1}
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    logits = net(x)
    g = torch.randn_like(logits)
    logits.backward(g)
    torch.testing.assert_close(x.grad, (g @ net[0].feedback_direct).view_as(x))
    state = net.state_dict()
    fresh = convert(
        nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4)),
        "dfa",
        last_layer="bp",
    )[0]
    fresh.load_state_dict(state)
    assert torch.equal(fresh[0].feedback_direct, net[0].feedback_direct)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_kp_and_pfa_feedback_gradients(kind: str) -> None:
    """kp: ``dB = dW``;  pfa: the path ``P = B^T R^T`` gets ``B^T (B dW)``, R's gradient
    ``dR^T = B dW`` seen through ``B^T``; pfa_o: ``B^T B = I``, so ``dP = dW``."""
    torch.manual_seed(0)
    base = nn.Linear(6, 4) if kind == "linear" else nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 6) if kind == "linear" else torch.randn(2, 3, 5, 5)
    kp = RULES["kp"].from_layer(base)
    kp(x).square().sum().backward()
    torch.testing.assert_close(kp.feedback.grad, kp.weight.grad)
    for rule in ("pfa", "pfa_o"):
        base.weight.grad = None
        pfa = RULES[rule].from_layer(base, expansion=2, seed=5, name="l")
        b, r_t = _pfa_initial_b_and_r(pfa, expansion=2, seed=5, name="l")
        assert b.shape == (8, 4) and pfa.feedback_path.shape == base.weight.shape
        torch.testing.assert_close(pfa.backward_weight(), (b.t() @ r_t).view_as(base.weight))
        pfa(x).square().sum().backward()
        expected = (b.t() @ b @ pfa.weight.grad.flatten(1)).view_as(pfa.weight)
        torch.testing.assert_close(pfa.feedback_path.grad, expected, atol=1e-5, rtol=1e-4)


def _pfa_initial_b_and_r(
    layer: nn.Module, *, expansion: float, seed: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's ``B`` (``E x n_out``) and initial ``R^T`` (``E x fan_in``), drawn again
    from the layer's seed as the paper's rule holds them."""
    from trainers.rules.base import draw_normal, init_scale, layer_seed

    gen = torch.Generator().manual_seed(layer_seed(seed, name))
    w = layer.weight
    n_expand = round(expansion * w.shape[0])
    b = layer.draw_expansion(n_expand, gen)
    r_t = draw_normal((n_expand, *w.shape[1:]), gen, w, init_scale(w))
    return b, r_t.flatten(1)


def _teacher_problem(rule: str, steps: int, **params) -> nn.Module:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))
    student = convert(
        nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5)), rule, **params
    )[0]
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(32, 10)
        with torch.no_grad():
            y = teacher(x)
        loss = F.mse_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rules.after_step(student)
    return student


def test_kp_aligns_below_one_degree_with_decay() -> None:
    from trainers.metrics import alignment

    student = _teacher_problem("kp", 300, decay=0.03)
    out = alignment(student)
    assert out["0.angle"] < 1.0 and out["2.angle"] < 1.0, out


def test_kp_defaults_converge_without_weight_decay() -> None:
    """Kolen-Pollack with its default decay and optimizer weight decay 0: W and B take the
    same updates, so ``W - B`` contracts exactly as ``(1 - decay)^t`` (Akrout et al.'s
    eq. 14) and the angle between them falls."""
    from trainers.metrics import angle

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))
    student = convert(nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5)), "kp")[0]
    decay = student[0].decay
    assert decay > 0
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0)
    layer = student[0]
    gap0 = float((layer.weight - layer.feedback).detach().norm())
    angle0 = angle(layer.weight, layer.feedback)
    steps = 3000
    for _ in range(steps):
        x = torch.randn(32, 10)
        loss = F.mse_loss(student(x), teacher(x).detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        rules.after_step(student)
    gap = float((layer.weight - layer.feedback).detach().norm())
    assert math.isclose(gap / gap0, (1 - decay) ** steps, rel_tol=1e-3)
    assert angle(layer.weight, layer.feedback) < angle0 - 5


def test_wm_mirror_phase_drives_angle_down() -> None:
    from trainers.metrics import alignment

    torch.manual_seed(0)
    for base in (nn.Linear(16, 8), nn.Conv2d(4, 6, 3, dilation=2, groups=2)):
        layer = RULES["wm"].from_layer(base, mirror_batch=128, mirror_lr=0.1)
        before = alignment(nn.Sequential(layer))["0.angle"]
        for _ in range(60):
            layer.after_step()
        after = alignment(nn.Sequential(layer))["0.angle"]
        assert before > 60 and after < 25, (before, after)


@pytest.mark.slow
def test_wm_defaults_align_a_resnet18_layer4_sized_layer() -> None:
    """ResNet-18's widest layer (fan-in 512 * 3 * 3 = 4608, 512 outputs), W fixed, driven
    by the per-step hook: with the default schedule (a mirror phase every 4 optimizer steps,
    mirror batch = fan-in) B comes within 10 degrees of W inside 4,000 steps (the old fixed
    64-sample batch stalled near 63 degrees). Expected: ``atan(sqrt(1 / t))`` after phase
    ``t`` while the rate is a running mean, then the exponential average's steady state
    ``atan(sqrt(eta / (2 - eta)))`` = 8.1 degrees: about 33 phases."""
    from trainers.metrics import angle

    torch.manual_seed(0)
    layer = RULES["wm"].from_layer(nn.Linear(4608, 512, bias=False), seed=0, name="layer4")
    assert layer.schedule.batch == 4608 and layer.schedule.every == 4  # mirror batch = fan-in
    start = angle(layer.weight, layer.backward_weight())
    steps = None
    for t in range(1, 4001):
        layer.after_step()
        if (t - 1) % 4 == 0 and angle(layer.weight, layer.backward_weight()) < 10.0:
            steps = t
            break
    assert start > 80 and steps is not None, (start, steps)
    phases = int(layer.mirror_count)
    assert phases == (steps + 3) // 4  # a phase after steps 1, 5, 9, ...
    assert 20 <= phases <= 60, phases  # the variance formula, not luck


@pytest.mark.parametrize("every", [1, 4, 5])
def test_wm_forgets_at_the_same_rate_per_optimizer_step_whatever_k(every: int) -> None:
    """``mirror_lr`` is a rate per optimizer step: with ``W = 0`` (every estimate 0) and
    the running-mean start over, ``B`` shrinks by ``(1 - mirror_lr)^t`` after ``t`` steps
    that end a mirror cycle, whether it mirrors every step or every ``K``."""
    layer = RULES["wm"].from_layer(nn.Linear(8, 3), mirror_every=every, mirror_lr=0.03)
    with torch.no_grad():
        layer.weight.zero_()
    layer.mirror_count.fill_(1000)
    b0 = layer.feedback.clone()
    for _ in range(20 * every):
        layer.after_step()
    assert int(layer.mirror_count) == 1020
    torch.testing.assert_close(layer.feedback, b0 * 0.97 ** (20 * every))


def test_wm_resumes_its_schedule_from_the_state_dict() -> None:
    """A checkpoint taken between mirror phases, loaded into a fresh layer, continues the
    same noise sequence and phase timing: B ends as in the uninterrupted run."""
    torch.manual_seed(0)
    base = nn.Conv2d(3, 4, 3)
    run = RULES["wm"].from_layer(base, seed=2, name="c", mirror_every=3)
    for _ in range(7):
        run.after_step()
    state = {k: v.clone() for k, v in run.state_dict().items()}
    for _ in range(8):
        run.after_step()
    resumed = RULES["wm"].from_layer(nn.Conv2d(3, 4, 3), seed=2, name="c", mirror_every=3)
    resumed.load_state_dict(state)
    for _ in range(8):
        resumed.after_step()
    assert int(resumed.mirror_count) == int(run.mirror_count) == 5
    assert torch.equal(resumed.feedback, run.feedback)


@pytest.mark.parametrize("p", [1.0, 0.75, 0.5])
def test_sc_sign_concordance_within_two_points(p: float) -> None:
    from trainers.metrics import alignment

    torch.manual_seed(0)
    net = convert(nn.Sequential(nn.Linear(64, 64), nn.Conv2d(16, 32, 3)), "sc", p=p)[0]
    out = alignment(net)
    assert abs(out["0.sign_concordance"] - p) < 0.02
    assert abs(out["1.sign_concordance"] - p) < 0.02
    with torch.no_grad():  # concordance is with W's current sign
        net[0].weight.neg_()
    assert abs(alignment(net)["0.sign_concordance"] - p) < 0.02


def test_brsf_redraws_every_training_batch() -> None:
    base = nn.Linear(5, 4)  # two "ranks" holding the same weights
    layer = RULES["brsf"].from_layer(base, seed=1, name="fc")
    twin = RULES["brsf"].from_layer(base, seed=1, name="fc")
    draws = []
    for _ in range(3):
        layer(torch.randn(2, 5))
        twin(torch.randn(2, 5))
        assert torch.equal(layer.feedback_magnitude, twin.feedback_magnitude)
        draws.append(layer.feedback_magnitude.clone())
    assert not torch.equal(draws[0], draws[1]) and int(layer.feedback_step) == 4
    layer.eval()
    layer(torch.randn(2, 5))
    assert torch.equal(layer.feedback_magnitude, draws[-1])


def _path_angle(w: torch.Tensor, bw: torch.Tensor) -> float:
    from trainers.metrics import angle

    return angle(w, bw)


def test_pfa_path_alignment_improves_with_expansion_and_fits_prediction() -> None:
    """With ``R^T = B W`` (decayed initialisation), ``cos(W, B^T B W) ~ sqrt(r/(1+r))``.

    The random-matrix prediction (Proposition 3 of Ji-An & Benna): ``B^T B`` has
    Marchenko-Pastur spectrum with mean 1 and second moment ``1 + 1/r``.
    """
    import math

    torch.manual_seed(0)
    base = nn.Linear(256, 100)
    angles = []
    for r in (1, 4, 16):
        layer = RULES["pfa"].from_layer(base, expansion=r, seed=r)
        b, _ = _pfa_initial_b_and_r(layer, expansion=r, seed=r, name="")
        with torch.no_grad():  # R^T = B W, so the path B^T R^T is B^T B W
            layer.feedback_path.copy_(b.t() @ b @ layer.weight)
        a = _path_angle(layer.weight, layer.backward_weight())
        predicted = math.degrees(math.acos(math.sqrt(r / (1 + r))))
        assert abs(a - predicted) < 3.0, (r, a, predicted)
        angles.append(a)
    assert angles[0] > angles[1] > angles[2]
    ortho = RULES["pfa_o"].from_layer(base)
    b, _ = _pfa_initial_b_and_r(ortho, expansion=1, seed=0, name="")
    with torch.no_grad():  # orthonormal B: B^T B W = W
        ortho.feedback_path.copy_(b.t() @ (b @ ortho.weight))
    assert _path_angle(ortho.weight, ortho.backward_weight()) < 0.1


def test_pfa_trained_path_alignment_improves() -> None:
    from trainers.metrics import alignment

    small = alignment(_teacher_problem("pfa", 150, expansion=1, decay=0.03))
    large = alignment(_teacher_problem("pfa", 150, expansion=8, decay=0.03))
    assert large["mean_angle"] < small["mean_angle"]


@pytest.mark.parametrize("rule", ["fa", "ss", "kp", "pfa"])
def test_first_layer_without_input_grad_keeps_local_weight_grad(rule: str) -> None:
    layer = _linear(rule)
    x = torch.randn(3, 6)  # no requires_grad: the matrix is not needed, the weight grad is
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(layer.weight.grad, g.t() @ x)
    if rule == "kp":
        torch.testing.assert_close(layer.feedback.grad, layer.weight.grad)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_name,rule",
    [
        ("mlp", "dfa"),
        ("convnet", "kp"),
        ("resnet20", "pfa"),
        ("resnet20", "dfa"),
        ("resnet18", "ss"),
        ("alexnet_bn", "pfa"),
    ],
)
def test_convert_model_zoo_roundtrip(model_name: str, rule: str) -> None:
    """A BP state_dict loads into the converted model, and its BP part loads back."""
    from trainers.models import build_model

    size = 64 if model_name == "alexnet_bn" else 16
    torch.manual_seed(0)
    bp = build_model(model_name, num_classes=5, image_size=size)
    torch.manual_seed(0)
    params = {"expansion": 0.25} if rule == "pfa" else {}  # AlexNet's FC layers are large
    model = build_model(model_name, num_classes=5, image_size=size)
    net, counts = convert(model, rule, **params)
    assert counts["Linear"] + counts["Conv2d"] == sum(
        isinstance(m, nn.Linear | nn.Conv2d) for m in bp.modules()
    )
    net.load_state_dict(bp.state_dict())
    x = torch.randn(2, 3, size, size)
    F.cross_entropy(net(x), torch.tensor([0, 4])).backward()
    assert all(p.grad is not None for p in net.parameters())
    plain = {k: v for k, v in net.state_dict().items() if k in bp.state_dict()}
    bp.load_state_dict(plain)


@pytest.mark.slow
def test_convert_torchvision_retinanet() -> None:
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)
    det = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64
    )
    n_conv = sum(isinstance(m, nn.Conv2d) for m in det.modules())
    det, counts = convert(det, "ss")
    assert counts == {"Linear": 0, "Conv2d": n_conv}
    det.train()
    target = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]
    losses = det([torch.rand(3, 64, 64)], target)
    sum(losses.values()).backward()
    assert det.head.classification_head.cls_logits.weight.grad is not None


@pytest.mark.parametrize("rule", ["pfa", "pfa_o"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_pfa_path_equals_r_trained_by_hand_in_float64(rule: str, kind: str) -> None:
    """The rule as papers.md states it, in float64: backward ``delta_x = R B delta``; ``R``
    learns by ``dR^T = B dW`` with SGD (momentum 0.9, weight decay) and the ``decay`` param
    shrinks ``W`` and ``R`` after each step. The layer, which keeps only ``P = B^T R^T``,
    uses the same backward matrix at every step."""
    torch.manual_seed(0)
    base = (nn.Linear(7, 5) if kind == "linear" else nn.Conv2d(3, 5, 3, padding=1)).double()
    expansion = 3 if rule == "pfa" else 1
    layer = RULES[rule].from_layer(base, expansion=expansion, decay=0.01, seed=4, name="l")
    b, r_t = _pfa_initial_b_and_r(layer, expansion=expansion, seed=4, name="l")
    w, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    lr, mom, wd, decay = 0.1, 0.9, 1e-3, 0.01
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    vel = {"w": torch.zeros_like(w), "b": torch.zeros_like(bias), "r": torch.zeros_like(r_t)}
    shape = (4, 7) if kind == "linear" else (2, 3, 6, 6)
    args = (1, 1, 1, 1)  # conv stride, padding, dilation, groups
    for _ in range(6):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        y = layer(x)
        g = torch.randn_like(y)
        y.backward(g)
        bw = (b.t() @ r_t).view_as(w)  # by hand: B^T R^T
        if kind == "linear":
            torch.testing.assert_close(x.grad, g @ bw, rtol=1e-10, atol=1e-12)
            dw, db = g.t() @ x.detach(), g.sum(0)
        else:
            grad_x = torch.nn.grad.conv2d_input(x.shape, bw, g, *args)
            torch.testing.assert_close(x.grad, grad_x, rtol=1e-10, atol=1e-12)
            dw, db = torch.nn.grad.conv2d_weight(x.detach(), w.shape, g, *args), g.sum((0, 2, 3))
        opt.step()
        opt.zero_grad()
        rules.after_step(layer)
        with torch.no_grad():  # SGD by hand: v <- mu v + (grad + wd p); p <- p - lr v
            for key, p, grad in (("w", w, dw), ("b", bias, db), ("r", r_t, b @ dw.flatten(1))):
                vel[key].mul_(mom).add_(grad + wd * p)
                p.sub_(lr * vel[key])
            w.mul_(1 - decay)
            r_t.mul_(1 - decay)
    torch.testing.assert_close(layer.weight.detach(), w, rtol=1e-10, atol=1e-12)
    bw = (b.t() @ r_t).view_as(w)
    torch.testing.assert_close(layer.backward_weight().detach(), bw, rtol=1e-10, atol=1e-12)


def test_bench_rules_times_every_rule_beside_bp_per_image_size() -> None:
    from trainers.benchmarks.rules import bench_rules, format_table

    rows = bench_rules(
        ("mlp",), ["fa", "wm"], image_sizes=(8, 12), steps=2, warmup=0, batch_size=2,
        num_classes=10, world=4,
    )  # fmt: skip
    assert [(r["image_size"], r["rule"]) for r in rows] == [
        (8, "bp"), (8, "fa"), (8, "wm"), (12, "bp"), (12, "fa"), (12, "wm"),
    ]  # fmt: skip
    assert all(r["device"] == "cpu" and not r["amp"] and r["world"] == 4 for r in rows)
    for r in rows:
        assert r["median_ms"] > 0 and 0 <= r["update_share"] < 1
        assert r["ratio"] == 1.0 or r["rule"] != "bp"
    table = format_table(rows)
    assert "| wm |" in table and "mlp 12px median (x bp)" in table and "update share" in table


def test_wm_tradeoff_angle_follows_the_estimator_variance() -> None:
    """Steady-state angle ``atan(sqrt(rate / (2 - rate)))`` at mirror batch = fan-in, and
    ``K`` times the rate per iteration for ``K`` times fewer noise samples per step."""
    from trainers.benchmarks.rules import bench_mirror_tradeoff

    rows = bench_mirror_tradeoff((32, 128), (1, 4), n_out=16, mirror_lr=0.1)
    assert [(r["fan_in"], r["every"]) for r in rows] == [(32, 1), (32, 4), (128, 1), (128, 4)]
    for r in rows:
        expected = math.degrees(math.atan(math.sqrt(r["rate"] / (2 - r["rate"]))))
        assert r["predicted"] == pytest.approx(expected)
        assert abs(r["angle"] - expected) < 0.1 * expected, r
        assert r["noise_per_step"] == r["fan_in"] / r["every"]
    assert rows[1]["angle"] > rows[0]["angle"] and rows[3]["angle"] > rows[2]["angle"]


def test_wm_tradeoff_is_plotted_from_its_rows(tmp_path) -> None:
    from PIL import Image

    from trainers.benchmarks.rules import bench_mirror_tradeoff, plot_mirror_tradeoff

    rows = bench_mirror_tradeoff((32,), (1, 4), n_out=8, mirror_lr=0.2)
    plot_mirror_tradeoff(rows, tmp_path / "tradeoff.png")
    with Image.open(tmp_path / "tradeoff.png") as image:
        assert image.format == "PNG" and min(image.size) > 300


def test_bench_rules_defaults_are_one_worker_of_the_shipped_imagenet_specs() -> None:
    """224 px, per-worker batch = batch_size / scale.workers, wm's share 1 / workers."""
    from pathlib import Path

    from trainers.benchmarks.rules import DEFAULTS
    from trainers.spec import parse_yaml

    root = Path(__file__).resolve().parents[2] / "specs"
    specs = [parse_yaml(p.read_text()) for p in sorted(root.glob("*resnet18*.yaml"))]
    assert len(specs) >= 3
    for spec in specs:
        assert spec["data"]["image_size"] in DEFAULTS["image_sizes"]
        assert spec["batch_size"] // spec["scale"]["workers"] == DEFAULTS["batch_size"]
        assert spec["scale"]["workers"] == DEFAULTS["world"]
    assert DEFAULTS["models"] == ("resnet18",)


def test_bench_rules_cli_names_a_bad_image_size_list() -> None:
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, ["bench", "rules", "--image-sizes", "224,big"])
    assert result.exit_code != 0
    assert "--image-sizes" in result.output and "224,big" in result.output


@pytest.mark.parametrize("rule", ["fa", "dfa", "kp"])
def test_convert_bare_layer(rule: str) -> None:
    layer, counts = convert(nn.Linear(3, 2), rule)
    assert isinstance(layer, RULES[rule].Linear) and counts == {"Linear": 1, "Conv2d": 0}
    x = torch.randn(4, 3, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None
    kept, counts = convert(nn.Linear(3, 2), rule, last_layer="bp")
    assert kept.rule_name == "bp" and counts == {"Linear": 0, "Conv2d": 0}


def test_pfa_loads_a_checkpoint_of_the_former_r_layout() -> None:
    """A state_dict holding ``B`` (``feedback_expand``) and ``R^T`` (``feedback_r``), as pfa
    layers saved them before the path was kept, loads with the path ``B^T R^T``."""
    torch.manual_seed(0)
    layer = RULES["pfa"].from_layer(nn.Conv2d(2, 3, 3), expansion=2)
    b, r_t = torch.randn(6, 3), torch.randn(6, 2, 3, 3)
    old = {"weight": layer.weight.detach(), "bias": layer.bias.detach()}
    layer.load_state_dict({**old, "feedback_expand": b, "feedback_r": r_t})
    expected = (b.t() @ r_t.flatten(1)).view_as(layer.weight)
    torch.testing.assert_close(layer.backward_weight().detach(), expected)
    torch.testing.assert_close(layer.feedback_gram, b.t() @ b)
