"""Kubernetes manifests: valid against the Kubernetes schemas (`kubernetes-validate --strict`), the CRDs
against schemas written here, and built the way the services need (locked-down pods, one LMDB writer,
a three-server JetStream cluster, KEDA on the trainers' consumer)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from fnas import events

SCHEMAS = Path(__file__).parent / "schemas"
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.json",
}
#: 1.30: the oldest release with the preStop `sleep` action on by default; 1.37: the newest schemas.
K8S_VERSIONS = ("1.30.0", "1.37.0")


def one(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def nats_conf(docs) -> str:
    return one(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]


def conf_value(conf: str, key: str) -> str:
    found = re.search(rf"^\s*{key}:\s*\"?([^\"\s]+)\"?\s*$", conf, re.M)
    assert found, f"nats.conf has no {key}"
    return found.group(1)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_kubernetes_validate_strict(base, overlay, version, tmp_path):
    files = []
    for name, docs in (("base", base), ("overlay", overlay)):
        core = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRDS]
        assert len(core) >= len(docs) - len(CRDS)
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump_all(core))
    run = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The tool only warns on a kind it has no schema for: that would be an unchecked manifest.
    assert run.returncode == 0 and "WARN" not in run.stdout, run.stdout + run.stderr


def test_strict_validation_catches_a_misspelled_field(overlay, tmp_path):
    bad = copy.deepcopy(one(overlay, "Deployment", "agent"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecondz"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "periodSecondz" in run.stdout


def test_custom_resources_match_their_schemas(overlay):
    found = set()
    for doc in overlay:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            schema = json.loads((SCHEMAS / CRDS[key]).read_text())
            jsonschema.Draft202012Validator(schema).validate(doc)
            bad = copy.deepcopy(doc)
            bad["spec"]["unexpected"] = 1  # the schemas are strict, like --strict
            assert not jsonschema.Draft202012Validator(schema).is_valid(bad)
            found.add(key)
    assert found == set(CRDS)


def test_renderer_rejects_what_it_does_not_implement(kube, tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(ValueError, match="commonLabels"):
        kube.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [../base]\npatches:\n  - target: {kind: Deployment, name: nope}\n    patch: '[]'\n"
    )
    (tmp_path.parent / "base").mkdir(exist_ok=True)
    (tmp_path.parent / "base" / "kustomization.yaml").write_text("resources: []\n")
    with pytest.raises(ValueError, match="matches 0"):
        kube.render(tmp_path)


def test_the_example_overlay_sets_namespace_images_and_patches(overlay, kube):
    assert (
        one(overlay, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    )
    assert all(d["metadata"].get("namespace") == "fnas" for d in overlay if d["kind"] != "Namespace")
    images = {kube.image_name(c["image"]) for c in kube.containers(overlay)}
    assert {"registry.example.com/fnas/fnas", "registry.example.com/fnas/fnas-trainer-gpu"} <= images
    assert one(overlay, "ScaledObject")["spec"]["maxReplicaCount"] == 16


def test_pods_are_locked_down(overlay, kube):
    workloads = [d for d in overlay if kube.pod_spec(d)]
    assert {d["metadata"]["name"] for d in workloads} == {
        "nats",
        "agent",
        "critic",
        "pool",
        "buffer",
        "trainer",
    }
    for d in workloads:
        spec, name = kube.pod_spec(d), d["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: {kind}"
            assert ":" in c["image"] and not c["image"].endswith(":latest"), f"{name}: unpinned image"
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            # A read-only root needs a writable /tmp for the Python services (torch, matplotlib caches).
            assert name == "nats" or "/tmp" in mounts, name


def test_trainers_take_one_gpu_each_and_keda_owns_their_count(overlay):
    trainer = one(overlay, "Deployment", "trainer")
    assert "replicas" not in trainer["spec"]  # else every `kubectl apply` resets what KEDA chose
    container = trainer["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    ready = container["readinessProbe"]["httpGet"]  # 200 only while it pulls jobs (fnas.metrics.ready)
    assert ready["path"] == "/ready" and ready["port"] == "metrics"


def test_keda_reads_the_lag_of_the_consumer_the_trainers_share(overlay):
    scaled = one(overlay, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "trainer"
    # No job, no GPU held: zero trainers, and the first waiting job (lag above 0) starts one.
    assert scaled["spec"]["minReplicaCount"] == 0 < scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert int(meta["activationLagThreshold"]) == 0
    assert trigger["type"] == "nats-jetstream"
    assert (meta["stream"], meta["consumer"]) == (events.JOBS, events.TRAINER)
    assert int(meta["lagThreshold"]) >= 1 and meta["useHttps"] == "false"
    conf = nats_conf(overlay)
    # No accounts configured: every client is in the global account $G.
    assert meta["account"] == "$G" and "accounts" not in conf
    # KEDA asks the consumer's leader at <server_name>.<endpoint host>: server names must be pod names.
    assert conf_value(conf, "server_name") == "$POD_NAME"
    nats = one(overlay, "StatefulSet", "nats")
    host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
    assert host == f"{nats['spec']['serviceName']}.{nats['metadata']['namespace']}.svc.cluster.local"
    assert int(port) == int(conf_value(conf, "http_port"))
    headless = one(overlay, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert int(port) in {p["port"] for p in headless["spec"]["ports"]}


def test_nats_is_a_three_server_jetstream_cluster_on_volumes(overlay, nats_version):
    nats = one(overlay, "StatefulSet", "nats")
    replicas, svc = nats["spec"]["replicas"], nats["spec"]["serviceName"]
    assert replicas == 3 and nats["spec"]["podManagementPolicy"] == "Parallel"
    conf = nats_conf(overlay)
    container = nats["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    cluster = re.search(r"^cluster\s*{(.*?)^}", conf, re.M | re.S)
    assert cluster and int(conf_value(cluster.group(1), "port")) == ports["cluster"]
    routes = re.findall(r"nats://([\w.-]+):(\d+)", cluster.group(1))
    assert routes == [(f"nats-{i}.{svc}", str(ports["cluster"])) for i in range(replicas)]
    assert int(conf_value(conf, "port")) == ports["client"]
    assert container["image"] == f"nats:{nats_version}-alpine"  # the server version the tests run
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert conf_value(conf, "store_dir") == mounts["data"]
    assert [t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]] == ["data"]
    assert conf_value(conf, "pid_file").startswith(mounts["run"])
    for key in ("cert_file", "key_file"):
        assert conf_value(conf, key).startswith(mounts["tls"] + "/")
    lame_duck = int(conf_value(conf, "lame_duck_duration").rstrip("s"))
    grace = int(conf_value(conf, "lame_duck_grace_period").rstrip("s"))
    assert nats["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > lame_duck + grace
    assert one(overlay, "PodDisruptionBudget", "nats")["spec"]["maxUnavailable"] == 1


def test_lmdb_services_have_one_writer_on_a_volume(overlay, kube):
    claims = {d["metadata"]["name"]: d for d in overlay if d["kind"] == "PersistentVolumeClaim"}
    for name in ("agent", "critic", "pool", "buffer"):
        deployment = one(overlay, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        volumes = kube.pod_spec(deployment)["volumes"]
        claim = next(v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v)
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]
