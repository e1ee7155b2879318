"""The fault suite: real processes (`fnas serve ...`) on a real nats-server, one fault per case.

Each case runs a search with the tabular trainer, breaks something mid-search
and asserts that the search completes with every activated sample counted
exactly once (mesh.counted_once). Each is bounded by its own timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass

import pytest
from mesh import Mesh, Proc, counted_once, free_port, stream_results, wait_activated, wait_logged

from fnas import events
from fnas.v1 import common_pb2

pytestmark = pytest.mark.e2e
SPACE = "nasbench-graph/cora"


def spec(budget: int, simulated_s: float, seed: int = 7) -> common_pb2.SearchSpec:
    return common_pb2.SearchSpec(
        space=SPACE,
        strategy="ppo",
        seed=seed,
        budget=common_pb2.Budget(max_activated_samples=budget),
        task=common_pb2.Task(simulated_seconds=simulated_s),
    )


def jobs_in_hand(proc: Proc) -> set[str]:
    """Jobs the trainer started and has not yet finished, from its log."""
    text = proc.text()
    started = set(re.findall(r"job (\S+) started", text))
    return started - set(re.findall(r"job (\S+) (?:ok|failed) in", text))


async def start(mesh: Mesh, trainers: int, **trainer_kw) -> tuple[Proc, list[Proc]]:
    agent = mesh.start_agent()
    workers = [mesh.start_trainer(f"t{i}", **trainer_kw) for i in range(trainers)]
    await mesh.wait_agent(agent)
    for w in workers:
        await wait_logged(w, "working on")
    return agent, workers


@pytest.fixture
def mesh(tmp_path):
    m = Mesh(tmp_path).start_nats()
    yield m
    m.close()


@pytest.fixture
def secure_mesh(tmp_path, pki):
    """NATS user/password, agent mTLS and bearer tokens, all from FNAS_<SERVICE>_* variables."""
    m = Mesh(tmp_path, secure=True, pki=pki).start_nats()
    yield m
    m.close()


async def kill_mid_job(victim: Proc, timeout_s: float = 30.0) -> str:
    """SIGKILLs the trainer while it holds a job; returns that job's id."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (held := jobs_in_hand(victim)):
        assert asyncio.get_running_loop().time() < deadline, "the trainer never held a job"
        await asyncio.sleep(0.01)
    victim.kill()
    return held.pop()


@pytest.mark.timeout(120)
async def test_trainer_sigkill_mid_search(mesh):
    _agent, (t0, _t1) = await start(mesh, 2)
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=30, simulated_s=0.3))
        await wait_activated(client, search_id, 6)
        lost = await kill_mid_job(t0)
        await counted_once(mesh, client, search_id, budget=30)
    (result,) = [r for r in await stream_results(mesh, search_id) if r.job_id == lost]
    assert result.trainer_id == "t1"  # redelivered after ack_wait and finished by the survivor


@pytest.mark.timeout(120)
async def test_nats_server_restart_mid_search_keeps_every_sample(secure_mesh):
    mesh = secure_mesh
    agent, trainers = await start(mesh, 2)
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=40, simulated_s=0.1))
        await wait_activated(client, search_id, 12)
        mesh.nats.restart(same_port=True)  # SIGTERM flushes the file store; clients reconnect
        await counted_once(mesh, client, search_id, budget=40)
    for proc in (agent, *trainers):
        assert "reconnected" in proc.text(), proc.name
        assert mesh.secure and "e2e-nats-password" not in proc.text()  # secrets never logged


