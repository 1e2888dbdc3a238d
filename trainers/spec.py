"""The experiment spec: one pydantic model, the single source of configuration.

Every component reads its own typed section (``spec.data``, ``spec.rule``,
``spec.optim`` ...). A list in ``rule.name`` makes a sweep: :meth:`ExperimentSpec.expand`
turns it into one fully resolved spec per setting. The resolved spec is stored with
each run (as MLflow params) and each checkpoint.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from data_pipelines.catalogue import KIND_INFO
from data_pipelines.spec import DataSpec, SynthSpec
from data_pipelines.spec_types import (
    Float,
    Int,
    Name,
    Params,
    PathText,
    Section,
    check_known,
)
from trainers.catalogue import MODELS, RULES, TASKS, check_model_params, check_rule_params
from trainers.names import OPTIMIZER_NAMES
from trainers.plugins import load_plugins
from trainers.search_space import SearchSpec, SweepSpec
from trainers.storage import validate_storage_path

__all__ = [
    "CheckpointSpec",
    "DataSpec",
    "ExperimentSpec",
    "OptimSpec",
    "RuleSpec",
    "ScaleSpec",
    "ScheduleSpec",
    "SearchSpec",
    "SweepSpec",
    "SynthSpec",
    "TrackingSpec",
    "load_spec",
    "parse_yaml",
]

SWEEPABLE = ("rule.name", "rule.last_layer", "optim.lr", "optim.manhattan", "seed")
PRODUCT_RULES = ("pfa", "pfa_o")  # feedback R B aligns only under plain gradient steps


class RuleSpec(Section):
    name: str | list[str] = Field("bp", description="rule name, or a list for a sweep")
    last_layer: Literal["bp"] | None | list[Literal["bp"] | None] = Field(
        None, description="'bp' keeps the final classifier on exact backprop (sweepable)"
    )
    params: Params = Field(
        default_factory=dict,
        description="rule options (identifier keys; JSON values nested at most 4 levels); a "
        "list value sweeps that option",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("rule.name must not be an empty list")
        for name in names:
            check_known("rule", name, RULES, "rules")
        return value

    @model_validator(mode="after")
    def _known_params(self) -> RuleSpec:
        """Every ``params`` key is a parameter of every named rule (``trainers.catalogue``)."""
        check_rule_params(self.names, self.params)
        return self

    @property
    def names(self) -> list[str]:
        """The distinct rule names, in order."""
        return list(dict.fromkeys([self.name] if isinstance(self.name, str) else self.name))


class OptimSpec(Section):
    name: Literal[OPTIMIZER_NAMES] = "sgd"
    lr: Float | list[Float] = Field(0.05, description="learning rate (sweepable)")
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(1e-4, ge=0)
    manhattan: bool | list[bool] = Field(
        False, description="Batch Manhattan: step by the gradient's sign (sweepable)"
    )
    clip_grad_norm: Float | None = Field(
        None, gt=0, description="clip the global gradient norm before each step (None: off)"
    )

    @field_validator("lr")
    @classmethod
    def _positive(cls, value: float | list[float]) -> float | list[float]:
        for lr in value if isinstance(value, list) else [value]:
            if not lr > 0:
                raise ValueError(f"Input should be greater than 0, got {lr}")
        return value


class ScheduleSpec(Section):
    epochs: Int = Field(3, ge=1, le=100_000)
    step_every: Int = Field(10, ge=1, le=100_000, description="divide lr by 1/gamma every N epochs")
    gamma: Float = Field(0.1, gt=0, le=1)


class ScaleSpec(Section):
    workers: Int = Field(2, ge=1, le=10_000)
    gpu: bool = False
    cpus_per_worker: Int = Field(1, ge=1, le=1024)
    start_retries: Int = Field(
        5,
        ge=0,
        le=1000,
        description="worker-group start-ups of a setting that may fail and be retried (each "
        "waits up to RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, default 60 s, for its "
        "resources) before the setting is FAILED; Ray Train's "
        "FailureConfig(controller_failure_limit)",
    )


class CheckpointSpec(Section):
    """When a setting saves a checkpoint: at the end of an epoch that is a multiple of
    ``every_epochs`` and ends at least ``min_interval_s`` seconds after the previous
    checkpoint (or the setting's start), and always after the last epoch. A resumed run
    restarts from the last one and continues exactly (same model, optimizer, RNG states)."""

    every_epochs: Int = Field(1, ge=1, le=100_000, description="checkpoint every K epochs")
    min_interval_s: float = Field(
        30.0,
        ge=0,
        le=1e7,
        description="skip a checkpoint due sooner than this many seconds after the previous "
        "one (0: every every_epochs epochs); the last epoch always checkpoints. Small, fast "
        "settings save once at the end; epochs longer than this save every every_epochs",
    )
    keep: Int = Field(3, ge=1, le=1000)


class TrackingSpec(Section):
    uri: PathText | None = Field(
        None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or a local sqlite store"
    )
    experiment: Name = "bioprop"
    alignment_every: Int = Field(
        0,
        ge=0,
        description="gradient alignment on a fixed probe batch every K steps (0 = per epoch)",
    )
    alignment_mode: Literal["eval", "train"] = Field(
        "eval",
        description="module mode of the gradient-alignment probe, per-step and per-epoch alike: "
        "eval (BatchNorm running statistics, no dropout) or train (batch statistics, the same "
        "dropout masks in the rule and the exact-BP pass)",
    )
    weight_stats: bool = Field(
        False,
        description="log each layer's weight kurtosis/mean/std as metrics (default: rows of "
        "the run's layer_stats.json table)",
    )
    layer_metrics_max_layers: Int = Field(
        8,
        ge=0,
        le=100_000,
        description="log the per-layer statistics (angle/<layer>, ...) as metrics only for nets "
        "of up to this many rule layers (0: never), so a deep net's chart view is not "
        "hundreds of charts; every layer's statistics are always rows of layer_stats.json",
    )


class ExperimentSpec(Section):
    name: Name = "experiment"
    task: str = Field("classify", description="what the model is trained for: " + ", ".join(TASKS))
    model: str = "convnet"
    model_params: Params = Field(
        default_factory=dict,
        description="model options ("
        + "; ".join(f"{m}: {', '.join(e.params)}" for m, e in MODELS.items() if e.params)
        + "); a list value sweeps that option",
    )
    data: DataSpec = Field(default_factory=DataSpec)
    rule: RuleSpec = Field(default_factory=RuleSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: Int = Field(
        32, ge=1, le=1_000_000, description="global batch, split across workers"
    )
    scale: ScaleSpec = Field(default_factory=ScaleSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage_path: PathText | None = Field(
        None,
        description="Ray Train storage: s3://, gs://, file:// URI or a path (shared storage "
        "every node reaches when multi-node); default BIOPROP_STORAGE_PATH, else "
        "./bioprop-runs/ray_results",
    )
    max_failures: Int = Field(3, ge=0, le=1000)
    seed: Int | list[Int] = Field(0, description="sweepable: a list runs one setting per seed")
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    search: SearchSpec | None = Field(
        None, description="a sampled search (Ray Tune) inside every point of the sweep grid"
    )

    @model_validator(mode="before")
    @classmethod
    def _plugins_first(cls, data: object) -> object:
        """A spec may name a plugin's rule, model, task or data kind: ``BIOPROP_PLUGINS``'
        modules are imported (once) before any name is checked (:mod:`trainers.plugins`)."""
        load_plugins()
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return check_known("task", value, TASKS, "tasks")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_known("model", value, MODELS, "models")

    @field_validator("storage_path", mode="before")
    @classmethod
    def _storage_uri(cls, value: object) -> object:
        if isinstance(value, PurePath):
            value = str(value)
        return validate_storage_path(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        check_model_params(self.model, self.model_params)
        if MODELS[self.model].task != self.task:
            raise ValueError(f"model {self.model!r} does not fit task {self.task!r}")
        if self.task not in KIND_INFO[self.data.kind].tasks:
            raise ValueError(f"data.kind {self.data.kind!r} does not fit task {self.task!r}")
        names = self.rule.name if isinstance(self.rule.name, list) else [self.rule.name]
        if self.task == "detect" and "dfa" in names:
            raise ValueError(
                "rule 'dfa' needs one output layer whose error reaches every hidden layer; "
                "RetinaNet has two heads over five pyramid levels, so task 'detect' cannot use it"
            )
        product = sorted({n for n in names if n in PRODUCT_RULES})
        manhattan = self.optim.manhattan
        if product and (
            self.optim.name == "adam"
            or (manhattan if isinstance(manhattan, bool) else any(manhattan))
        ):
            how = "optim.name 'adam'" if self.optim.name == "adam" else "optim.manhattan true"
            raise ValueError(
                f"rule {product[0]!r} cannot train with {how}: its feedback R B stays aligned "
                "with W only when R takes the plain gradient step B dW (sign(B dW) is not "
                "B sign(dW), and Adam rescales each entry); use optim.name 'sgd' with "
                "optim.manhattan false"
            )
        if self.batch_size < self.scale.workers:
            raise ValueError(
                f"batch_size {self.batch_size} is smaller than scale.workers {self.scale.workers}"
            )
        if self.search is not None:
            self._check_search()
        return self

    def _check_search(self) -> None:
        """Every searched field is sweepable, not also a grid axis, and each value its
        distribution can give passes the field's own validation."""
        search = self.search
        assert search is not None
        reported = TASKS[self.task].metrics
        if search.metric not in reported:
            raise ValueError(
                f"search.metric {search.metric!r} is not reported by task {self.task!r}; "
                f"it reports: {', '.join(reported)}"
            )
        if search.asha and search.asha.grace_period > self.schedule.epochs:
            raise ValueError(
                f"search.asha.grace_period {search.asha.grace_period} is more than "
                f"schedule.epochs {self.schedule.epochs}"
            )
        axes = self.sweep_axes()
        dumped = self.model_dump(mode="json", exclude={"search"})
        for path, dist in search.space.items():
            if path not in SWEEPABLE[1:] and not path.startswith(("rule.params.", "model_params.")):
                searchable = ", ".join([*SWEEPABLE[1:], "rule.params.<key>", "model_params.<key>"])
                raise ValueError(f"search.space.{path}: not a searchable field ({searchable})")
            if path in axes:
                raise ValueError(
                    f"search.space.{path}: {path} is also a sweep list; give one or the other"
                )
            for value in dist.extremes():
                data = json.loads(json.dumps(dumped))
                _set(data, path, value)
                try:
                    ExperimentSpec.model_validate(data)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    raise ValueError(
                        f"search.space.{path}: value {value!r} is invalid for {path}: "
                        f"{first['msg']}"
                    ) from None

    def trial_count(self) -> int:
        """How many trials (child runs) the spec makes: grid points times searched samples."""
        per_point = self.search.trials_per_point() if self.search else 1
        return math.prod(len(values) for values in self.sweep_axes().values()) * per_point

    def sweep_axes(self) -> dict[str, list[Any]]:
        """Every sweepable field given as a list (``SWEEPABLE``, ``rule.params.<key>`` and
        ``model_params.<key>``)."""
        dumped = self.model_dump(mode="json")
        axes = {path: _get(dumped, path) for path in SWEEPABLE}
        axes.update({f"rule.params.{k}": v for k, v in self.rule.params.items()})
        axes.update({f"model_params.{k}": v for k, v in self.model_params.items()})
        return {path: value for path, value in axes.items() if isinstance(value, list)}

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep_axes())

    def sweep_size(self) -> int:
        """How many settings :meth:`settings` yields: the product of the sweep axes' lengths,
        computed without enumerating them."""
        return math.prod(len(values) for values in self.sweep_axes().values())

    @property
    def rule_names(self) -> list[str]:
        """The distinct rule names this spec runs, in order."""
        return self.rule.names

    def settings(self) -> Iterator[tuple[str, ExperimentSpec]]:
        """``(label, resolved spec)`` per point of the sweep grid (the cartesian product of all
        list-valued sweepable fields); one point, labelled by its rule, when not a sweep.

        Lazy: each setting is built when it is reached, so a caller that needs only a few
        (or only their number, :meth:`sweep_size`) never holds the whole grid.
        The label names the rule and every other swept value, e.g. ``sc p=0.75 manhattan=true``.
        """
        axes = self.sweep_axes()
        base = self.model_dump(mode="json")
        for combo in itertools.product(*axes.values()):
            data = copy.deepcopy(base)
            for path, value in zip(axes, combo, strict=True):
                _set(data, path, value)
            spec = ExperimentSpec.model_validate(data)
            yield setting_label(spec.rule.name, dict(zip(axes, combo, strict=True))), spec

    def expand(self) -> list[ExperimentSpec]:
        """One resolved spec per sweep setting (a single-element list when not a sweep);
        builds them all, see :meth:`settings` for one at a time."""
        return [spec for _, spec in self.settings()]

    def flat_params(self) -> dict[str, str]:
        """The spec flattened to ``section.field`` keys, as MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), sub)
            else:
                out[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)

        walk("", self.model_dump(mode="json"))
        return out


def setting_label(rule: str, point: dict[str, Any]) -> str:
    """A sweep point's label: the rule, then ``field=value`` (JSON) for every other swept
    field path of ``point``, e.g. ``sc p=0.75 manhattan=true``."""
    extras = [
        f"{path.rsplit('.', 1)[-1]}={json.dumps(value)}"
        for path, value in point.items()
        if path != "rule.name"
    ]
    return " ".join([rule, *extras])


def _get(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``1e-3`` as a float, as YAML 1.2 and JSON do (PyYAML's
    YAML 1.1 rules need a dot, ``1.0e-3``, and would hand the strict spec a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """YAML (or JSON) text as Python data, exponents without a dot read as floats."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def load_spec(source: str | Path | dict[str, Any]) -> ExperimentSpec:
    """Load a spec from a YAML/JSON file path, a YAML/JSON string, or a dict.

    Raises ``pydantic.ValidationError`` naming the field path on bad content,
    ``FileNotFoundError`` naming the file when a path does not exist.
    """
    if isinstance(source, dict):
        return ExperimentSpec.model_validate(source)
    text: str
    path = Path(source) if not str(source).lstrip().startswith(("{", "name:")) else None
    if path is not None and ("\n" not in str(source)):
        if not path.exists():
            raise FileNotFoundError(f"spec file not found: {path}")
        text = path.read_text()
    else:
        text = str(source)
    data = parse_yaml(text)
    if not isinstance(data, dict):
        raise ValueError(f"spec must be a mapping, got {type(data).__name__}")
    return ExperimentSpec.model_validate(data)
