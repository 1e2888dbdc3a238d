"""``pfa`` / ``pfa_o``: product feedback alignment (Ji-An & Benna, "Deep Learning without
Weight Symmetry").

The rule. The error ``delta`` of the layer's output reaches an expanded population of
``E = expansion * n_out`` units through a fixed random ``B`` (``E x n_out``, entries
``N(0, 1/E)``, so ``B^T B -> I`` as the expansion grows), and returns to the input through
a plastic ``R`` (``n_in x E``): ``delta_x = R B delta``, i.e. the backward matrix (shaped
like ``W``) is ``B^T R^T``. ``R`` learns locally from the expanded error ``B delta`` and the
input: ``dR^T = B dW``, plus weight decay (the optimizer's, and the ``decay`` param applied
to ``W`` and ``R`` in :meth:`after_step`). So ``R^T - B W`` moves only by decay,
``R^T -> B W`` and the path ``(R B)^T -> B^T B W``, near ``W`` for a large expansion.
``pfa_o`` draws ``B`` with orthonormal columns (default expansion 1: square orthogonal
``B``), so ``B^T B = I``.

How it is computed. The network only ever uses ``R`` through the path ``P = B^T R^T``, and
``R``'s update is linear in its gradient and in ``R`` (plain SGD: momentum, weight decay,
the lr schedule; the spec refuses Batch Manhattan and Adam for these rules). ``B^T`` commutes
with every such step: if ``R^T`` takes the step for gradient ``B dW``, then ``B^T R^T`` takes
the same step for gradient ``B^T B dW`` (its momentum buffer is ``B^T`` times ``R``'s, its
weight decay ``B^T`` times ``R``'s, and DDP's all-reduce is a sum). So the layer keeps ``P``
itself as the plastic parameter (``feedback_path``, shaped like ``W``, started at
``B^T R_0^T``) with gradient ``dP = G dW``, ``G = B^T B`` (``feedback_gram``, ``n_out x
n_out``, fixed; ``I`` for ``pfa_o``), and the backward is FA's with ``P`` in ``W``'s place.
Every step's backward matrix is the one ``B^T R^T`` would give (``tests/trainers/
test_rules.py`` checks it against ``R`` trained by hand, in float64). Cost per step, against
the former ``R``: ``G dW`` is ``n_out^2 fan_in`` multiply-adds (``1 / expansion`` of
``B dW``, and ``B^T R^T`` is never formed: another ``expansion n_out^2 fan_in`` saved), and
the optimizer updates a ``W``-sized tensor instead of ``expansion`` times one. For
ResNet-18 ``G dW`` is 5.4 GMAC against 175 GMAC for BP's step on 32 images at 224 px;
what is left is ``kp``'s cost, a second ``W``-sized parameter. One difference: with
``optim.clip_grad_norm`` the global norm counts ``||G dW||`` where it counted
``||B dW||`` (both about ``||dW||`` when ``B^T B ~ I``). A checkpoint of the former layout
(``feedback_expand`` ``B``, ``feedback_r`` ``R^T``) loads as ``P = B^T R^T``, ``G = B^T B``
(its optimizer state, ``R``'s momentum, does not).

Default ``expansion = 10``: the ratio Ji-An & Benna use for ImageNet ResNet-18 (their
public configs, ``papers.md``); the path angle once ``R^T = B W`` is then about
``acos(sqrt(10 / 11))`` = 17.5 degrees. ``decay`` defaults to 0: ``R`` decays through the
optimizer's weight decay, as in their configs (ImageNet: 5e-4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import DecayingFeedback, draw_normal, init_scale
from trainers.rules.functional import gram_gradient

__all__ = ["PFA", "PFAO"]


@register_rule("pfa")
class PFA(DecayingFeedback):
    """Backward ``P = B^T R^T`` kept as a parameter with gradient ``B^T B dW``; params
    ``expansion``, ``decay``."""

    defaults = {"expansion": 10.0, "decay": 0.0}
    plastic = True
    plastic_feedback = "feedback_path"
    orthonormal: bool = False  # B^T B = I: dP = dW

    def draw_expansion(self, n_expand: int, generator: torch.Generator) -> Tensor:
        return draw_normal(
            (n_expand, self.weight.shape[0]), generator, self.weight, 1.0 / math.sqrt(n_expand)
        )

    def init_feedback(self, generator: torch.Generator, expansion: float, decay: float) -> None:
        n_out = self.weight.shape[0]
        n_expand = max(1, round(float(expansion) * n_out))
        b = self.draw_expansion(n_expand, generator)
        r_t = draw_normal(
            (n_expand, *self.weight.shape[1:]), generator, self.weight, init_scale(self.weight)
        )
        path, gram = self.path_and_gram(b, r_t)
        self.feedback_path = nn.Parameter(path)
        if not self.orthonormal:
            self.register_buffer("feedback_gram", gram)
        self.decay = float(decay)

    def path_and_gram(self, b: Tensor, r_t: Tensor) -> tuple[Tensor, Tensor]:
        """``B^T R^T`` shaped like ``W`` and ``B^T B``, computed in float64."""
        bd = b.double()
        path = (bd.t() @ r_t.double().flatten(1)).view(self.weight.shape)
        return path.to(self.weight.dtype), (bd.t() @ bd).to(self.weight.dtype)

    def backward_weight(self) -> Tensor:
        if self.orthonormal:
            return self.feedback_path
        return gram_gradient(self.feedback_path, self.feedback_gram)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old_b, old_r = prefix + "feedback_expand", prefix + "feedback_r"
        if old_r in state_dict and prefix + "feedback_path" not in state_dict:
            path, gram = self.path_and_gram(state_dict.pop(old_b), state_dict.pop(old_r))
            state_dict[prefix + "feedback_path"] = path
            if not self.orthonormal:
                state_dict[prefix + "feedback_gram"] = gram
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_rule("pfa_o")
class PFAO(PFA):
    """``pfa`` with orthonormal-column ``B`` (square orthogonal at the default expansion 1),
    so ``B^T B = I`` and ``P`` takes ``W``'s own gradient."""

    defaults = {"expansion": 1.0, "decay": 0.0}
    orthonormal = True

    def draw_expansion(self, n_expand: int, generator: torch.Generator) -> Tensor:
        n_out = self.weight.shape[0]
        if n_expand < n_out:
            raise ValueError(f"pfa_o needs expansion >= 1, got {n_expand}/{n_out}")
        g = torch.randn(n_expand, n_out, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return q.to(device=self.weight.device, dtype=self.weight.dtype)
