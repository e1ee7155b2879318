"""Real processes for the fault suite: a nats-server, `fnas serve agent` and `fnas serve trainer` workers.

`Mesh` starts them on free ports with logs in files, optionally secured (NATS
user/password, agent mTLS and bearer tokens, all passed the way an operator
would: FNAS_<SERVICE>_<FIELD> variables), and `counted_once` checks what every
fault case must end with: the search succeeded and each activated sample was
counted exactly once, against the results JetStream actually holds.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
from timing import scaled

from fnas import events, serving
from fnas.client import AgentClient
from fnas.config import is_loopback
from fnas.nats_server import EmbeddedNats
from fnas.tls import ClientTLS
from fnas.v1 import common_pb2, queue_pb2, search_pb2
from fnas_cli.cluster import SERVICES

TOKEN = "e2e-tenant-token-0123456789"
SPACE = "nasbench-graph/cora"
NATS_USER, NATS_PASSWORD = "fnas", "e2e-nats-password-0123456789"
AGENT_SERVICE = "fnas.v1.AgentService"


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Proc:
    """One service process and its log file."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path) -> None:
        self.name, self.popen, self.log = name, popen, log

    def text(self) -> str:
        """Everything the process logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Sends `sig` and waits for the exit; returns the exit code."""
        self.popen.send_signal(sig)
        return self.popen.wait(20)


class Mesh:
    """nats-server + agent + trainers as separate processes (one test's cluster)."""

    def __init__(
        self,
        root: Path,
        *,
        secure: bool = False,
        pki=None,
        host: str = "127.0.0.1",
        nats_auth: bool = False,
        service_token: str = "",
    ) -> None:
        """`service_token`: every service gets it (FNAS_<SERVICE>_SERVICE_TOKEN), the mesh's identity."""
        self.root, self.secure, self.pki, self.host = root, secure, pki, host
        self.service_token = service_token
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # NATS beyond loopback always has a user (fnas.config refuses it without credentials).
        self.nats_auth = nats_auth or secure or not is_loopback(host)
        auth = {"user": NATS_USER, "password": NATS_PASSWORD} if self.nats_auth else {}
        # A fixed port, so that a restarted nats-server is where the clients reconnect to.
        self.nats = EmbeddedNats(root / "nats", port=free_port(host), host=host, **auth)
        self.agent_address = f"127.0.0.1:{free_port()}"
        self.procs: list[Proc] = []

    def start_nats(self) -> Mesh:
        self.nats.start()
        return self

    def _env(self, service: str) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        prefix = f"FNAS_{service.upper()}_"
        if self.nats_auth:
            env |= {prefix + "NATS_USER": NATS_USER, prefix + "NATS_PASSWORD": NATS_PASSWORD}
        if self.service_token:
            env[prefix + "SERVICE_TOKEN"] = self.service_token
        if self.secure and service == "agent":
            env |= {
                prefix + "AUTH_TOKENS": f"e2e:{TOKEN}",
                prefix + "TLS_CERT": str(self.pki.server_cert),
                prefix + "TLS_KEY": str(self.pki.server_key),
                prefix + "TLS_CLIENT_CA": str(self.pki.ca),
            }
        return env

    def _spawn(self, name: str, service: str, args: list[str], prefix: list[str] = ()) -> Proc:
        log = self.logs / f"{name}.log"
        # `fnas serve NAME` where the CLI has it, `python -m services.NAME` otherwise: the same main().
        serve = ["fnas_cli", "serve", service] if service in SERVICES else [f"services.{service}"]
        # The fixed port's URL, also while nats-server is down (a restart, or a case without it).
        url = f"nats://{self.host}:{self.nats.requested_port}"
        nats_url = ["--nats-url", url] if service != "pool" else []
        cmd = [*prefix, sys.executable, "-m", *serve, *nats_url, *args]
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=self._env(service)
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_agent(self, extra: list[str] = ()) -> Proc:
        port = self.agent_address.rsplit(":", 1)[1]
        args = ["--port", port, "--data-dir", str(self.root / "data"), "--grace-s", "1", *extra]
        return self._spawn("agent", "agent", args)

    def start_helper(self, service: str, port: int, extra: list[str] = ()) -> Proc:
        """The critic or buffer service on `port`, its LMDB under the mesh's data dir."""
        args = ["--port", str(port), "--data-dir", str(self.root / "data"), "--grace-s", "1", *extra]
        return self._spawn(service, service, args)

    def start_trainer(
        self,
        name: str,
        *,
        ack_wait_s: float = 2.0,
        heartbeat_s: float = 0.3,
        prefix: list[str] = (),
        extra: list[str] = (),
    ) -> Proc:
        """A trainer worker; `prefix` runs it elsewhere (e.g. `ip netns exec NS`)."""
        args = ["--trainer-id", name, "--ack-wait-s", str(ack_wait_s), "--heartbeat-s", str(heartbeat_s)]
        args += ["--max-deliver", "5", "--grace-s", "1", "--nak-delay-s", "0.2", *extra]
        return self._spawn(name, "trainer", args, prefix)

    def start_pool(self, port: int, extra: list[str] = ()) -> Proc:
        """The PoolService on `port`, its LMDB under the mesh's data dir (fsync per put: the default)."""
        args = ["--port", str(port), "--data-dir", str(self.root / "data"), "--grace-s", "1", *extra]
        return self._spawn("pool", "pool", args)

    def tls(self) -> ClientTLS | None:
        """How a client reaches the agent (mTLS when secure)."""
        if not self.secure:
            return None
        return ClientTLS(ca=self.pki.ca, cert=self.pki.client_cert, key=self.pki.client_key)

    def client(self) -> AgentClient:
        """A AgentClient of the agent, with the tenant token and mTLS when secure."""
        return AgentClient(self.agent_address, token=TOKEN if self.secure else None, tls=self.tls())

    async def wait_agent(self, proc: Proc, timeout_s: float = 60.0) -> None:
        """Until the agent reports SERVING (imports torch: seconds on a busy machine)."""
        tls = self.tls()
        creds = tls.credentials() if tls else None
        deadline = time.monotonic() + scaled(timeout_s)
        while True:
            assert proc.popen.poll() is None, f"agent exited during start-up:\n{proc.text()[-3000:]}"
            try:
                status = await serving.health_status(self.agent_address, AGENT_SERVICE, credentials=creds)
                if status == serving.SERVING:
                    return
            except Exception:
                pass
            assert time.monotonic() < deadline, f"agent not SERVING in {timeout_s} s:\n{proc.text()[-3000:]}"
            await asyncio.sleep(0.1)

    async def wait_ready(self, agent: Proc, helpers: list[Proc] = (), trainers: list[Proc] = ()) -> None:
        """Until the agent is SERVING, each helper (critic, buffer, pool) ready and each trainer working."""
        await self.wait_agent(agent)
        for proc in helpers:
            await wait_logged(proc, f"{proc.name} ready", timeout_s=60)
        for proc in trainers:
            await wait_logged(proc, "working on")

    async def nats_client(self) -> nats.NATS:
        auth = {"user": NATS_USER, "password": NATS_PASSWORD} if self.nats_auth else {}
        return await nats.connect(self.nats.url, **auth)

    def close(self) -> None:
        """Kills what is still running and stops nats-server."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)
        self.nats.stop()


async def wait_logged(proc: Proc, text: str, timeout_s: float = 30.0) -> None:
    """Until `text` appears in the process's log."""
    deadline = time.monotonic() + scaled(timeout_s)
    while text not in proc.text():
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.text()[-3000:]}"
        assert time.monotonic() < deadline, f"{proc.name} did not log {text!r} in {timeout_s} s"
        await asyncio.sleep(0.02)


