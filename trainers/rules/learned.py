"""``sa`` / ``ia`` / ``aa``: learned feedback as layer-wise regularizers (Kunin, Nayebi,
Sagastuy-Brena, Ganguli, Bloom, Yamins 2020, "Two Routes to Scalable Credit Assignment
without Weight Symmetry"; their code: neuroailab/Neural-Alignment).

The rule. The backward matrix ``B`` (a parameter shaped like ``W``, initialised like
``fa``'s) stands where BP uses ``W``; it learns by gradient descent on its own local loss
``R(x, W, B)`` built from the primitives below. ``x`` is the layer's own input (detached:
no gradient into the forward pass) and ``W`` its own weight (detached: ``R`` moves ``B``
only). ``W`` still learns from the task loss alone.

Primitives, in bioprop's shapes (``W``, ``B``: ``(out, in)``, ``grad_x = grad_y B``; the
authors' TensorFlow kernels are ``K = W^T`` and, for a dense layer, ``Kb = B``). ``T_W x``
is the layer's linear map without bias (``W x`` for a Linear, ``conv2d(x, W)`` for a
Conv2d), ``T_B^T`` the transposed map of ``B`` (``B^T v``; ``conv_transpose2d(v, B)``), and
``mean_n`` the mean over the batch (every leading row of a Linear input counts as a
sample) of a sum over all the output's entries:

- ``decay = ||W||^2 + ||B||^2``                        ``dR/dB = 2 B``
- ``self = -<W, B>`` (their ``-tr(K^T Kb)``)           ``dR/dB = -W``
- ``sparse = mean_n ||T_W x||^2 + ||T_B x||^2``         ``dR/dB = (2/N) B C``
- ``amp = -mean_n <T_B x, T_W x>``                      ``dR/dB = -(1/N) W C``
- ``null = mean_n ||T_B^T T_W x||^2``                   ``dR/dB = (2/N) W X^T X W^T B``

with ``C = X^T X`` (Linear; ``X`` the ``(N, in)`` input). For a Conv2d the same terms are
taken over the layer's maps (the authors' ``conv2d`` / ``conv2d_transpose`` form): with
``U_n`` the unfolded input of sample ``n`` (columns: receptive fields), ``T_W x_n =
W_f U_n`` (``W_f`` the ``(out, in/groups*kh*kw)`` kernel matrix, one group shown), so
``sparse``, ``amp`` are the dense terms with ``C = sum_n U_n U_n^T`` (every receptive field a
sample; the sum over positions is part of the sum over outputs), and ``null``'s gradient is
``(2/N) sum_n V_n unfold(r_n)^T``, ``V_n = W_f U_n``, ``r_n = fold(B_f^T V_n)``
(``fold`` sums the overlapping receptive fields, ``unfold`` is its adjoint). ``decay`` and
``self`` act on the kernels. ``tests/trainers/test_learned_feedback.py`` checks each
gradient against these closed forms in float64.

The projections carry no bias (the authors' ``AlignmentBase`` default; their flags
``use_bias_forward/backward`` add the layer's bias to both). Only the forward
reconstruction enters ``null``: the authors' primitive also has a term
on the backward reconstruction ``||T_W^T T_B x||^2``, which their IA sets to zero by
default (``reconstruction_reversal=False``); so does this module.

Rules (the authors' ``Alignments/alignment.py``; defaults from their ``params.py``):

- ``sa`` (symmetric alignment, non-local: reads ``W``): ``R = alpha decay + beta self``,
  ``alpha = 1e-3``, ``beta = 2e-3``. Gradient ``2 alpha B - beta W``: ``B`` relaxes to
  ``beta / (2 alpha) W = W``.
- ``ia`` (information alignment, local: ``W`` enters only through the layer's own
  response ``T_W x``): ``R = alpha amp + beta null + gamma decay``, ``alpha = 2e-3``,
  ``beta = gamma = 1e-3``.
- ``aa`` (activation alignment): ``R = alpha sparse + beta amp``, ``alpha = 1e-3``,
  ``beta = 2e-3``; ``B`` relaxes to ``beta / (2 alpha) W = W`` when ``C`` is full rank.

How ``B`` learns. The forward pass attaches ``R`` to the layer's output through
:class:`AddLocalLoss` (the output unchanged; its backward hands ``R`` the gradient 1), so
``loss.backward()`` gives ``B.grad = dR/dB`` and nothing else (the input gradient is FA's
with ``B`` detached). The optimizer steps ``B`` with ``W``, as in the authors' code (one
optimizer on ``task loss + sum of R``): same momentum and lr schedule, and DDP all-reduces
(averages) ``B``'s gradient like any other, so every rank holds the same ``B``. ``R`` is
attached only in training mode with grad enabled (not in eval, not under
:func:`~trainers.rules.base.exact_backprop`). ``B`` sits in its own optimizer group
(:func:`trainers.rules.param_groups`): weight decay 0 (the loss has its own ``decay``; the
authors' L2 is on forward weights only) and, with ``feedback_lr`` set, its own learning
rate (scaled by the run's lr schedule like the others; the authors' ``alignment_learning_rate``). ``B``'s gradient counts in ``optim.clip_grad_norm``'s global norm like
any parameter's.

Schedule. ``R``'s coefficients are multiplied by ``s(t)``, ``t`` the optimizer steps taken
(``feedback_steps``, a buffer, so a resumed run continues it): ``s = 0`` for ``t <
delay_steps`` (``B`` frozen; its gradient is 0, so DDP still sees one), then a linear
warm-up ``s = min(1, (t - delay_steps + 1) / warmup_steps)``; both 0 by default (``s = 1``;
the authors' coefficient schedules ``alpha_start`` and ``alpha_schedule_type='linear'``).

Cost per training step and layer, in forward-pass units: ``sa`` none beyond a ``W``-sized
product; ``aa`` 2 (``T_B x`` and its weight gradient); ``ia`` 4 (plus ``T_B^T T_W x`` and
its weight gradient); every rule one copy of the layer's output (:class:`AddLocalLoss`).
``T_W x`` is the layer's output less its bias, taken from it when the layer ran in the
loss's precision (float32 or float64); under autocast it is recomputed in float32 (one
unit more). Each of ``T_W x`` and ``T_B x`` is formed once for all the terms that use it.
All terms are computed in float32 (at least) outside autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, draw_normal, init_scale

__all__ = [
    "AA",
    "IA",
    "SA",
    "AddLocalLoss",
    "ConvGeometry",
    "LearnedFeedback",
    "PRIMITIVES",
    "aa_loss",
    "amp",
    "decay",
    "ia_loss",
    "null",
    "sa_loss",
    "self_",
    "sparse",
]


class ConvGeometry(NamedTuple):
    """A Conv2d layer's ``stride, padding, dilation, groups`` (``padding`` numeric: the
    input is already padded for other modes)."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


