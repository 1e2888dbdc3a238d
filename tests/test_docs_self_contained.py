"""The repository explains itself: no document or docstring sends the reader outside it, and
every setting the code reads from the environment is documented."""

from __future__ import annotations

import re
from pathlib import Path

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("service", "trainers", "data_pipelines", "deploy", "docs", "specs")


def _files(*suffixes: str) -> list[Path]:
    found = [ROOT / "README.md"]
    for top in SOURCES:
        found += [p for p in (ROOT / top).rglob("*") if p.suffix in suffixes and p.is_file()]
    return found


def test_nothing_points_outside_the_repo() -> None:
    outside = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _files(".py", ".md", ".yaml", ".toml")
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if "../shared" in line or "outside this repo" in line
    ]
    assert not outside, outside


def test_every_environment_setting_is_documented() -> None:
    docs = "\n".join(p.read_text() for p in _files(".md"))
    fields = {f"BIOPROP_{name}" for name in Settings.model_fields}
    read = {
        m
        for path in _files(".py")
        for m in re.findall(r"\bBIOPROP_[A-Z0-9_]+\b", path.read_text(errors="replace"))
    }
    # a service setting is documented under its field name (docs/service.md's table)
    missing = sorted(
        name
        for name in fields | read
        if name not in docs and not (name in fields and f"`{name[len('BIOPROP_') :]}`" in docs)
    )
    assert not missing, f"environment settings read by the code but not documented: {missing}"
