"""The ``sweep:`` and ``search:`` sections of the spec: how many settings train at once, and a
sampled hyper-parameter search run by Ray Tune inside every point of the sweep grid.

```yaml
rule: {name: [bp, fa, ss]}           # grid axis: the search runs inside each rule
sweep: {max_concurrent: 4}           # default: as many settings as the cluster holds
search:
  metric: val_acc
  mode: max
  num_samples: 8                     # per grid point
  space:
    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    rule.params.decay: {choice: [0.0, 1.0e-4]}
  algorithm: random                  # random | optuna (Optuna's TPE through Ray Tune)
  asha: {grace_period: 1, reduction_factor: 3}   # early stopping; omit to train every trial
```

A distribution is a one-key mapping: ``uniform: [lo, hi]``, ``loguniform: [lo, hi]`` (log-uniform
on ``[lo, hi]``, ``lo > 0``), ``randint: [lo, hi]`` (integers ``lo <= k < hi``), ``choice: [...]``
(uniform over the values) or ``grid: [...]`` (every value, each ``num_samples`` times; the
``random`` algorithm only). Field paths are the sweepable ones (``optim.lr``,
``rule.params.<key>``, ...) except ``rule.name``, which stays a grid axis.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainers.catalogue import search_metrics

__all__ = ["AshaSpec", "Distribution", "SEARCH_METRICS", "SearchSpec", "SweepSpec"]

# what the worker loops report to Ray per epoch, every task's (trainers.catalogue.TASKS)
SEARCH_METRICS = search_metrics()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepSpec(_Section):
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="most settings (Ray Tune trials) training at once; default: as many as "
        "the cluster's CPUs/GPUs hold, each setting taking scale.workers workers",
    )


class Distribution(_Section):
    """One of ``uniform``, ``loguniform``, ``randint``, ``choice``, ``grid`` (exactly one)."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(None, min_length=1)
    grid: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a distribution is exactly one of uniform, loguniform, randint, choice, grid; "
                f"got {', '.join(given) or 'none'}"
            )
        kind, args = self.kind
        if kind in ("uniform", "loguniform", "randint") and not args[0] < args[1]:
            raise ValueError(f"{kind}: [low, high] needs low < high, got {list(args)}")
        if kind == "loguniform" and not args[0] > 0:
            raise ValueError(f"loguniform: low must be > 0, got {args[0]}")
        return self

    @property
    def kind(self) -> tuple[str, Any]:
        name = next(n for n in type(self).model_fields if getattr(self, n) is not None)
        return name, getattr(self, name)

    def extremes(self) -> list[Any]:
        """The values to check against the field's own validation: every value of a
        ``choice``/``grid``, the bounds of a range (``randint``'s high is exclusive)."""
        kind, args = self.kind
        if kind == "randint":
            return [args[0], args[1] - 1]
        return list(args)

    def tune_domain(self):
        """The Ray Tune search-space object (``tune.loguniform(lo, hi)`` ...)."""
        from ray import tune

        kind, args = self.kind
        if kind == "grid":
            return tune.grid_search(list(args))
        if kind == "choice":
            return tune.choice(list(args))
        return getattr(tune, kind)(*args)


class AshaSpec(_Section):
    """Asynchronous successive halving (Li et al. 2020), per grid point, on ``epoch``: at epochs
    ``grace_period * reduction_factor**k`` a trial whose metric is below the
    ``1 - 1/reduction_factor`` quantile of the trials that reached that epoch before it stops."""

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before a cut")
    reduction_factor: float = Field(3.0, gt=1, description="keep about 1/rf at each rung")


class SearchSpec(_Section):
    metric: Literal[SEARCH_METRICS] = Field("val_acc", description="the epoch metric to optimize")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(4, ge=1, description="trials per point of the sweep grid")
    space: dict[str, Distribution] = Field(
        ..., description="field path -> distribution, e.g. optim.lr: {loguniform: [1e-4, 1e-1]}"
    )
    algorithm: Literal["random", "optuna"] = Field(
        "random", description="random sampling, or Optuna's TPE (one study per grid point)"
    )
    asha: AshaSpec | None = Field(None, description="early stopping; none trains every trial")

    @model_validator(mode="after")
    def _space(self) -> SearchSpec:
        if not self.space:
            raise ValueError("search.space must name at least one field to search")
        if self.algorithm == "optuna":
            grids = [path for path, dist in self.space.items() if dist.kind[0] == "grid"]
            if grids:
                raise ValueError(
                    f"search.space: grid ({', '.join(grids)}) needs algorithm 'random'; "
                    "Optuna samples, use choice"
                )
        return self

    def trials_per_point(self) -> int:
        """Trials per grid point: ``num_samples`` times every ``grid`` distribution's size."""
        n = self.num_samples
        for dist in self.space.values():
            if dist.kind[0] == "grid":
                n *= len(dist.kind[1])
        return n
