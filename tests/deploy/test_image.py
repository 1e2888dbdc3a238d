"""The container image (``deploy/Dockerfile``): no container engine runs on the CI machines,
so these tests check what ties the image to what CI does run. Its install steps are the
commands ``make test`` runs (dependencies from pyproject.toml first, then the project with
``--no-deps``), the dependency layer comes before any source, it runs as a non-root user,
and one Python version (3.11) holds for the image, the Makefile, pyproject and the README."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys

import tomllib
from deploy_manifests import DEPLOY

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"
SOURCES = ("service", "trainers", "data_pipelines")


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), " ".join(args.split())))
    return out


def make_install_commands() -> list[str]:
    """The pip commands of the Makefile's environment recipe, ``$(BIN)/python`` as ``python``."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", text, re.M).group(1)
    return [
        " ".join(line.strip().replace("$(BIN)/python", "python").split())
        for line in recipe.splitlines()
        if "pip" in line
    ]


def docker_install_commands() -> list[str]:
    return [
        cmd.strip()
        for instruction, args in dockerfile()
        if instruction == "RUN"
        for cmd in args.split("&&")
        if "pip" in cmd
    ]


def test_image_installs_with_the_commands_make_test_runs():
    """Each image install step is a Makefile step; the Makefile adds only the dev extra and
    the editable flag. Both install dependencies first and the project with --no-deps."""
    make, docker = make_install_commands(), docker_install_commands()
    assert len(docker) == len(make) == 3, (docker, make)
    for d, m in zip(docker, make, strict=True):
        assert d.split() == [t for t in m.split() if t not in ("dev", "-e")], (d, m)
    assert "deploy/pip_deps.py" in docker[1] and "--no-deps" in docker[2]


def test_dependency_layer_comes_before_the_sources():
    steps = dockerfile()
    copies = [(i, args) for i, (ins, args) in enumerate(steps) if ins == "COPY"]
    runs = [(i, args) for i, (ins, args) in enumerate(steps) if ins == "RUN"]
    (deps_at,) = [i for i, args in runs if "pip_deps.py" in args]
    (project_at,) = [i for i, args in runs if "--no-deps" in args]
    copied_before_deps = " ".join(args for i, args in copies if i < deps_at)
    assert "pyproject.toml" in copied_before_deps
    for source in SOURCES:
        assert source not in copied_before_deps.split(), source
        assert any(source in args.split() for i, args in copies if deps_at < i < project_at)


def test_image_runs_as_a_non_root_user():
    users = [args for ins, args in dockerfile() if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (ins, _) in enumerate(dockerfile()) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in dockerfile()[last_user:])


def test_one_python_version_everywhere():
    (base,) = [args for ins, args in dockerfile() if ins == "FROM"]
    version = re.match(r"python:(\d+\.\d+)\.\d+-", base)
    assert version, f"base image {base!r} is not a pinned python:X.Y.Z image"
    minor = version.group(1)
    assert minor == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"PY ?= python{minor}" in (ROOT / "Makefile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={minor}"
    assert f"Python {minor}" in (ROOT / "README.md").read_text()
    assert "580" in DOCKERFILE.read_text()  # the CUDA 13 driver requirement is stated


def test_dockerignore_keeps_the_context_to_what_the_image_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns)

    for heavy in (".git", ".venv", "bioprop-runs", "tests", "deploy/base"):
        assert ignored(heavy), heavy
    for ins, args in dockerfile():
        if ins == "COPY":
            for src in args.split()[:-1]:
                assert not ignored(src) and (ROOT / src).exists(), src


def test_pip_deps_lists_pyproject_and_refuses_unknown_extras():
    script = DEPLOY / "pip_deps.py"
    listed = subprocess.run(
        [sys.executable, str(script), "dev", "--print"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert listed == project["dependencies"] + project["optional-dependencies"]["dev"]
    bad = subprocess.run(
        [sys.executable, str(script), "gpu-extra-that-does-not-exist", "--print"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "gpu-extra-that-does-not-exist" in bad.stderr
    assert "dev" in bad.stderr  # names the extras that exist
