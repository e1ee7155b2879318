"""The images: Dockerfiles (multi-stage, non-root, pinned by constraints.txt, a build context that has what
they copy) and the containers' healthcheck script against a real gRPC health service and HTTP endpoint."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import socket
import sys
import tomllib

import pytest
from packaging.specifiers import SpecifierSet

from fnas import metrics, serving

DOCKERFILES = {
    "fnas": "deploy/docker/Dockerfile",
    "fnas-slim": "deploy/docker/Dockerfile.slim",
    "fnas-trainer-gpu": "deploy/docker/Dockerfile.gpu",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage name (FROM ... AS name)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for op, args in instructions(text):
        if op == "FROM":
            current = args.split()[-1]
            out[current] = []
        elif current:
            out[current].append((op, args))
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins; '!' re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            verdict = not negate
    return verdict


@pytest.fixture(scope="module")
def pyproject(repo) -> dict:
    return tomllib.loads((repo / "pyproject.toml").read_text())


@pytest.mark.parametrize("image", DOCKERFILES)
def test_dockerfile_builds_a_pinned_non_root_multi_stage_image(repo, pyproject, image):
    text = (repo / DOCKERFILES[image]).read_text()
    by_stage = stages(text)
    assert list(by_stage) == ["build", "runtime"]
    args = dict(a.split("=", 1) for op, a in instructions(text) if op == "ARG" and "=" in a)
    python = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", args["PYTHON_IMAGE"])
    assert python and SpecifierSet(pyproject["project"]["requires-python"]).contains(python.group(1) + ".0")
    assert python.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"  # what the tests ran on
    pips = [a for op, a in by_stage["build"] if op == "RUN" and "pip install" in a]
    assert pips and all("-c constraints.txt" in p and "==" not in p for p in pips), (
        "every pin comes from constraints"
    )
    if image == "fnas-slim":  # the install without the `all` extra: no torch, nothing from a torch index
        assert any(re.search(r"pip install -c constraints.txt \.( |$)", p) for p in pips)
        assert "TORCH_INDEX_URL" not in args and not any("torch" in p.split("&&")[0] for p in pips)
    else:
        assert any("pip install -c constraints.txt '.[all]'" in p for p in pips)
        index = args["TORCH_INDEX_URL"]
        assert re.search(r"/whl/cu\d+$" if image.endswith("gpu") else r"/whl/cpu$", index)
    runtime = dict(by_stage["runtime"])  # the last instruction of each kind wins
    uid = runtime["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) > 0 and f"--uid {uid}" in runtime["RUN"]
    assert json.loads(runtime["ENTRYPOINT"]) == ["fnas"] and "fnas" in pyproject["project"]["scripts"]
    assert "COPY --from=build /opt/venv /opt/venv" in [
        f"COPY {a}" for op, a in by_stage["runtime"] if op == "COPY"
    ]


def test_build_context_has_what_the_dockerfiles_copy(repo):
    patterns = [p.strip() for p in (repo / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    for path in DOCKERFILES.values():
        for stage in stages((repo / path).read_text()).values():
            for op, args in stage:
                if op == "COPY" and not args.startswith("--from"):
                    *sources, _dest = args.split()
                    for source in sources:
                        assert (repo / source).exists(), f"{path}: COPY {source}: no such file"
                        assert not ignored(source.rstrip("/"), patterns), (
                            f"{path}: {source} is in .dockerignore"
                        )
    for private in (".venv", ".git", "fnas-data", "tests", "fnas/__pycache__"):
        assert ignored(private, patterns), f"{private} would be sent to the Docker daemon"


def test_images_are_tagged_with_the_package_version(repo, pyproject, compose, base, kube):
    version = pyproject["project"]["version"]
    used = [c["image"] for c in kube.containers(base) if kube.image_name(c["image"]) in DOCKERFILES]
    used += [
        re.sub(r"^\$\{\w+:-(.+)\}$", r"\1", s["image"])
        for s in compose["services"].values()
        if "FNAS" in s["image"]
    ]
    assert len(used) >= 10 and {u.rsplit(":", 1)[1] for u in used} == {version}
    assert {u.rsplit(":", 1)[0] for u in used} == set(DOCKERFILES)
    for image, path in DOCKERFILES.items():
        assert f"-t {image}:{version} ." in (repo / path).read_text()


async def healthcheck(repo, *args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(repo / "deploy/docker/healthcheck.py"), *args, "--timeout-s", "2"
    )
    return await asyncio.wait_for(proc.wait(), 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_healthcheck_script_follows_the_grpc_health_service(repo):
    running = await serving.start([], serving.ServerConfig(port=0))
    target, name = f"127.0.0.1:{running.port}", "fnas.v1.AgentService"
    try:
        assert await healthcheck(repo, "--grpc", target, "--service", name) == 1  # unknown name
        await running.probe.set(name, serving.SERVING)
        assert await healthcheck(repo, "--grpc", target, "--service", name) == 0
        assert await healthcheck(repo, "--grpc", target) == 1  # the server stays NOT_SERVING until warm-up
        await running.probe.enter_graceful_shutdown()
        assert await healthcheck(repo, "--grpc", target, "--service", name) == 1
    finally:
        await running.server.stop(0)
    assert await healthcheck(repo, "--grpc", f"127.0.0.1:{free_port()}") == 1


async def test_healthcheck_script_asks_the_trainers_metrics_endpoint(repo):
    port = metrics.start_http(0, addr="127.0.0.1")
    assert await healthcheck(repo, "--http", f"http://127.0.0.1:{port}/metrics") == 0
    metrics.set_ready("probe-test", lambda: False)
    try:
        assert await healthcheck(repo, "--http", f"http://127.0.0.1:{port}/ready") == 1
        metrics.set_ready("probe-test", lambda: True)
        assert await healthcheck(repo, "--http", f"http://127.0.0.1:{port}/ready") == 0
    finally:
        metrics.set_ready("probe-test", None)
    assert await healthcheck(repo, "--http", f"http://127.0.0.1:{free_port()}/metrics") == 1