Geometry = ConvGeometry | None  # None: a Linear layer


def _map(x: Tensor, m: Tensor, conv: Geometry) -> Tensor:
    """``T_m x``: the layer's linear map with matrix/kernel ``m`` (no bias)."""
    if conv is None:
        return F.linear(x, m)
    return F.conv2d(x, m, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _map_t(v: Tensor, m: Tensor, conv: Geometry, x_shape: torch.Size) -> Tensor:
    """``T_m^T v``: the transposed map, back to the input's shape."""
    if conv is None:
        return v @ m
    extra = []
    for i in range(2):  # the output_padding that makes the transposed conv x-shaped
        k = m.shape[2 + i]
        size = (v.shape[2 + i] - 1) * conv.stride[i] - 2 * conv.padding[i]
        extra.append(x_shape[2 + i] - (size + conv.dilation[i] * (k - 1) + 1))
    return F.conv_transpose2d(
        v, m, None, conv.stride, conv.padding, tuple(extra), conv.groups, conv.dilation
    )


def _rows(x: Tensor, conv: Geometry) -> int:
    """``N``: the samples ``mean_n`` averages over."""
    return x.shape[0] if conv is not None else x.numel() // x.shape[-1]


def _mean_sq(t: Tensor, n: int) -> Tensor:
    return t.square().sum() / n


# --- primitives (bioprop's shapes; see the module docstring) ------------------------------
def decay(weight: Tensor, feedback: Tensor) -> Tensor:
    """``||W||^2 + ||B||^2``."""
    return weight.square().sum() + feedback.square().sum()


def self_(weight: Tensor, feedback: Tensor) -> Tensor:
    """``-<W, B>`` (the authors' ``self = -tr(BW)``)."""
    return -(weight * feedback).sum()


def sparse(x: Tensor, weight: Tensor, feedback: Tensor, conv: Geometry = None) -> Tensor:
    """``mean_n ||T_W x||^2 + ||T_B x||^2``."""
    n = _rows(x, conv)
    return _mean_sq(_map(x, weight, conv), n) + _mean_sq(_map(x, feedback, conv), n)


def amp(x: Tensor, weight: Tensor, feedback: Tensor, conv: Geometry = None) -> Tensor:
    """``-mean_n <T_B x, T_W x>``."""
    return -(_map(x, feedback, conv) * _map(x, weight, conv)).sum() / _rows(x, conv)


def null(x: Tensor, weight: Tensor, feedback: Tensor, conv: Geometry = None) -> Tensor:
    """``mean_n ||T_B^T T_W x||^2`` (the forward reconstruction)."""
    recon = _map_t(_map(x, weight, conv), feedback, conv, x.shape)
    return _mean_sq(recon, _rows(x, conv))


#: primitive name -> function; the ones on activations take ``(x, W, B, conv)``.
PRIMITIVES: dict[str, Callable[..., Tensor]] = {
    "decay": decay,
    "sparse": sparse,
    "null": null,
    "self": self_,
    "amp": amp,
}


# --- the rules' losses: each sees only the layer's own input, weight and feedback ---------
def sa_loss(
    x: Tensor, weight: Tensor, feedback: Tensor, conv: Geometry, *, alpha: Any, beta: Any
) -> Tensor:
    """Symmetric alignment: ``alpha decay + beta self`` (``x`` unused)."""
    return alpha * decay(weight, feedback) + beta * self_(weight, feedback)


def ia_loss(
    x: Tensor,
    weight: Tensor,
    feedback: Tensor,
    conv: Geometry,
    *,
    alpha: Any,
    beta: Any,
    gamma: Any,
    response: Tensor | None = None,
) -> Tensor:
    """Information alignment: ``alpha amp + beta null + gamma decay``. ``response`` is
    ``T_W x`` when the layer has it already (its output less its bias); both terms share
    it and ``T_B x`` is taken once."""
    v_w = _map(x, weight, conv) if response is None else response
    n = _rows(x, conv)
    amp_ = -(_map(x, feedback, conv) * v_w).sum() / n
    null_ = _mean_sq(_map_t(v_w, feedback, conv, x.shape), n)
    return alpha * amp_ + beta * null_ + gamma * decay(weight, feedback)


def aa_loss(
    x: Tensor,
    weight: Tensor,
    feedback: Tensor,
    conv: Geometry,
    *,
    alpha: Any,
    beta: Any,
    response: Tensor | None = None,
) -> Tensor:
    """Activation alignment: ``alpha sparse + beta amp``, ``T_W x`` (``response`` when
    given) and ``T_B x`` each taken once for both terms."""
    v_w = _map(x, weight, conv) if response is None else response
    v_b = _map(x, feedback, conv)
    n = _rows(x, conv)
    return alpha * (_mean_sq(v_w, n) + _mean_sq(v_b, n)) - beta * (v_b * v_w).sum() / n


class AddLocalLoss(torch.autograd.Function):
    """A copy of ``y`` forward; backward passes ``grad_y`` through and gives ``loss`` the
    gradient 1, so ``loss``'s own graph (here: into ``B``) is differentiated with it. A
    copy, not a view: a view made inside a Function may not be modified in place, and the
    next module may be an ``nn.ReLU(inplace=True)``."""

    @staticmethod
    def forward(ctx, y: Tensor, loss: Tensor) -> Tensor:
        ctx.loss_like = (loss.shape, loss.dtype, loss.device)
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        shape, dtype, device = ctx.loss_like
        return grad, torch.ones(shape, dtype=dtype, device=device)


class LearnedFeedback(FeedbackLayer):
    """Plastic ``B`` trained by its local loss :attr:`loss`; subclasses name the loss and
    its coefficients (``coefficients``, the keys of ``defaults`` passed to the loss)."""

    coefficients: tuple[str, ...] = ()
    loss: Callable[..., Tensor]

    def init_feedback(self, generator: torch.Generator, **params: Any) -> None:
        b = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight))
        self.feedback = nn.Parameter(b)
        zero = torch.zeros((), dtype=torch.int64, device=self.weight.device)
        self.register_buffer("feedback_steps", zero)
        for key in ("delay_steps", "warmup_steps"):
            if int(params[key]) < 0:
                raise ValueError(f"{self.rule_name} {key} must be >= 0, got {params[key]}")
        lr = params["feedback_lr"]
        if lr is not None and float(lr) <= 0:
            raise ValueError(f"{self.rule_name} feedback_lr must be > 0, got {lr}")
        self.coefs = {k: float(params[k]) for k in self.coefficients}
        self.delay_steps, self.warmup_steps = (
            int(params["delay_steps"]),
            int(params["warmup_steps"]),
        )
        self.feedback_lr = None if lr is None else float(lr)

    def backward_weight(self) -> Tensor:
        return self.feedback

    def optimizer_group(self) -> tuple[list[nn.Parameter], dict[str, float]]:
        """``B`` and its optimizer options: no weight decay, ``feedback_lr`` when set."""
        options = {"weight_decay": 0.0}
        if self.feedback_lr is not None:
            options["lr"] = self.feedback_lr
        return [self.feedback], options

    def after_step(self) -> None:
        self.feedback_steps.add_(1)

    def schedule_scale(self) -> Tensor | float:
        """``s(t)``: 0 during ``delay_steps``, then a linear ramp over ``warmup_steps``."""
        if not self.delay_steps and not self.warmup_steps:
            return 1.0
        t = self.feedback_steps.to(torch.float32) - self.delay_steps
        if self.warmup_steps:
            return ((t + 1) / self.warmup_steps).clamp(0.0, 1.0)
        return (t >= 0).to(torch.float32)

    def geometry(self) -> Geometry:
        if isinstance(self, nn.Conv2d):
            padding = self.padding if isinstance(self.padding, tuple) else (0, 0)
            if self.padding_mode != "zeros":
                padding = (0, 0)
            return ConvGeometry(self.stride, padding, self.dilation, self.groups)
        return None

    #: the losses that take the layer's response ``T_W x`` instead of recomputing it
    uses_response = False

    def local_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``s(t) R(x, W, B)`` on this layer's own (detached) input and weight, in float32
        (float64 for a float64 layer), outside autocast. ``y``, the layer's output: when it
        is in that precision already, ``T_W x = y - bias`` is taken from it, not recomputed
        (one forward-sized product fewer per layer)."""
        if isinstance(self, nn.Conv2d):
            x, _ = self.pad_input(x)
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            x = x.detach().to(dtype)
            w = self.weight.detach().to(dtype)
            b = self.feedback.to(dtype)
            extra = {}
            if self.uses_response and y is not None and y.dtype == dtype:
                extra["response"] = self._response(y.detach())
            loss = type(self).loss(x, w, b, self.geometry(), **self.coefs, **extra)
            return loss * self.schedule_scale()

    def _response(self, y: Tensor) -> Tensor:
        """``T_W x`` from the layer's output ``y``: ``y`` less the bias."""
        if self.bias is None:
            return y
        bias = self.bias.detach()
        return y - (bias.view(-1, 1, 1) if isinstance(self, nn.Conv2d) else bias)

    def forward(self, x: Tensor) -> Tensor:
        if self._exact_bp or not torch.is_grad_enabled():
            return self.stock_forward(x)
        y = self.feedback_forward(x, self.feedback.detach())
        if not self.training:
            return y
        return AddLocalLoss.apply(y, self.local_loss(x, y))


