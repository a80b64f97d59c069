"""Fail when the environment holds a package that requirements.lock does not pin at that version.

Run after installing through the lock: a dependency added to pyproject.toml without regenerating the lock (`bash
.ci/lock`) would otherwise be installed unpinned, at whatever version PyPI serves that day.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.utils import canonicalize_name

PROJECT = "seem-vos"
INSTALLER_TOOLS = {"pip", "setuptools", "wheel"}  # the venv's own, not dependencies


def locked_versions(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def main() -> int:
    locked = locked_versions(Path(__file__).resolve().parent.parent / "requirements.lock")
    problems = []
    for dist in distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in INSTALLER_TOOLS or name == PROJECT:
            continue
        if name not in locked:
            problems.append(f"{name} {dist.version} is installed but not in requirements.lock")
        elif locked[name] != dist.version:
            problems.append(f"{name} is {dist.version}, the lock pins {locked[name]}")
    for problem in problems:
        print(f"lock check: {problem}", file=sys.stderr)
    if problems:
        print("lock check: regenerate the lock with `bash .ci/lock`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
