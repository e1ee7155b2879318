"""The Kubernetes NATS config works: three real nats-servers run the ConfigMap's nats.conf (JetStream
cluster, token, TLS) with the StatefulSet's environment; the services' own bus connects the way the
manifests tell it to (tls://$(NATS_TOKEN)@..., CA via SSL_CERT_FILE), a wrong token is refused, and
KEDA's lookup (/jsz on the consumer's leader) sees the trainers' lag."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from fnas import events, queue
from fnas.nats_server import find_binary
from fnas.v1 import queue_pb2

TOKEN = "0123456789abcdef"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def make_certs(directory: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 (openssl), laid out like the fnas-nats-tls Secret."""
    openssl = shutil.which("openssl")
    assert openssl, "these checks need the openssl command"
    tls = directory / "tls"
    tls.mkdir()

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fnas-test-ca",
        "-keyout", "ca.key", "-out", "tls/ca.crt")  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nats", "-keyout", "tls/tls.key", "-out", "s.csr"
    )
    (directory / "san.ext").write_text("subjectAltName=DNS:nats,DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "s.csr", "-CA", "tls/ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "san.ext", "-out", "tls/tls.crt")  # fmt: skip


@pytest.fixture
def cluster(base, tmp_path):
    """Three nats-servers from the StatefulSet's config, on loopback; yields (client ports, monitor ports)."""
    (cm,) = [d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"]
    (sts,) = [d for d in base if d["kind"] == "StatefulSet"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {e["name"] for e in container["env"]} == {"POD_NAME", "NATS_TOKEN"}
    make_certs(tmp_path)
    n = sts["spec"]["replicas"]
    ports = free_ports(3 * n)
    client, monitor, routes = ports[:n], ports[n : 2 * n], ports[2 * n :]
    procs = []
    for i in range(n):
        conf = cm["data"]["nats.conf"]
        for name, target in (
            ("tls", tmp_path / "tls"),
            ("data", tmp_path / f"data-{i}"),
            ("run", tmp_path / f"run-{i}"),
        ):
            target.mkdir(exist_ok=True)
            conf = conf.replace(f'"{mounts[name]}', f'"{target}')  # the pod's mount paths, here
        (tmp_path / f"nats-{i}.conf").write_text(conf)
        # Loopback ports, not 4222/8222/6222 and nats-N.nats-headless routes; the rest as deployed.
        cmd = [find_binary(), "-c", str(tmp_path / f"nats-{i}.conf"), "-a", "127.0.0.1", "-p", str(client[i]),
               "-m", str(monitor[i]), "--cluster", f"nats://127.0.0.1:{routes[i]}",
               "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]  # fmt: skip
        env = {"POD_NAME": f"{sts['metadata']['name']}-{i}", "NATS_TOKEN": TOKEN}
        with open(tmp_path / f"nats-{i}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 20
        for i, port in enumerate(monitor):  # every server listens before the test starts
            while True:
                assert procs[i].poll() is None, (tmp_path / f"nats-{i}.log").read_text()[-2000:]
                try:
                    monitoring(port, "/varz")
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nats-{i} did not start"
                    time.sleep(0.05)
        yield client, monitor
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def monitoring(port: int, path: str) -> dict:
    """A monitoring endpoint of one server, as KEDA's nats-jetstream scaler reads it (/varz, /jsz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


async def test_services_connect_to_the_deployed_nats_cluster_and_keda_sees_the_lag(
    cluster, tmp_path, monkeypatch
):
    client, monitor = cluster
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "tls" / "ca.crt"))  # as the pods' env does
    bus = await asyncio.wait_for(queue.connect(f"tls://{TOKEN}@127.0.0.1:{client[1]}", name="test"), 20)
    try:
        deadline = time.monotonic() + 30
        while True:  # the JetStream cluster elects its meta leader first
            try:
                await bus.ensure_streams(ack_wait_s=30, max_deliver=5)
                break
            except Exception:
                assert time.monotonic() < deadline, "the JetStream cluster did not form"
                await asyncio.sleep(0.5)
        job = queue_pb2.TrainJob(search_id="s1", job_id="s1/0", sample_index=0)
        await bus.publish(events.TRAIN_JOB, job, msg_id=job.job_id)
        lag, size = None, 0
        for port in monitor:  # KEDA asks each server, then trusts the consumer's leader
            reply = monitoring(port, "/jsz?acc=$G&consumers=true&config=true")
            server_name = monitoring(port, "/varz")["server_name"]
            assert (
                server_name == f"nats-{monitor.index(port)}"
            )  # the pod's name: KEDA's leader lookup needs it
            size = reply["meta_cluster"]["cluster_size"]
            for account in reply.get("account_details", []):
                for stream in account.get("stream_detail", []):
                    for consumer in stream.get("consumer_detail", []):
                        leader = consumer.get("cluster", {}).get("leader")
                        if (stream["name"], consumer["name"]) == (
                            events.JOBS,
                            events.TRAINER,
                        ) and leader == server_name:
                            lag = consumer["num_pending"] + consumer["num_ack_pending"]
        assert size == 3 and lag == 1
    finally:
        await bus.close()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(f"tls://wrong@127.0.0.1:{client[0]}", allow_reconnect=False, connect_timeout=5)