@pytest.mark.timeout(120)
async def test_poison_jobs_are_terminated_counted_and_the_search_goes_on(mesh):
    metrics_port = free_port()
    agent = mesh.start_agent()
    t0 = mesh.start_trainer("t0", extra=["--metrics-port", str(metrics_port)])
    await mesh.wait_agent(agent)
    await wait_logged(t0, "working on")
    nc = await mesh.nats_client()
    js = nc.jetstream()
    async with mesh.client() as client:
        search_id = await client.submit(spec(budget=30, simulated_s=0.05))
        # Garbage under a later job's id (the agent's own publish of that job is then de-duplicated),
        # and garbage nobody can be told about.
        await js.publish(events.TRAIN_JOB, b"\xff\xfe poison", headers={"Nats-Msg-Id": f"{search_id}/25"})
        await js.publish(events.TRAIN_JOB, b"\xff\xfe poison", headers={"Nats-Msg-Id": "nobody"})
        status = await counted_once(mesh, client, search_id, budget=30, failed=1)
    await nc.close()
    assert status.activated_samples == 30
    failed = [r for r in await stream_results(mesh, search_id) if r.sample_index == 25]
    assert len(failed) == 1 and failed[0].error.startswith("poison job: ")
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'fnas_trainer_jobs_total{outcome="poison"} 2.0' in scraped
    assert 'fnas_queue_poison_messages_total{consumer="trainer",stream="JOBS"} 2.0' in scraped


@dataclass(frozen=True)
class Netns:
    """A network namespace joined to the host by a veth pair: a second host for one trainer."""

    name: str
    host_ip: str
    inner_if: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def link(self, state: str) -> None:
        """Takes the namespace's link down (the host is cut off) or up again."""
        _ip("netns", "exec", self.name, "ip", "link", "set", self.inner_if, state)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)} failed: {done.stderr.strip()} (this case needs root and ip netns)")


@pytest.fixture
def netns():
    """A fresh namespace with a /30 veth link; fails (never skips) where namespaces are unavailable."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the network-cut case needs root and iproute2 (ip netns): run the suite as root")
    tag = secrets.token_hex(3)
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    while True:  # a random /30 in 10.200-249.x.x that this host does not use
        net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.{4 * secrets.randbelow(64)}"
        if net.rsplit(".", 1)[0] + "." not in used:
            break
    base = net.rsplit(".", 1)
    host_ip, inner_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    ns = Netns(f"fnas-{tag}", host_ip, f"fn{tag}n")
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", f"fn{tag}h", "type", "veth", "peer", "name", ns.inner_if)
        _ip("link", "set", ns.inner_if, "netns", ns.name)
        _ip("addr", "add", f"{host_ip}/30", "dev", f"fn{tag}h")
        _ip("link", "set", f"fn{tag}h", "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{inner_ip}/30", "dev", ns.inner_if)
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        ns.link("up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", f"fn{tag}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.mark.timeout(150)
async def test_trainer_cut_off_from_the_network_mid_job(tmp_path, netns):
    mesh = Mesh(tmp_path, host=netns.host_ip).start_nats()  # nats-server listens on the host's veth end
    try:
        agent = mesh.start_agent()
        local = mesh.start_trainer("local")
        remote = mesh.start_trainer("remote", prefix=netns.exec_prefix())
        await mesh.wait_agent(agent)
        for proc in (local, remote):
            await wait_logged(proc, "working on")
        async with mesh.client() as client:
            search_id = await client.submit(spec(budget=16, simulated_s=0.5))
            deadline = asyncio.get_running_loop().time() + 60
            while not (held := jobs_in_hand(remote)):
                assert asyncio.get_running_loop().time() < deadline, "the remote trainer never got a job"
                await asyncio.sleep(0.01)
            netns.link("down")  # mid-job: its heartbeats, result and ack can no longer reach NATS
            await counted_once(mesh, client, search_id, budget=16)
            lost = held.pop()
            (result,) = [r for r in await stream_results(mesh, search_id) if r.job_id == lost]
            assert result.trainer_id == "local"  # redelivered after ack_wait, finished once
            netns.link("up")  # the cut-off trainer comes back: its late result must not count twice
            late = (f"result of job {lost} dropped as a duplicate", "redelivering in")
            deadline = asyncio.get_running_loop().time() + 30
            while not any(text in remote.text() for text in late):  # published late, or given up
                assert asyncio.get_running_loop().time() < deadline, remote.text()[-2000:]
                await asyncio.sleep(0.05)
            await counted_once(mesh, client, search_id, budget=16)
    finally:
        mesh.close()