_SCHEDULE = {"delay_steps": 0, "warmup_steps": 0, "feedback_lr": None}


class _TwoCoefficients(LearnedFeedback):
    """A loss of two weighted primitives, ``alpha`` and ``beta`` (sa, aa)."""

    coefficients = ("alpha", "beta")

    def init_feedback(
        self,
        generator: torch.Generator,
        alpha: float,
        beta: float,
        delay_steps: int,
        warmup_steps: int,
        feedback_lr: float | None,
    ) -> None:
        super().init_feedback(generator, **_locals(locals()))


@register_rule("sa")
class SA(_TwoCoefficients):
    """Symmetric alignment: ``B`` learns by ``alpha decay + beta self``."""

    defaults = {"alpha": 1e-3, "beta": 2e-3, **_SCHEDULE}
    loss = staticmethod(sa_loss)


@register_rule("ia")
class IA(LearnedFeedback):
    """Information alignment: ``B`` learns by ``alpha amp + beta null + gamma decay``."""

    defaults = {"alpha": 2e-3, "beta": 1e-3, "gamma": 1e-3, **_SCHEDULE}
    coefficients = ("alpha", "beta", "gamma")
    loss = staticmethod(ia_loss)
    uses_response = True

    def init_feedback(
        self,
        generator: torch.Generator,
        alpha: float,
        beta: float,
        gamma: float,
        delay_steps: int,
        warmup_steps: int,
        feedback_lr: float | None,
    ) -> None:
        super().init_feedback(generator, **_locals(locals()))


@register_rule("aa")
class AA(_TwoCoefficients):
    """Activation alignment: ``B`` learns by ``alpha sparse + beta amp``."""

    defaults = {"alpha": 1e-3, "beta": 2e-3, **_SCHEDULE}
    loss = staticmethod(aa_loss)
    uses_response = True


def _locals(values: dict[str, Any]) -> dict[str, Any]:
    """An ``init_feedback``'s named params (its locals less ``self``, ``generator``,
    ``__class__``)."""
    return {k: v for k, v in values.items() if k not in ("self", "generator", "__class__")}
