"""The hash-locked requirements agree with pyproject.toml (fast: part of the default suite).

A floor raised in pyproject.toml without `scripts/lock` would leave deployments installing the
old, vulnerable pin; a pin without hashes would let pip install whatever the index serves.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from package.debian_root import REPO


def pins(lock_text: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of sha256 hashes) of each `name==version \\ --hash=...` entry."""
    found: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock_text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", entry)
        if head:
            hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", entry))
            found[canonicalize_name(head.group(1))] = (head.group(2), hashes)
    return found


def test_every_dependency_is_pinned_within_pyproject_floors_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = pins((REPO / "requirements" / "dockd.lock.txt").read_text())
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/dockd.lock.txt: run scripts/lock"
        version, _ = locked[name]
        assert requirement.specifier.contains(version), (
            f"{name}=={version} in the lock is outside {requirement.specifier}: run scripts/lock"
        )
    assert all(hashes > 0 for _, hashes in locked.values()), "an unhashed pin"


def test_the_build_backend_is_pinned_with_hashes():
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    locked = pins((REPO / "requirements" / "build.lock.txt").read_text())
    for spec in build:
        requirement = Requirement(spec)
        version, hashes = locked[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version) and hashes > 0
