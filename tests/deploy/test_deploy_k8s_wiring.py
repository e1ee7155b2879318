"""Kubernetes manifests agree with the code: every command, flag, variable, port, probe and address the
containers use exists in `fnas serve` and the services, and Services, NetworkPolicies, Secrets and the
ServiceMonitor connect what calls what."""

from __future__ import annotations

import re

import pytest
from google.protobuf import descriptor_pool

from fnas import metrics
from fnas.v1 import agent_pb2, buffer_pb2, critic_pb2, pool_pb2  # noqa: F401  (fills the descriptor pool)

README = "deploy/README.md"
GRPC_NAME = {short: full for full, short in metrics.SERVICE_NAMES.items()}  # agent -> fnas.v1.AgentService
FNAS = ("agent", "critic", "pool", "buffer", "trainer")


def workload(docs, name):
    (found,) = [
        d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name
    ]
    return found


def env_of(container) -> dict[str, str]:
    """The container's environment as the kubelet builds it: $(VAR) expanded, Secrets as placeholders."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        else:
            ref = e["valueFrom"]
            env[e["name"]] = f"<{ref['secretKeyRef']['key']}>" if "secretKeyRef" in ref else "pod-0"
    assert "$(" not in "".join(env.values()), "a $(VAR) refers to a variable defined later or not at all"
    return env


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(doc) -> dict:
    return doc["spec"]["template"]["metadata"]["labels"]


def service_target(docs, host: str, port: int):
    """The workload and container port that `host:port` reaches through a Service of `docs`."""
    (svc,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host]
    (sport,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    (target,) = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(d))
    ]
    ports = {
        p["name"]: p["containerPort"] for p in target["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    return target, ports[sport["targetPort"]] if isinstance(sport["targetPort"], str) else sport["targetPort"]


@pytest.mark.parametrize("name", FNAS)
def test_containers_agree_with_fnas_serve(overlay, cli, landed, name):
    deployment = workload(overlay, name)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args, env = container["args"], env_of(container)
    assert args[:2] == ["serve", name]
    # The pool and the buffer run from the image without torch (tests/e2e/test_slim_install.py).
    image = {"pool": "fnas-slim", "buffer": "fnas-slim", "trainer": "fnas-trainer-gpu"}.get(name, "fnas")
    assert container["image"].split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] == image
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = [container.get(p, {}) for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    grpc_probes = [p["grpc"] for p in probes if "grpc" in p]
    if name in GRPC_NAME:  # a gRPC service: native gRPC probes on its port, named as the proto names it
        assert descriptor_pool.Default().FindServiceByName(GRPC_NAME[name])
        assert len(grpc_probes) == 3 and {p["port"] for p in grpc_probes} == {ports["grpc"]}
        assert {p.get("service", "") for p in grpc_probes} == {GRPC_NAME[name], ""}
    if name not in landed:  # its issue is still open: `fnas serve` does not know it yet
        assert name not in cli
        return
    assert name in cli, f"services/{name}/__main__.py exists: add {name} to SERVICES in fnas_cli/cluster.py"
    cfg = cli[name].effective(args[2:], env)
    assert ports["metrics"] == cfg.metrics_port
    if name in GRPC_NAME:
        assert (cfg.host, cfg.port) == ("0.0.0.0", ports["grpc"])
    stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert spec["terminationGracePeriodSeconds"] > stop + cfg.grace_s, "SIGKILL before the grace period ends"
    if hasattr(cfg, "data_dir"):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[str(cfg.data_dir)])
        # Stateful services keep LMDB on a claim; a trainer's data_dir is a cache (latency table).
        kind = "emptyDir" if name == "trainer" else "persistentVolumeClaim"
        assert kind in volume, f"{name}: data_dir is not on a {kind} volume"
    if hasattr(cfg, "nats_url"):
        url = re.fullmatch(r"tls://<token>@([\w.-]+):(\d+)", cfg.nats_url)
        assert url, f"{name}: NATS over TLS with the token from fnas-nats-auth, got {cfg.nats_url}"
        target, port = service_target(overlay, url.group(1), int(url.group(2)))
        assert target["metadata"]["name"] == "nats" and port == 4222
        assert env["SSL_CERT_FILE"].startswith(
            next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "nats-ca")
        )


def test_service_addresses_reach_the_right_grpc_servers(overlay):
    """Every FNAS_*_ADDRESS a container gets is host:port of a Service leading to that service's gRPC port."""
    seen = 0
    for name in FNAS:
        for key, value in env_of(
            workload(overlay, name)["spec"]["template"]["spec"]["containers"][0]
        ).items():
            if key.endswith("_ADDRESS"):
                host, port = value.rsplit(":", 1)
                target, container_port = service_target(overlay, host, int(port))
                assert target["metadata"]["name"] == host and container_port == int(port), key
                seen += 1
    assert seen >= 3  # agent -> critic, agent -> buffer, trainer -> pool


