"""The catalogue: one torch-free descriptor per rule and per task, read by every consumer.

A rule's descriptor names its paper and its parameters (default, accepted types, meaning); a
task's names its headline metric (name, direction), the metrics its worker loop reports each
epoch (the searchable ones) and the curves its summary draws. The spec validates against it
(so an unknown or mistyped ``rule.params`` key is refused at submission, by the service too,
naming the valid keys), ``best_per_rule`` and the summaries take the headline metric from it,
and ``trainers.names`` lists the rule and task names from it. ``tests/trainers/test_catalogue.py``
ties each descriptor to its implementation: a rule's parameters and defaults are its class's
``defaults``, a task's metrics are what its worker reports.

This module must stay torch-free: the service imports it through ``trainers.spec``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODELS",
    "ModelEntry",
    "Param",
    "RuleEntry",
    "RULES",
    "TaskEntry",
    "TASKS",
    "add_model",
    "add_rule",
    "add_task",
    "check_model_params",
    "check_rule_params",
    "headline",
    "search_metrics",
]


@dataclass(frozen=True)
class Param:
    """One rule parameter: its default, the JSON types it accepts (``float`` also takes
    integers; ``None`` in ``types`` admits null) and a one-line meaning."""

    default: Any
    types: tuple[type | None, ...]
    doc: str

    def accepts(self, value: Any) -> bool:
        if value is None:
            return None in self.types
        if isinstance(value, bool):
            return bool in self.types
        if isinstance(value, int) and (int in self.types or float in self.types):
            return True
        return any(t is not None and isinstance(value, t) for t in self.types)

    @property
    def type_name(self) -> str:
        return " | ".join("null" if t is None else t.__name__ for t in self.types)


@dataclass(frozen=True)
class RuleEntry:
    """A rule: the paper it comes from and its parameters (``rule.params`` keys)."""

    paper: str
    params: dict[str, Param] = field(default_factory=dict)


_DECAY_W = Param(0.0, (float,), "shrink W by (1 - decay) after every optimizer step")
_FIXED = "fixed random feedback"
#: the schedule and optimizer options every learned-feedback rule (sa, ia, aa) takes
_LEARNED = {
    "delay_steps": Param(0, (int,), "optimizer steps before B's loss starts (B frozen)"),
    "warmup_steps": Param(0, (int,), "steps of a linear ramp of B's loss after the delay"),
    "feedback_lr": Param(None, (float, None), "B's learning rate; null: the run's optim.lr"),
}

#: rule name -> descriptor. The order is the order rules are listed everywhere.
RULES: dict[str, RuleEntry] = {
    "bp": RuleEntry("exact backpropagation (the baseline)", {"decay": _DECAY_W}),
    "fa": RuleEntry(f"feedback alignment, {_FIXED} (Lillicrap et al. 2016)"),
    "dfa": RuleEntry("direct feedback alignment (Nøkland 2016; Launay et al. 2020)"),
    "ss": RuleEntry(
        "sign-symmetry (Liao et al. 2016; Xiao et al. 2018)",
        {"scale": Param(None, (float, None), "feedback scale s; null: W's init std")},
    ),
    "usf": RuleEntry("uniform sign-concordant feedback (Liao et al. 2016)"),
    "brsf": RuleEntry("batchwise random-magnitude sign-concordant feedback (Liao et al. 2016)"),
    "frsf": RuleEntry("fixed random-magnitude sign-concordant feedback (Liao et al. 2016)"),
    "sc": RuleEntry(
        "sign-concordance sweep V = |M| sign(W) S_p (Liao et al. 2016)",
        {"p": Param(0.75, (float,), "probability that a feedback sign agrees with W's")},
    ),
    "kp": RuleEntry(
        "Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019)",
        {"decay": Param(1e-4, (float,), "per-step decay of W and B (Akrout et al. eq. 17)")},
    ),
    "wm": RuleEntry(
        "weight mirrors (Akrout et al. 2019)",
        {
            "mirror_every": Param(4, (int,), "optimizer steps between mirror phases (K)"),
            "mirror_steps": Param(1, (int,), "mirror updates per mirror phase"),
            "mirror_batch": Param(
                None, (int, None), "noise samples per update, shared across DDP ranks; null: fan-in"
            ),
            "mirror_lr": Param(
                0.01, (float,), "mirror rate per optimizer step (a phase applies 1-(1-lr)^K)"
            ),
            "noise_std": Param(1.0, (float,), "std of the mirror phase's input noise"),
        },
    ),
    "pfa": RuleEntry(
        "product feedback alignment (Ji-An & Benna)",
        {
            "expansion": Param(10.0, (float,), "width of the fixed expansion B over fan-out"),
            "decay": Param(0.0, (float,), "per-step decay of the plastic R"),
        },
    ),
    "pfa_o": RuleEntry(
        "product feedback alignment, no expansion (Ji-An & Benna)",
        {
            "expansion": Param(1.0, (float,), "width of the fixed expansion B over fan-out"),
            "decay": Param(0.0, (float,), "per-step decay of the plastic R"),
        },
    ),
    "sa": RuleEntry(
        "symmetric alignment, learned feedback, non-local (Kunin et al. 2020)",
        {
            "alpha": Param(1e-3, (float,), "weight of decay = |W|^2 + |B|^2 in B's loss"),
            "beta": Param(2e-3, (float,), "weight of self = -<W, B> in B's loss"),
            **_LEARNED,
        },
    ),
    "ia": RuleEntry(
        "information alignment, learned feedback, local (Kunin et al. 2020)",
        {
            "alpha": Param(2e-3, (float,), "weight of amp = -mean <Bx, Wx> in B's loss"),
            "beta": Param(1e-3, (float,), "weight of null = mean |B^T W x|^2 in B's loss"),
            "gamma": Param(1e-3, (float,), "weight of decay = |W|^2 + |B|^2 in B's loss"),
            **_LEARNED,
        },
    ),
    "aa": RuleEntry(
        "activation alignment, learned feedback (Kunin et al. 2020)",
        {
            "alpha": Param(1e-3, (float,), "weight of sparse = mean |Wx|^2 + |Bx|^2 in B's loss"),
            "beta": Param(2e-3, (float,), "weight of amp = -mean <Bx, Wx> in B's loss"),
            **_LEARNED,
        },
    ),
}


@dataclass(frozen=True)
class TaskEntry:
    """A task: its headline metric and direction, the metrics its worker loop reports to Ray
    Tune each epoch (searchable), and the curve groups its run summary draws."""

    headline: str
    mode: str  # "max" or "min"
    title: str  # a figure's title
    label: str  # a table column's
    metrics: tuple[str, ...]
    summary: tuple[str, ...]  # compared per setting on a sweep's parent run, headline first
    curves: tuple[tuple[str, ...], ...]  # a child run's curves.png: one panel per group


TASKS: dict[str, TaskEntry] = {
    "classify": TaskEntry(
        headline="val_acc",
        mode="max",
        title="validation accuracy",
        label="val accuracy",
        metrics=("val_acc", "val_loss", "val_top5", "train_acc", "train_loss"),
        summary=("val_acc", "val_loss"),
        curves=(("train_loss", "val_loss"), ("train_acc", "val_acc"), ("align_mean_angle",)),
    ),
    "detect": TaskEntry(
        headline="map",
        mode="max",
        title="mAP (val)",
        label="mAP",
        metrics=("map", "map_50", "map_75", "train_loss"),
        summary=("map",),
        curves=(("train_loss",), ("map",), ("align_mean_angle",)),
    ),
}


@dataclass(frozen=True)
class ModelEntry:
    """A model: the task it serves, what it is, and its ``model_params`` (each builder's
    keyword options with their defaults)."""

    task: str
    about: str
    params: dict[str, Param] = field(default_factory=dict)


#: model name -> descriptor (``trainers.models.MODELS`` holds the builders)
MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(
        "classify",
        "a multilayer perceptron on flattened pixels",
        {
            "hidden": Param(256, (int,), "units per hidden layer"),
            "depth": Param(2, (int,), "hidden layers"),
            "bn": Param(False, (bool,), "Linear-BN-ReLU blocks"),
        },
    ),
    "convnet": ModelEntry(
        "classify",
        "a small conv net (3 conv-BN-ReLU blocks)",
        {"width": Param(16, (int,), "channels of the first block")},
    ),
    "resnet20": ModelEntry(
        "classify",
        "He et al.'s CIFAR ResNet (6n+2 layers)",
        {"blocks": Param(3, (int,), "residual blocks per stage (3: ResNet-20, 1: ResNet-8)")},
    ),
    "resnet18": ModelEntry("classify", "torchvision's ResNet-18"),
    "alexnet_bn": ModelEntry("classify", "AlexNet with BatchNorm (Xiao et al. 2018)"),
    "retinanet_resnet18_fpn": ModelEntry("detect", "torchvision's RetinaNet, ResNet-18 FPN"),
}


def _add(entries: dict[str, Any], what: str, name: str, entry: Any) -> None:
    if name in entries:
        raise ValueError(f"{what} {name!r} is already in the catalogue")
    entries[name] = entry


def add_rule(name: str, entry: RuleEntry) -> None:
    """List a plugin's rule (``trainers.plugins``): specs can name it once its module
    registers the implementation (``register_rule``). Refuses a name already listed."""
    _add(RULES, "rule", name, entry)


def add_task(name: str, entry: TaskEntry) -> None:
    """List a plugin's task (its implementation: ``register_task``)."""
    _add(TASKS, "task", name, entry)


