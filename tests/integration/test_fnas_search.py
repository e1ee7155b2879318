"""`fnas` searches through the real services: NATS, agent, critic, buffer and tabular trainers in one process.

Checks that the source accounting adds up, that a seed gives the same
trajectory twice and the same as the plain in-memory loop (one code path),
the Prometheus counters, and critic transfer through a snapshot.
"""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
import torch

import fnas_cli as cli
from fnas import spaces
from fnas.client import AgentClient
from fnas.sources import label as source_label
from fnas.v1 import common_pb2, search_pb2
from fnas_bench import tabular
from fnas_bench.plain_loop import arun_plain
from services.agent import fnas_strategy, registry
from services.critic.client import CriticClient
from services.critic.core import CriticCore
from services.critic.decision import from_options
from services.harness import Cluster

torch.set_num_threads(1)
CORA = "nasbench-graph/cora"
# A small warm-up and a loose target so that a short search trusts, audits and replays.
OPTIONS = common_pb2.FnasOptions(warmup=10, target_error=2.0, audit_fraction=0.2)


def spec(strategy="fnas", seed=3, budget=60, **kw) -> common_pb2.SearchSpec:
    kw.setdefault("fnas", OPTIONS)
    return common_pb2.SearchSpec(
        space=CORA, strategy=strategy, seed=seed, budget=common_pb2.Budget(max_activated_samples=budget), **kw
    )


@pytest.fixture
async def cluster(tmp_path):
    async with Cluster(tmp_path / "data", trainers=2, metrics_port=0) as c:
        yield c


@pytest.fixture
async def client(cluster):
    async with AgentClient(cluster.agent_address) as c:
        yield c


async def run_to_end(client, s) -> tuple[search_pb2.SearchStatus, list[common_pb2.Sample]]:
    search_id = await client.submit(s)
    samples = [e.sample async for e in client.watch(search_id) if e.HasField("sample")]
    return await client.get(search_id), samples


def accuracy(space):
    """The table's validation accuracy: the reward these searches get from the trainers."""
    return tabular.evaluator(tabular.Setup(space, tabular.reward_spec(space, "accuracy")))


def as_list(samples) -> list[tuple[int, tuple[int, ...], float]]:
    return [(s.source, tuple(s.architecture.tokens), s.reward.value) for s in samples]


def scrape(cluster) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics").read().decode()


async def test_fnas_search_accounting_adds_up_and_matches_the_plain_loop(cluster, client, eventually):
    search_id = await client.submit(spec())
    samples, running = [], ""
    async for e in client.watch(search_id):
        if e.HasField("sample"):
            samples.append(e.sample)
        elif e.HasField("update") and not running:
            running = scrape(cluster)  # while the search runs (its first batch), its own series are there...
    status = await client.get(search_id)
    label = f'search="{search_id}"'
    for name in ("fnas_agent_best_reward", "fnas_agent_sample_speedup_ratio", "fnas_critic_threshold"):
        assert f"{name}{{{label}}}" in running, name
    # ...and once it has ended they leave /metrics (the critic hears of the end on NATS).
    await eventually(lambda: label not in scrape(cluster), msg="a finished search's series stayed")
    # ...and neither the agent, the critic nor the buffer keeps the ended search in memory (the stores do).
    agent = cluster.agent.servicer
    await eventually(lambda: search_id not in agent.tasks and search_id not in agent._watchers)
    await eventually(lambda: search_id not in cluster.critic.core.critics)
    await eventually(lambda: search_id not in cluster.buffer.core._histories)
    assert cluster.buffer.core.observed(search_id) == status.activated_samples  # reloaded from LMDB
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED
    by_source = {
        name: sum(source_label(s.source) == name for s in samples)
        for name in ("trained", "critic", "buffer", "recall")
    }
    assert status.activated_samples == 60
    assert by_source == {
        "trained": status.policy_samples_trained,
        "critic": status.policy_samples_critic,
        "buffer": status.policy_samples_buffer,
        "recall": status.policy_samples_recall,
    }
    assert by_source["critic"] > 0 and by_source["buffer"] > 0
    # One meaning of "activated": every trained sample is one train job; in-batch duplicates are recalls.
    assert status.policy_samples_trained == status.activated_samples
    trained = [s for s in samples if s.source == common_pb2.SAMPLE_SOURCE_TRAINED]
    assert len({s.index for s in trained}) == status.activated_samples
    assert status.sample_speedup == pytest.approx(len(samples) / status.activated_samples)
    assert status.calibration_samples > 0 and status.HasField("calibration_error")
    assert sorted(s.index for s in samples) == list(range(len(samples)))
    trained = [s.reward.value for s in samples if s.source == common_pb2.SAMPLE_SOURCE_TRAINED]
    assert status.best.reward.value == max(trained)  # predictions never count as the best
    top = await client.top(status.search_id, k=3)
    assert top[0].reward.value == status.best.reward.value

    # One code path: the plain in-memory loop gives the same samples, sources and rewards.
    space = spaces.get(CORA)
    strategy = registry.make("fnas", space, 3, 0, fnas_strategy.config_from_spec(spec()))
    plain = await arun_plain(strategy, accuracy(space), 60, decision=from_options(OPTIONS))
    assert plain.samples == as_list(samples)

    text = scrape(cluster)
    for line in (
        'fnas_agent_samples_total{source="critic"}',
        'fnas_agent_samples_total{source="buffer"}',
        "fnas_agent_critic_calibration_error",
        "fnas_agent_sample_speedup_ratio",
        "fnas_critic_training_rounds_total",
        "fnas_buffer_replays_total",
    ):
        assert line in text, line


