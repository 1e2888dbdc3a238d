"""The Kubernetes manifests (``deploy/``) render, and what ties them together holds: every
object a container refers to exists, every ``BIOPROP_*`` variable is a real setting, the
control plane's Ray and MLflow addresses name Services that exist, images are pinned and
every container has resources. Rendered with ``kubectl kustomize`` (offline); skipped where
no ``kubectl`` is installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_manifests import (
    BASE,
    CONTROL_PLANE,
    EXAMPLES,
    GPU,
    containers,
    control_plane_env,
    find,
    kubectl,
    pod_specs,
    render,
    secret_values,
)

from service.core.settings import Settings
from trainers.spec import ExperimentSpec, parse_yaml

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed: the kustomizations cannot be rendered"
)

TARGETS = {"base": BASE, "gpu": GPU}
NAMESPACE = "bioprop"
SETTINGS_PREFIX = Settings.model_config["env_prefix"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in TARGETS.items()}


@pytest.fixture(params=sorted(TARGETS))
def docs(request, rendered) -> list[dict[str, Any]]:
    return rendered[request.param]


def examples() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def names(docs: list[dict[str, Any]], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in find(docs, kind)}


def head_service(cluster: dict[str, Any]) -> str:
    """KubeRay's name for a RayCluster's head Service."""
    return f"{cluster['metadata']['name']}-head-svc"


def service_ports(docs: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Service name -> ports it serves, KubeRay's head Services included (the head
    container's ports)."""
    ports = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in find(docs, "Service")
    }
    for cluster in find(docs, "RayCluster"):
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        ports[head_service(cluster)] = {p["containerPort"] for p in head.get("ports", [])}
    return ports


def in_cluster_service(host: str) -> str | None:
    """The Service a host name means inside the cluster (``svc``, ``svc.ns``,
    ``svc.ns.svc``, ``svc.ns.svc.cluster.local``), or None for a name outside it."""
    parts = host.split(".")
    if len(parts) == 1:
        return host
    if parts[1] == NAMESPACE and (len(parts) == 2 or parts[2] == "svc"):
        return parts[0]
    return None


def urls_in(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z0-9+.-]*://[^\s,\"']+", text)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


# --- the documents --------------------------------------------------------------------


def test_every_document_is_named_and_namespaced(docs):
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "Secret",
        "PersistentVolumeClaim",
        "StatefulSet",
        "Deployment",
        "Service",
        "RayCluster",
    } <= kinds
    for doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    assert names(docs, "Namespace") == {NAMESPACE}


def check_references(docs) -> None:
    """Secrets (and their keys), ConfigMaps, PVCs and volumes a pod refers to exist."""
    secrets = {s["metadata"]["name"]: secret_values(s) for s in find(docs, "Secret")}
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in find(docs, "ConfigMap")}
    pvcs = names(docs, "PersistentVolumeClaim")
    checked = 0
    for doc in docs:
        templates = {
            t["metadata"]["name"] for t in doc.get("spec", {}).get("volumeClaimTemplates", [])
        }
        for where, pod in pod_specs(doc):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for volume in volumes.values():
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in pvcs, where
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps, where
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets, where
            for c in pod.get("initContainers", []) + pod["containers"]:
                cwhere = f"{where}.containers[{c['name']}]"
                for mount in c.get("volumeMounts", []):
                    assert mount["name"] in volumes or mount["name"] in templates, (cwhere, mount)
                for var in c.get("env", []):
                    ref = var.get("valueFrom", {})
                    if "secretKeyRef" in ref:
                        name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                        assert key in secrets.get(name, {}), (
                            f"{cwhere}: {var['name']} -> {name}/{key}"
                        )
                        checked += 1
                    if "configMapKeyRef" in ref:
                        name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                        assert key in configmaps.get(name, {}), f"{cwhere}: {name}/{key}"
                for source in c.get("envFrom", []):
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets, cwhere
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in configmaps, cwhere
    assert checked >= 4  # tokens, two database URLs, the Ray token
    for cluster in find(docs, "RayCluster"):
        auth = cluster["spec"]["authOptions"]
        assert auth["mode"] == "token"
        assert "auth_token" in secrets[auth["secretName"]], "KubeRay reads key auth_token"