def add_model(name: str, entry: ModelEntry) -> None:
    """List a plugin's model (its builder: ``register_model``); its task must be listed."""
    if entry.task not in TASKS:
        raise ValueError(f"model {name!r}: task {entry.task!r} is not in the catalogue")
    _add(MODELS, "model", name, entry)


def headline(task: str) -> tuple[str, str]:
    """``(metric, "max" | "min")``: the metric a task's runs are compared by."""
    entry = TASKS[task]
    return entry.headline, entry.mode


def search_metrics() -> tuple[str, ...]:
    """Every metric some task reports each epoch, in catalogue order, without repeats."""
    return tuple(dict.fromkeys(m for entry in TASKS.values() for m in entry.metrics))


def _check_params(field: str, what: str, known: dict[str, Param], params: dict[str, Any]) -> None:
    for key, value in params.items():
        if key not in known:
            valid = ", ".join(known) or "none"
            raise ValueError(
                f"{field}.{key}: {what} has no parameter {key!r}; its parameters: {valid}"
            )
        for item in value if isinstance(value, list) else [value]:
            if not known[key].accepts(item):
                raise ValueError(
                    f"{field}.{key}: {item!r} is not a {known[key].type_name} ({what})"
                )


def check_rule_params(rules: list[str], params: dict[str, Any]) -> None:
    """Refuse a ``rule.params`` key that one of ``rules`` does not take, or a value of the
    wrong type (each value of a sweep list is checked). The message names the key, the
    rule and its valid keys (and, in a sweep over several rules, that every one of them gets
    ``rule.params``)."""
    for rule in rules:
        try:
            _check_params("rule.params", f"rule {rule!r}", RULES[rule].params, params)
        except ValueError as exc:
            if len(rules) == 1:
                raise
            raise ValueError(
                f"{exc}. Every rule of the sweep gets rule.params: give a parameter that only "
                "some of them take in a spec of their own"
            ) from None


def check_model_params(model: str, params: dict[str, Any]) -> None:
    """The same for ``model_params`` of ``model``."""
    _check_params("model_params", f"model {model!r}", MODELS[model].params, params)