def test_every_service_port_leads_to_a_container_port(overlay):
    services = [d for d in overlay if d["kind"] == "Service"]
    assert len(services) >= 7
    for svc in services:
        for p in svc["spec"]["ports"]:
            target, container_port = service_target(overlay, svc["metadata"]["name"], p["port"])
            assert container_port in {
                c["containerPort"] for c in target["spec"]["template"]["spec"]["containers"][0]["ports"]
            }


def admits(policies, callee: dict, caller_labels: dict | None, namespace: str | None, port: int) -> bool:
    """Whether some ingress rule of a policy selecting `callee`'s pods lets the caller reach `port`."""
    for pol in policies:
        if "Ingress" not in pol["spec"]["policyTypes"] or not selects(
            pol["spec"]["podSelector"], pod_labels(callee)
        ):
            continue
        for rule in pol["spec"].get("ingress", []):
            if port not in {p["port"] for p in rule.get("ports", [])}:
                continue
            for peer in rule.get("from", []):
                pods, spaces = peer.get("podSelector"), peer.get("namespaceSelector")
                if namespace is None and pods is not None and spaces is None and selects(pods, caller_labels):
                    return True
                namespace_labels = {"kubernetes.io/metadata.name": namespace}
                if (
                    namespace is not None
                    and pods is None
                    and spaces is not None
                    and selects(spaces, namespace_labels)
                ):
                    return True
    return False


def test_network_policies_deny_by_default_and_admit_every_caller(overlay):
    policies = [d for d in overlay if d["kind"] == "NetworkPolicy"]
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    agent, trainer = workload(overlay, "agent"), workload(overlay, "trainer")
    calls = [(agent, "critic", 50052), (agent, "buffer", 50054), (trainer, "pool", 50053)]
    calls += [(workload(overlay, n), "nats", 4222) for n in ("agent", "critic", "buffer", "trainer")]
    for caller, callee, port in calls:
        assert admits(policies, workload(overlay, callee), pod_labels(caller), None, port), (caller, callee)
    assert admits(policies, workload(overlay, "nats"), pod_labels(workload(overlay, "nats")), None, 6222)
    assert not admits(policies, workload(overlay, "critic"), pod_labels(trainer), None, 50052)
    assert admits(policies, workload(overlay, "nats"), None, "keda", 8222)  # KEDA reads the lag
    for name in FNAS:
        assert admits(policies, workload(overlay, name), None, "monitoring", 9464), f"{name}: not scraped"
    assert admits(policies, agent, {"fnas.io/client": "true"}, None, 50051)
    egress = next(p for p in policies if p["metadata"]["name"] == "egress-in-namespace-and-dns")
    assert any(53 in {p["port"] for p in rule.get("ports", [])} for rule in egress["spec"]["egress"])


def test_secrets_are_created_as_the_readme_says(overlay, kube, repo):
    """Secrets stay out of git: every (secret, key) a pod reads is made by a command in deploy/README.md."""
    used = set()
    for doc in overlay:
        spec = kube.pod_spec(doc)
        for c in spec.get("containers", []) if spec else []:
            for e in c.get("env", []):
                if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                    used.add((ref["name"], ref["key"]))
        for v in spec.get("volumes", []) if spec else []:
            if "secret" in v:
                items = v["secret"].get("items")
                keys = (
                    [i["key"] for i in items] if items else ["tls.crt", "tls.key"]
                )  # nats.conf's cert and key
                used |= {(v["secret"]["secretName"], k) for k in keys}
    text = (repo / README).read_text().replace("\\\n", " ")
    made = set()
    for line in text.splitlines():
        if found := re.search(r"kubectl .*create secret generic ([\w.-]+)(.*)", line):
            keys = re.findall(r"--from-(?:literal|file)=([\w.-]+)=", found.group(2))
            made |= {(found.group(1), k) for k in keys}
    assert used and used <= made, f"not created by deploy/README.md: {sorted(used - made)}"


def test_service_monitor_scrapes_every_fnas_pod(overlay):
    (monitor,) = [d for d in overlay if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = set()
    for svc in (d for d in overlay if d["kind"] == "Service"):
        if selects(monitor["spec"]["selector"], svc["metadata"]["labels"]):
            assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
            target, _ = service_target(overlay, svc["metadata"]["name"], 9464)
            scraped.add(target["metadata"]["name"])
    assert scraped == set(FNAS)


def test_dashboard_configmap_is_the_dashboard_file(overlay, repo):
    (cm,) = [
        d for d in overlay if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert cm["data"] == {"fnas.json": (repo / "deploy/grafana/dashboards/fnas.json").read_text()}