def check_addresses(docs) -> set[str]:
    """URLs in env values and in the Secret (database URLs) that point inside the cluster
    name a Service (or KubeRay's head Service) and one of its ports; returns those Services."""
    ports = service_ports(docs)
    texts = [
        (f"{where}: {var['name']}", str(var["value"]))
        for doc in docs
        for where, c, _ in containers(doc)
        for var in c.get("env", [])
        if "value" in var
    ]
    texts += [
        (f"Secret/{s['metadata']['name']}: {k}", v)
        for s in find(docs, "Secret")
        for k, v in secret_values(s).items()
    ]
    seen = set()
    for where, text in texts:
        for url in urls_in(text):
            parts = urlsplit(url)
            service = in_cluster_service(parts.hostname)
            if service is None:
                continue
            assert service in ports, f"{where}: {url} names no Service (have {sorted(ports)})"
            assert parts.port in ports[service], (
                f"{where}: {url}: {service} serves {ports[service]}"
            )
            seen.add(service)
    return seen


def test_every_reference_is_defined(docs):
    check_references(docs)


def test_every_in_cluster_address_names_a_service_and_its_port(docs):
    assert {"mlflow", "postgres", "bioprop-head-svc"} <= check_addresses(docs)


def test_services_select_pods_and_their_named_ports(docs):
    pods = [
        (d["spec"]["template"]["metadata"].get("labels", {}), d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in find(docs, "Service"):
        selector = service["spec"]["selector"]
        matched = [spec for labels, spec in pods if selector.items() <= labels.items()]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
        named = {
            p["name"] for spec in matched for c in spec["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in named, (service["metadata"]["name"], target)


# --- the control plane ----------------------------------------------------------------


def test_bioprop_variables_are_settings(docs):
    """Every ``BIOPROP_*`` variable a container sets is a field of ``Settings`` (read from
    the class) or a node's own variable read by the code (the shard cache's), so a typo or
    a renamed setting fails here, not silently in the cluster."""
    from data_pipelines.shard_cache import CACHE_ENV

    fields = set(Settings.model_fields) | {CACHE_ENV.removeprefix(SETTINGS_PREFIX)}
    set_anywhere = {
        (where, var["name"])
        for doc in docs
        for where, c, _ in containers(doc)
        for var in c.get("env", [])
        if var["name"].startswith(SETTINGS_PREFIX)
    }
    assert set_anywhere
    unknown = [(w, n) for w, n in set_anywhere if n.removeprefix(SETTINGS_PREFIX) not in fields]
    assert not unknown, f"not settings of service.core.settings.Settings: {unknown}"


def production_settings(docs, monkeypatch) -> Settings:
    """``Settings`` read from the control plane's environment alone (Secret values in)."""
    for name in list(os.environ):
        if name.startswith(SETTINGS_PREFIX) or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    for name, value in control_plane_env(docs).items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_control_plane_settings_validate_in_production(docs, monkeypatch):
    """The control plane's environment, Secret values included, is a valid production
    configuration: the settings accept it and read it back as the manifests mean it."""
    settings = production_settings(docs, monkeypatch)
    assert settings.ENVIRONMENT == "production"
    assert settings.DB_URL.startswith("postgresql+psycopg://")
    assert [str(p) for p in settings.DATA_DIRS] == ["/shared/data"]
    assert settings.token_values()


def test_control_plane_addresses_name_the_ray_head_and_mlflow_services(docs):
    env = control_plane_env(docs)
    ports = service_ports(docs)
    (cluster,) = find(docs, "RayCluster")
    ray = urlsplit(env[f"{SETTINGS_PREFIX}RAY_JOBS_URL"])
    assert ray.scheme == "http"
    assert in_cluster_service(ray.hostname) == head_service(cluster)
    assert ray.port == 8265 and 8265 in ports[head_service(cluster)]
    mlflow_uri = env.get(f"{SETTINGS_PREFIX}MLFLOW_URI") or env["MLFLOW_TRACKING_URI"]
    mlflow = urlsplit(mlflow_uri)
    assert in_cluster_service(mlflow.hostname) == "mlflow" and mlflow.port in ports["mlflow"]
    # drivers and workers log to the same server
    for where, c, _ in containers(cluster):
        if c["name"].startswith("ray-"):
            assert env_of(c)["MLFLOW_TRACKING_URI"]["value"] == mlflow_uri, where
    # Ray token auth on the client side too
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"]
    (deployment,) = find(docs, "Deployment", CONTROL_PLANE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_control_plane_capacity_is_what_the_workers_grow_to(docs, monkeypatch):
    """BIOPROP_CLUSTER_CPUS/GPUS are the autoscaled worker groups at maxReplicas, so the
    control plane queues (and refuses) jobs against the cluster the manifests build."""
    (cluster,) = find(docs, "RayCluster")
    cpus = gpus = 0.0
    for group in cluster["spec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus += group["maxReplicas"] * float(limits["cpu"])
        gpus += group["maxReplicas"] * float(limits.get("nvidia.com/gpu", 0))
    settings = production_settings(docs, monkeypatch)
    assert settings.CLUSTER_CPUS == cpus
    assert (settings.CLUSTER_GPUS or 0.0) == gpus


# --- images and resources -------------------------------------------------------------


def all_containers(docs):
    for doc in docs:
        yield from containers(doc)


def test_images_are_pinned(docs):
    images = [(where, c.get("image", "")) for where, c, _ in all_containers(docs)]
    assert len(images) >= 5
    for where, image in images:
        name, _, digest = image.partition("@")
        tag = name.rpartition("/")[2].partition(":")[2]
        assert digest or tag, f"{where}: image {image!r} has no tag"
        assert tag != "latest", f"{where}: image {image!r} is not pinned"


def test_every_container_has_resources(docs):
    for where, c, _ in all_containers(docs):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: no {kind}"
    for cluster in find(docs, "RayCluster"):
        auto = cluster["spec"]["autoscalerOptions"]["resources"]
        assert {"cpu", "memory"} <= set(auto["requests"]) and set(auto["limits"])


# --- the Ray cluster ------------------------------------------------------------------


def ray_groups(cluster):
    spec = cluster["spec"]
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


def mounts(pod):
    (ray,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in ray["volumeMounts"]}


def test_raycluster_head_autoscaling_shared_volume_and_shm(docs):
    (cluster,) = find(docs, "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["dashboard"] == 8265
    for name, group in ray_groups(cluster):
        pod = group["template"]["spec"]
        by_path = mounts(pod)
        shared = by_path["/shared"]["persistentVolumeClaim"]["claimName"]
        assert shared in names(docs, "PersistentVolumeClaim"), name
        shm = by_path["/dev/shm"]["emptyDir"]
        assert shm["medium"] == "Memory" and shm.get("sizeLimit"), name
        # Ray puts its object store in /dev/shm only when it fits (else on disk)
        store = int(group["rayStartParams"]["object-store-memory"]) / 2**30
        assert store < gib(shm["sizeLimit"]), name
    pvc = find(docs, "PersistentVolumeClaim", "bioprop-shared")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def gib(quantity: str) -> float:
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**30


def test_gpu_overlay_workers(rendered):
    (cluster,) = find(rendered["gpu"], "RayCluster")
    workers = cluster["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in workers] == ["gpu"]
    pod = workers[0]["template"]["spec"]
    (c,) = pod["containers"]
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert (
        int(limits["nvidia.com/gpu"]) >= 1
        and requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # /dev/shm is memory: it must fit inside the container's memory limit with room to train
    shm = gib(mounts(pod)["/dev/shm"]["emptyDir"]["sizeLimit"])
    assert shm < gib(limits["memory"]) / 2
    # one image for every bioprop container
    images = {c["image"] for _, c, _ in all_containers(rendered["gpu"]) if "bioprop" in c["image"]}
    assert len(images) == 1
    # the base stays CPU-only
    (base,) = find(rendered["base"], "RayCluster")
    for _, c, _ in containers(base):
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})


def test_example_spec_fits_the_gpu_overlay(rendered, monkeypatch):
    """The packaged sweep is a valid spec, under the control plane's DATA_DIRS, its DDP
    workers fit the GPU worker group at full scale (GPUs, and CPUs per pod), and the control
    plane's admission check (``service.core.resources.shortfall``) accepts it."""
    from service.core.resources import shortfall

    docs = rendered["gpu"]
    settings = production_settings(docs, monkeypatch)
    (specs,) = find(docs, "ConfigMap", "bioprop-specs")
    (group,) = find(docs, "RayCluster")[0]["spec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpus_per_pod, cpus_per_pod = int(limits["nvidia.com/gpu"]), float(limits["cpu"])
    data_dirs = control_plane_env(docs)[f"{SETTINGS_PREFIX}DATA_DIRS"].split(",")
    assert specs["data"]
    for filename, text in specs["data"].items():
        spec = ExperimentSpec.model_validate(parse_yaml(text))  # as `bioprop submit` reads it
        assert spec.scale.gpu, filename
        assert spec.scale.workers <= gpus_per_pod * group["maxReplicas"], filename
        assert gpus_per_pod * spec.scale.cpus_per_worker <= cpus_per_pod, filename
        assert any(Path(spec.data.root).is_relative_to(d) for d in data_dirs), filename
        assert spec.storage_path is None, f"{filename}: leave storage to BIOPROP_STORAGE_PATH"
        assert not shortfall(spec.scale, settings.cluster()), filename


def test_rayjob_example_runs_a_packaged_spec_on_the_cluster(rendered):
    docs = rendered["gpu"]
    (job,) = [d for d in examples() if d["kind"] == "RayJob"]
    assert job["metadata"]["namespace"] == NAMESPACE
    (cluster,) = find(docs, "RayCluster")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert job["spec"]["shutdownAfterJobFinishes"] is False
    # the spec file the entrypoint names is a key of a ConfigMap mounted on the head
    argv = shlex.split(job["spec"]["entrypoint"].split("&&")[-1])
    assert argv[:3] == ["python", "-m", "trainers.launch"]
    spec_path = Path(argv[3])
    head_mounts = mounts(cluster["spec"]["headGroupSpec"]["template"]["spec"])
    volume = head_mounts[str(spec_path.parent)]
    (configmap,) = find(docs, "ConfigMap", volume["configMap"]["name"])
    assert spec_path.name in configmap["data"]
    # the driver's working directory (its default storage) is on the shared volume
    assert re.search(r"cd /shared/", job["spec"]["entrypoint"])


# --- MLflow and PostgreSQL ------------------------------------------------------------


def mlflow_args(docs) -> tuple[dict[str, str], dict[str, Any]]:
    (deployment,) = find(docs, "Deployment", "mlflow")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["mlflow"] and c["args"][0] == "server"
    return dict(a.removeprefix("--").partition("=")[::2] for a in c["args"][1:]), c


def mlflow_host_check():
    """MLflow's own Host header check (``mlflow.server.security_utils``), loaded from its
    file: importing it through ``mlflow.server`` builds the whole server app first."""
    import importlib.util

    import mlflow

    path = Path(mlflow.__path__[0]) / "server" / "security_utils.py"
    spec = importlib.util.spec_from_file_location("_mlflow_security_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.is_allowed_host_header


def test_mlflow_server_flags(docs):
    is_allowed_host_header = mlflow_host_check()
    args, c = mlflow_args(docs)
    assert "serve-artifacts" in args
    destination = args["artifacts-destination"]
    assert destination.startswith("/shared/") and "/shared" in {
        m["mountPath"] for m in c["volumeMounts"]
    }
    backend = env_of(c)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    (secret,) = find(docs, "Secret", backend["name"])
    assert secret_values(secret)[backend["key"]].startswith("postgresql")
    # MLflow's own Host check (the one that answers 403) accepts every in-cluster name of
    # the Service and localhost (port-forward), and still refuses a foreign host
    allowed = args["allowed-hosts"].split(",")
    (port,) = service_ports(docs)["mlflow"]
    for host in (
        "mlflow",
        f"mlflow.{NAMESPACE}",
        f"mlflow.{NAMESPACE}.svc",
        f"mlflow.{NAMESPACE}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ):
        assert is_allowed_host_header(allowed, f"{host}:{port}"), host
    assert not is_allowed_host_header(allowed, f"attacker.example.com:{port}")


def test_postgres_creates_both_databases(docs):
    (statefulset,) = find(docs, "StatefulSet", "postgres")
    (c,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in c["env"]}
    urls = [
        urlsplit(v)
        for s in find(docs, "Secret")
        for v in secret_values(s).values()
        if v.startswith("postgresql")
    ]
    databases = {u.path.lstrip("/") for u in urls if in_cluster_service(u.hostname) == "postgres"}
    assert databases == {"bioprop", "mlflow"}
    assert {u.username for u in urls} == {env["POSTGRES_USER"]}
    (init,) = find(docs, "ConfigMap", "postgres-init")
    created = {env["POSTGRES_DB"]} | set(
        re.findall(r"CREATE DATABASE (\w+)", "\n".join(init["data"].values()))
    )
    assert databases <= created


# --- overlays of the user's own ---------------------------------------------------------


def own_overlay(tmp_path: Path, secret_env: str, **extra: Any) -> Path:
    """An overlay over the GPU overlay, as deploy/README.md step 3 writes it."""
    overlay = tmp_path / "mine"
    overlay.mkdir()
    (overlay / "secret.env").write_text(secret_env)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(GPU, overlay)],
        "images": [{"name": "bioprop", "newName": "reg.example/lab/bioprop", "newTag": "1.2.3"}],
        "secretGenerator": [{"name": "bioprop", "behavior": "replace", "envs": ["secret.env"]}],
        "generatorOptions": {"disableNameSuffixHash": True},
        **extra,
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


SECRET_ENV = (
    "api-tokens=t0k3n\npostgres-password=pw\n"
    "db-url=postgresql+psycopg://bioprop:pw@postgres:5432/bioprop\n"
    "mlflow-db-url=postgresql+psycopg://bioprop:pw@postgres:5432/mlflow\n"
    "auth_token=r4y\n"
)


def test_secrets_overlay_replaces_every_example_value(tmp_path):
    """deploy/README.md's own-overlay recipe over the GPU overlay: a secretGenerator with
    behavior: replace leaves no example value in the rendered Secret, and the images entry
    points every bioprop container (Ray's included) at the pushed image."""
    overlay = own_overlay(tmp_path, SECRET_ENV)
    docs = render(overlay)
    (secret,) = find(docs, "Secret", "bioprop")
    values = secret_values(secret)
    assert values["api-tokens"] == "t0k3n" and values["auth_token"] == "r4y"
    assert not [k for k, v in values.items() if "change-me" in v]
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert control_plane_env(docs)["BIOPROP_API_TOKENS"] == "t0k3n"
    images = {c["image"] for _, c, _ in all_containers(docs) if "bioprop" in c["image"]}
    assert images == {"reg.example/lab/bioprop:1.2.3"}


def test_secret_env_files_are_git_ignored():
    """Step 3 writes real secrets to deploy/overlays/mine/secret.env: git must not pick it up."""
    git = shutil.which("git")
    if git is None or not (BASE.parents[1] / ".git").exists():
        pytest.skip("not a git checkout")
    path = "deploy/overlays/mine/secret.env"
    check = subprocess.run(
        [git, "check-ignore", "-q", path], cwd=BASE.parents[1], timeout=30, check=False
    )
    assert check.returncode == 0, f"{path} is not ignored by .gitignore"


def test_managed_postgres_overlay(tmp_path):
    """deploy/README.md's managed-PostgreSQL variation: the in-cluster server is gone, the
    database URLs name the managed host, and everything else still resolves."""
    env = SECRET_ENV.replace("@postgres:5432", "@db.prod.example.com:5432")
    delete = [
        {"$patch": "delete", "apiVersion": v, "kind": k, "metadata": {"name": n}}
        for v, k, n in (
            ("apps/v1", "StatefulSet", "postgres"),
            ("v1", "Service", "postgres"),
            ("v1", "ConfigMap", "postgres-init"),
        )
    ]
    overlay = own_overlay(tmp_path, env, patches=[{"patch": json.dumps(p)} for p in delete])
    docs = render(overlay)
    assert not [d for d in docs if "postgres" in d["metadata"]["name"]]
    check_references(docs)
    assert "postgres" not in check_addresses(docs)
    assert "db.prod.example.com" in control_plane_env(docs)["BIOPROP_DB_URL"]
