"""What a reader of an MLflow run sees before its metrics: its note, its dataset, its origin.

- :func:`source_tags`: MLflow's ``mlflow.user``, ``mlflow.source.name`` (the command line),
  ``mlflow.source.type`` and, from a git checkout, ``mlflow.source.git.commit``; the UI's
  User and Source columns read them.
- :func:`child_note`: a child run's description (MLflow's run note, ``mlflow.note.content``):
  the rule, the paper it implements (its module's docstring, so the registry is the one
  source), its key params and the training setup.
- :func:`dataset_input`: the run's data as an MLflow dataset input (name, root, split sizes,
  classes), so the runs table's Dataset column fills.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag

from trainers.spec import ExperimentSpec

__all__ = ["child_note", "dataset_input", "rule_paper", "source_tags", "split_sizes"]

log = logging.getLogger(__name__)


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def source_tags() -> dict[str, str]:
    """``mlflow.user`` (``BIOPROP_USER``, else the OS user), ``mlflow.source.name`` (this
    process's command line), ``mlflow.source.type`` (``LOCAL``) and the git commit of the
    code when it runs from a checkout."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main is not None and main.name:  # python -m trainers.launch: argv[0] is the file
        argv[:1] = ["python", "-m", main.name.removesuffix(".__main__")]
    elif argv[0] in ("-m", "-c"):
        argv[0] = "python"
    tags = {
        "mlflow.user": os.environ.get("BIOPROP_USER") or getpass.getuser(),
        "mlflow.source.name": shlex.join(argv)[:500],
        "mlflow.source.type": "LOCAL",
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def rule_paper(rule: str) -> str:
    """The first sentence block of the rule module's docstring: its name, idea and paper."""
    from trainers.rules import RULES

    module = sys.modules.get(RULES[rule].__module__)
    doc = (module.__doc__ if module else None) or RULES[rule].__doc__ or rule
    first = doc.strip().split("\n\n")[0].replace("\n", " ").replace("``", "`")
    return re.sub(r"^`[\w/ `]+`:\s*", "", first)  # the module names its rule(s) first


_SIZES: dict[tuple[str, str], dict[str, int]] = {}


def split_sizes(data: Any) -> dict[str, int]:
    """Images per split (``train``, ``val``) and ``classes`` of a prepared data section;
    {} for what cannot be counted (a warning says why). Counted once per process and root."""
    key = (data.kind, str(data.root))
    if key not in _SIZES:
        _SIZES[key] = _count(data)
    return dict(_SIZES[key])


def _count(data: Any) -> dict[str, int]:
    import data_pipelines

    try:
        sizes = {s: data_pipelines.split_size(data, s) for s in ("train", "val")}
        sizes["classes"] = data_pipelines.num_classes(data)
    except Exception as exc:  # a dataset input is context; never fail a run over it
        log.warning("could not count the images of %s: %s", data.root, exc)
        return {}
    return sizes


def dataset_input(data: Any, sizes: dict[str, int] | None = None) -> DatasetInput:
    """The data section as an MLflow dataset input: name ``<kind>:<root folder>``, source the
    root (type ``s3`` for an ``s3://`` root, else ``local``), profile the split sizes, context
    ``training`` (both splits are in the profile)."""
    sizes = split_sizes(data) if sizes is None else sizes
    root = str(data.root) if data.root is not None else f"sklearn:{data.kind}"
    name = f"{data.kind}:{Path(root).name}" if data.root is not None else data.kind
    profile = json.dumps({**sizes, "image_size": data.image_size})
    digest = hashlib.sha1(f"{root}|{profile}".encode()).hexdigest()[:16]
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="s3" if root.startswith("s3://") else "local",
        source=json.dumps({"uri": root}),
        profile=profile,
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in params.items()) or "the rule's defaults"


def child_note(spec: ExperimentSpec, setting: str, sizes: dict[str, int] | None = None) -> str:
    """Markdown description of one setting: rule and paper, params, model, data, optimizer."""
    o, d, s = spec.optim, spec.data, spec.scale
    data = f"`{d.kind}` at `{d.root}`" if d.root else f"`{d.kind}`"
    if sizes:
        data += f" ({sizes.get('train', '?')} train / {sizes.get('val', '?')} val images"
        data += f", {sizes.get('classes', '?')} classes)"
    last = "exact backprop" if spec.rule.last_layer == "bp" else "the rule"
    rows = [
        ("rule", f"`{spec.rule.name}`: {rule_paper(spec.rule.name)}"),
        ("rule params", _params(spec.rule.params)),
        ("last layer", last),
        ("model", f"`{spec.model}` ({spec.task}), input {d.image_size} px"),
        ("data", data),
        (
            "optimizer",
            f"{o.name}, lr {o.lr}, momentum {o.momentum}, weight decay {o.weight_decay}"
            + (", Batch Manhattan" if o.manhattan else ""),
        ),
        (
            "schedule",
            f"{spec.schedule.epochs} epochs, lr x{spec.schedule.gamma} every "
            f"{spec.schedule.step_every}; global batch {spec.batch_size} on {s.workers} "
            f"worker(s){' with GPUs' if s.gpu else ''}",
        ),
        ("seed", str(spec.seed)),
    ]
    table = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)
    return (
        f"### {spec.name}: setting `{setting}`\n\n| | |\n| --- | --- |\n{table}\n\n"
        "Metrics: `val_acc`/`map`, `val_loss`, `align_mean_angle` (degrees between each layer's "
        "`W` and the matrix its backward pass uses, averaged over layers not on BP); "
        "`angle_by_depth` (step = layer from the input, at the last epoch); per layer, for nets "
        f"of up to {spec.tracking.layer_metrics_max_layers} rule layers, `angle/<layer>`, "
        "`norm_ratio/<layer>`, `sign_concordance/<layer>`, `grad_angle/<layer>` (rule vs "
        "exact-BP weight gradient); every layer per epoch in `layer_stats.json`. Values are as "
        "measured: bp's angle of about 1e-6 degrees is float round-off.\n"
    )
