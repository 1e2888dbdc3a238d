"""The deployment's manifests as data, for tests: render ``deploy/`` with kustomize, walk
the documents' pod specs and containers, and read the control plane's environment.

One source for what the cluster runs: ``tests/deploy`` checks the manifests with it, and a
test that starts the same topology by hand (``tests/cluster``) can take the control plane's
environment from :func:`control_plane_env` instead of a list of its own.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
GPU = DEPLOY / "overlays" / "gpu"
EXAMPLES = DEPLOY / "examples"
CONTROL_PLANE = "control-plane"

__all__ = [
    "BASE",
    "DEPLOY",
    "EXAMPLES",
    "GPU",
    "ROOT",
    "containers",
    "control_plane_env",
    "find",
    "kubectl",
    "pod_specs",
    "render",
    "secret_values",
]


def kubectl() -> str | None:
    """Path of the ``kubectl`` binary (its built-in kustomize renders offline), or None."""
    return shutil.which("kubectl")


def render(kustomization: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` parsed into its documents (empty documents dropped)."""
    binary = kubectl()
    if binary is None:
        raise RuntimeError("kubectl is not installed: cannot render the kustomizations")
    proc = subprocess.run(
        [binary, "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of one kind (and name, when given)."""
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec inside a document, with a path naming it: any mapping holding a
    ``containers`` list (Deployments, StatefulSets, a RayCluster's head and worker groups,
    a RayJob's submitter or cluster templates)."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                yield path, node
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")

    yield from walk(doc, f"{doc['kind']}/{doc['metadata']['name']}")


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(path, container, pod_spec)`` for every container and init container of a document."""
    for path, pod in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for c in pod.get(field) or []:
                yield f"{path}.{field}[{c['name']}]", c, pod


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's keys and values, ``data`` (base64) decoded and ``stringData`` as written."""
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**values, **(secret.get("stringData") or {})}


def control_plane_env(docs: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """The control plane container's environment as the cluster gives it: literal values,
    and values taken from the rendered Secret (``secretKeyRef``)."""
    docs = render(BASE) if docs is None else docs
    secrets = {s["metadata"]["name"]: secret_values(s) for s in find(docs, "Secret")}
    (deployment,) = find(docs, "Deployment", CONTROL_PLANE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env
