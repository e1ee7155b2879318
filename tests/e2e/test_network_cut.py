"""A trainer whose host is cut off mid-job: the trainer runs in its own network namespace, joined to
the host by a veth pair, and the link goes down while it holds a job. JetStream redelivers the job to
the other trainer after ack_wait; when the link comes back, the cut-off trainer's late result is a
duplicate. Needs root and `ip netns`: without them the case fails, loudly, instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from mesh import Mesh, counted_once, jobs_in_hand, spec, stream_results, wait_logged

pytestmark = pytest.mark.e2e


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
            search_id = await client.submit(spec(budget=10, simulated_s=0.4))
            deadline = asyncio.get_running_loop().time() + 60
            while not (held := jobs_in_hand(remote)):
                assert asyncio.get_running_loop().time() < deadline, "the remote trainer never got a job"
                await asyncio.sleep(0.01)
            netns.link("down")  # mid-job: its heartbeats, result and ack can no longer reach NATS
            await counted_once(mesh, client, search_id, budget=10)
            lost = held.pop()
            (result,) = [r for r in await stream_results(mesh, search_id) if r.job_id == lost]
            assert result.trainer_id == "local"  # redelivered after ack_wait, finished once
            netns.link("up")  # the cut-off trainer comes back: its late result must not count twice
            late = (f"result of job {lost} dropped as a duplicate", "redelivering in")
            deadline = asyncio.get_running_loop().time() + 30
            while not any(text in remote.text() for text in late):  # published late, or given up
                assert asyncio.get_running_loop().time() < deadline, remote.text()[-2000:]
                await asyncio.sleep(0.05)
            await counted_once(mesh, client, search_id, budget=10)
    finally:
        mesh.close()