async def wait_activated(client: AgentClient, search_id: str, n: int, timeout_s: float = 60.0) -> None:
    """Until the search has at least n activated samples."""
    deadline = time.monotonic() + scaled(timeout_s)
    while (await client.get(search_id)).activated_samples < n:
        assert time.monotonic() < deadline, f"fewer than {n} activated samples after {timeout_s} s"
        await asyncio.sleep(0.05)


async def stream_results(mesh: Mesh, search_id: str) -> list[queue_pb2.TrainResult]:
    """Every TrainResult of the search held by the EVENTS stream (what the agent could count)."""
    nc = await mesh.nats_client()
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(events.train_result(search_id), stream=events.EVENTS)
        out: list[queue_pb2.TrainResult] = []
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except TimeoutError:  # nats.errors.TimeoutError is one too: the stream has no more
                break
            for msg in msgs:
                out.append(queue_pb2.TrainResult.FromString(msg.data))
                await msg.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def counted_once(
    mesh: Mesh, client: AgentClient, search_id: str, budget: int, failed: int = 0, timeout_s: float = 90.0
) -> search_pb2.SearchStatus:
    """Waits for the search to finish, then asserts it succeeded with every sample counted once."""
    trajectory: list[common_pb2.Sample] = []

    async def follow() -> None:
        async for event in client.watch(search_id):
            if event.HasField("sample"):
                trajectory.append(event.sample)

    await asyncio.wait_for(follow(), scaled(timeout_s))
    status = await client.get(search_id)
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED, status.error
    assert status.activated_samples == budget == status.policy_samples_trained
    assert status.failed_samples == failed
    every = [s.index for s in trajectory]
    assert len(every) == len(set(every)), "a sample was learned from twice"
    indices = [s.index for s in trajectory if s.source == common_pb2.SAMPLE_SOURCE_TRAINED]
    assert len(indices) == budget, "a trained sample was lost"  # the others are recalls of these
    # Final-selection retrains (paper 6.2) travel as results too, but are no samples.
    results = [r for r in await stream_results(mesh, search_id) if not r.final_rank]
    by_job: dict[str, list[queue_pb2.TrainResult]] = {}
    for r in results:
        by_job.setdefault(r.job_id, []).append(r)
    assert all(len(rs) == 1 for rs in by_job.values()), "JetStream kept two results of one job"
    ok = {r.sample_index for r in results if r.outcome == queue_pb2.TRAIN_OUTCOME_OK}
    assert ok == set(indices), "the trained results and the samples learned from differ"
    assert len(results) - len(ok) == failed
    return status