async def test_same_seed_same_fnas_trajectory_other_seed_differs(client):
    _, first = await run_to_end(client, spec(seed=5, budget=30))
    _, second = await run_to_end(client, spec(seed=5, budget=30))
    _, other = await run_to_end(client, spec(seed=6, budget=30))
    assert as_list(first) == as_list(second)
    assert as_list(first) != as_list(other)


async def test_one_module_variants_use_only_their_source(client):
    loose = common_pb2.FnasOptions(warmup=5, threshold=1.0)  # a fixed threshold: trusted at once
    status, _ = await run_to_end(client, spec("fnas-uac", budget=30, fnas=loose))
    assert status.policy_samples_buffer == 0 and status.policy_samples_critic > 0
    status, _ = await run_to_end(client, spec("fnas-aeb", budget=30))
    assert status.policy_samples_critic == 0 and status.policy_samples_buffer > 0
    assert status.policy_samples_trained == status.activated_samples == 30


async def test_transfer_from_a_snapshot_and_bad_transfer_is_refused(cluster, client, tmp_path, capsys):
    first, _ = await run_to_end(client, spec(budget=30))
    snapshot_id, weights = await client.export_critic_snapshot(first.search_id)  # through the agent
    assert len(weights) > 100_000
    assert await client.import_critic_snapshot(weights, "nasbench-graph/citeseer") == snapshot_id
    async with CriticClient(cluster.critic_address) as critic:  # the critic's own API says the same
        assert await critic.export_snapshot(first.search_id) == (snapshot_id, weights)
    # ...and so does the command line, both ways.
    out, target = tmp_path / "critic.safetensors", ["--target", cluster.agent_address]
    assert (
        await asyncio.to_thread(cli.main, ["snapshot", "export", *target, first.search_id, "--out", str(out)])
        == 0
    )
    assert out.read_bytes() == weights and snapshot_id in capsys.readouterr().out
    imported = ["snapshot", "import", *target, str(out), "--space", "nasbench-graph/pubmed"]
    assert await asyncio.to_thread(cli.main, imported) == 0
    assert f"--critic-snapshot {snapshot_id}" in capsys.readouterr().out
    citeseer = spec(budget=20, seed=1, critic_snapshot=snapshot_id)
    citeseer.space = "nasbench-graph/citeseer"
    status, samples = await run_to_end(client, citeseer)
    assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED
    # A search from a snapshot gives the same trajectory in the mesh as in the plain loop.
    core = CriticCore()
    assert core.import_snapshot(weights, citeseer.space) == snapshot_id
    space = spaces.get(citeseer.space)
    strategy = registry.make("fnas", space, 1, 0, fnas_strategy.config_from_spec(citeseer))
    plain = await arun_plain(
        strategy, accuracy(space), 20, critic=core, decision=from_options(OPTIONS), snapshot_id=snapshot_id
    )
    assert plain.samples == as_list(samples)
    history, _ = await run_to_end(client, spec(budget=20, critic_history=[first.search_id]))
    assert history.state == search_pb2.SEARCH_STATE_SUCCEEDED
    before = len(await client.list())
    for bad, field in (
        (spec(critic_snapshot="nope"), "critic_snapshot"),
        (spec("ppo", critic_snapshot=snapshot_id), "critic_snapshot"),
        (spec(critic_history=["never-ran"]), "critic_history[0]"),
        (spec(fnas=common_pb2.FnasOptions(max_replay_fraction=1.0)), "fnas.max_replay_fraction"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.submit(bad)
        assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert e.value.details().startswith(field), e.value.details()
    assert len(await client.list()) == before


async def test_snapshots_belong_to_the_tenant_that_exported_them(tmp_path):
    """Another tenant's snapshot (or search) is NOT_FOUND, word for word like an unknown one."""
    alice_token, bob_token = "alice-token-0123456789", "bob-token-0123456789ab"
    tokens = f"alice:{alice_token},bob:{bob_token}"
    async with (
        Cluster(tmp_path / "data", trainers=2, auth_tokens=tokens) as cluster,
        AgentClient(cluster.agent_address, token=alice_token) as alice,
        AgentClient(cluster.agent_address, token=bob_token) as bob,
    ):
        first, _ = await run_to_end(alice, spec(budget=20))
        snapshot_id, weights = await alice.export_critic_snapshot(first.search_id)
        unknown = "0123456789abcdef"
        for call in (
            lambda sid: bob.submit(spec(budget=10, critic_snapshot=sid)),
            lambda sid: bob.export_critic_snapshot(first.search_id if sid == snapshot_id else "0123456789ab"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as theirs:
                await call(snapshot_id)
            with pytest.raises(grpc.aio.AioRpcError) as none:
                await call(unknown)
            assert theirs.value.code() == none.value.code() == grpc.StatusCode.NOT_FOUND
            assert (
                theirs.value.details().replace(snapshot_id, unknown).replace(first.search_id, "0123456789ab")
                == none.value.details()
            )
        status, _ = await run_to_end(alice, spec(budget=10, critic_snapshot=snapshot_id))
        assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED  # the owner transfers it
        # Bob may bring the same bytes in himself: then the snapshot is his own too.
        assert await bob.import_critic_snapshot(weights, CORA) == snapshot_id
        status, _ = await run_to_end(bob, spec(budget=10, critic_snapshot=snapshot_id))
        assert status.state == search_pb2.SEARCH_STATE_SUCCEEDED
