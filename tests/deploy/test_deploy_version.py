"""Every image tag of the project that deploy/ names is the package's version, so a release bumps them all."""

from __future__ import annotations

import re
import tomllib

# fnas:X, fnas-slim:X, fnas-trainer-gpu:X, and kustomize's newTag: X
TAG = re.compile(r"\bfnas(?:-slim|-trainer-gpu)?:(\d+\.\d+\.\d+[\w.+-]*)|\bnewTag: *(\S+)")


def test_deploy_images_carry_the_package_version(repo):
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in (repo / "deploy").rglob("*") if p.is_file()):
        for match in TAG.finditer(path.read_text(errors="replace")):
            found.setdefault(match.group(1) or match.group(2), []).append(str(path.relative_to(repo)))
    assert sum(len(v) for v in found.values()) >= 10, found  # manifests, compose, Dockerfiles, deploy/README
    assert set(found) == {version}, found
