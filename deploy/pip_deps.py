"""Install the dependencies ``pyproject.toml`` declares, without the project itself.

``python deploy/pip_deps.py [EXTRA ...] [-q]`` runs ``python -m pip install -r`` over
``[project].dependencies`` plus the named ``[project.optional-dependencies]`` extras, so the
project can follow with ``pip install --no-deps``. The image's dependency layer
(``deploy/Dockerfile``) and ``make test``'s environment (``Makefile``) run this same
command: a source change rebuilds only the thin project layer, and every CI run exercises
the image's install steps. ``--print`` lists the requirements instead of installing them.
Standard library only (``tomllib``, Python 3.11), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """``[project].dependencies`` followed by each extra's list; unknown extras are refused."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(
            f"{pyproject}: no optional-dependencies extra {', '.join(map(repr, unknown))}; "
            f"defined: {', '.join(sorted(optional)) or 'none'}"
        )
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += [r for r in optional[extra] if r not in reqs]
    return reqs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/pip_deps.py", description=__doc__)
    parser.add_argument("extras", nargs="*", help="optional-dependencies extras to add")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--print", action="store_true", help="list, do not install")
    parser.add_argument("-q", "--quiet", action="store_true", help="pass -q to pip")
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject, args.extras)
    if args.print:
        sys.stdout.write("".join(f"{r}\n" for r in reqs))
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="requirements-") as fh:
        fh.write("".join(f"{r}\n" for r in reqs))
        fh.flush()
        cmd = [sys.executable, "-m", "pip", "install", *(["-q"] if args.quiet else []), "-r"]
        return subprocess.call([*cmd, fh.name])


if __name__ == "__main__":
    raise SystemExit(main())
