"""AgentService fed random and malformed requests over real gRPC: no crash, and nothing bad stored."""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from protogen import ServerThread, call, check_reply, messages, requests

from fnas import bounds, serving, tenancy
from fnas.nats_server import EmbeddedNats
from fnas.v1 import common_pb2, search_pb2
from services.agent.app import AgentApp
from services.agent.config import AgentConfig
from services.agent.registry import NAMES
from services.agent.spec import MAX_SIMULATED_SECONDS, validate

pytestmark = pytest.mark.timeout(120)
SERVICE = "/fnas.v1.AgentService/"
LIMITS = tenancy.Limits(max_searches_per_tenant=10_000, max_budget_samples=1000, max_budget_seconds=3600)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Plausible values mixed into the random ones, so that draws reach past the first checks.
HINTS = {
    "space": st.sampled_from(["nasbench-graph/cora", "nasbench-graph/pubmed", "mnas", "nasbench-graph/x"]),
    "strategy": st.sampled_from([*NAMES, "", "PPO"]),
    "tokens": st.lists(st.integers(0, 9), min_size=5, max_size=5),
    "max_activated_samples": st.integers(-5, 1500),
    "dataset": st.sampled_from(["", "digits", "synthetic", "npz:/nonexistent.npz"]),
    "cost": st.integers(0, 3),
    "target_latency_ms": st.floats(0.01, 100),
    "search_id": st.sampled_from(["", "0123456789ab", "x" * 65]),
    # Values that once passed validation: a trainer held for 30 years, NaN budgets, a 1 MB name.
    "simulated_seconds": st.sampled_from([0.0, 0.5, 1e9, math.nan, math.inf, -1.0]),
    "max_seconds": st.sampled_from([0.0, 60.0, math.nan, math.inf, -math.inf]),
    "target_reward": st.sampled_from([0.5, math.nan, math.inf]),
    "name": st.sampled_from(["", "run-1", "n" * 1_000_000]),
}


def _spec(space, strategy, budget, cost, warm, seed, batch) -> common_pb2.SearchSpec:
    spec = common_pb2.SearchSpec(
        space=space,
        strategy=strategy,
        seed=seed,
        batch_size=batch,
        budget=common_pb2.Budget(max_activated_samples=budget),
        reward=common_pb2.RewardSpec(cost=cost, target_latency_ms=1.0),
    )
    spec.warm_start.extend(common_pb2.Architecture(tokens=t) for t in warm)
    return spec


#: Specs that pass validation (and some that just miss), the base of the mutations below.
PLAUSIBLE = st.builds(
    _spec,
    st.sampled_from(["nasbench-graph/cora", "nasbench-graph/citeseer"]),
    st.sampled_from(["ppo", "random", "evolution"]),
    st.integers(1, 1200),
    st.sampled_from([common_pb2.COST_METRIC_NONE, common_pb2.COST_METRIC_LATENCY]),
    st.lists(st.lists(st.integers(0, 8), min_size=5, max_size=5), max_size=3),
    st.integers(0, 2**64 - 1),
    st.integers(0, 64),
)


def _merged(base: common_pb2.SearchSpec, noise: common_pb2.SearchSpec) -> common_pb2.SearchSpec:
    base.MergeFrom(noise)  # the noise's set fields overwrite (or extend) a plausible spec
    return base


SPECS = st.one_of(
    messages(common_pb2.SearchSpec, HINTS),
    PLAUSIBLE,
    st.builds(_merged, PLAUSIBLE, messages(common_pb2.SearchSpec, HINTS, depth=2)),
)
SUBMITS = st.one_of(
    SPECS.map(lambda spec: search_pb2.SubmitSearchRequest(spec=spec).SerializeToString()),
    st.binary(max_size=80),
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """An agent (no critic, buffer or trainers) on a real server and NATS; yields (app, channel)."""
    tmp = tmp_path_factory.mktemp("fuzz-agent")
    nats = EmbeddedNats(tmp / "nats").start()
    thread = ServerThread()
    cfg = AgentConfig(
        nats_url=nats.url,
        data_dir=tmp,
        port=0,
        max_searches=10_000,
        max_searches_per_tenant=LIMITS.max_searches_per_tenant,
        max_budget_samples=LIMITS.max_budget_samples,
        max_budget_seconds=LIMITS.max_budget_seconds,
    )

    async def start():
        app = AgentApp(cfg)
        run = await serving.start([app.register], app.server_config(grace_s=0.1), app.interceptors())
        await app.warm_up()
        return app, run

    app, run = thread.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{run.port}")
    try:
        yield app, channel
    finally:
        channel.close()

        async def stop():
            await run.server.stop(0)
            await app.close()

        thread.close(stop)
        nats.stop()


@FUZZ
@given(data=SUBMITS)
def test_submit_search_refuses_bad_specs_and_stores_only_good_ones(agent, data):
    app, channel = agent
    before = {s.search_id for s in app.store.statuses()}
    code, details = call(channel, SERVICE + "SubmitSearch", data)
    check_reply(search_pb2.SubmitSearchRequest, data, code, details)
    event(f"{code.name} {details.split(':')[0]}")  # --hypothesis-show-statistics: which checks were hit
    after = {s.search_id for s in app.store.statuses()}
    if code != grpc.StatusCode.OK:
        assert after == before, f"{code.name} but something was stored"
        return
    (new,) = after - before
    status = app.store.status(new)
    validate(status.spec)  # what was stored is a valid spec...
    assert tenancy.budget_refusal(status.spec, LIMITS) is None  # ...within the limits...
    assert bounds.violation(status.spec) is None  # ...with finite numbers and bounded strings
    assert status.spec.task.simulated_seconds <= MAX_SIMULATED_SECONDS
    request = search_pb2.CancelSearchRequest(search_id=new).SerializeToString()
    assert call(channel, SERVICE + "CancelSearch", request)[0] == grpc.StatusCode.OK


@FUZZ
@given(
    method=st.sampled_from(
        ["GetSearch", "CancelSearch", "GetTopArchitectures", "ListSearches", "WatchSearch"]
    ),
    data=st.data(),
)
def test_reads_and_cancel_never_crash_or_store(agent, method, data):
    app, channel = agent
    cls = getattr(search_pb2, method + "Request")
    before = app.store.statuses()
    ids = [s.search_id for s in before] or [""]  # real searches (left by the test above) too
    raw = data.draw(requests(cls, HINTS | {"search_id": st.sampled_from([*ids, "x" * 65, "é"])}))
    code, details = call(channel, SERVICE + method, raw, timeout_s=0.5, streaming=method == "WatchSearch")
    check_reply(cls, raw, code, details)
    event(f"{method} {code.name}")
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.CANCELLED,
        # A watch after a finished search's last event waits for more, until the deadline.
        grpc.StatusCode.DEADLINE_EXCEEDED if method == "WatchSearch" else grpc.StatusCode.OK,
    ), f"{code.name}: {details}"
    assert len(app.store.statuses()) == len(before)


def _edge(**fields) -> common_pb2.SearchSpec:
    """A valid spec with one field set to a value that once got through."""
    spec = _spec("nasbench-graph/cora", "ppo", 10, common_pb2.COST_METRIC_NONE, [], 1, 10)
    for path, value in fields.items():
        *parents, name = path.split("__")
        target = spec
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_edge(task__simulated_seconds=1e9), "task.simulated_seconds"),
        (_edge(task__simulated_seconds=math.nan), "task.simulated_seconds"),
        (_edge(budget__max_seconds=math.nan), "budget.max_seconds"),
        (_edge(budget__max_seconds=math.inf), "budget.max_seconds"),
        (_edge(budget__target_reward=math.nan), "budget.target_reward"),
        (_edge(reward__alpha=math.inf), "reward.alpha"),
        (_edge(fnas__ucb=math.nan), "fnas.ucb"),
        (_edge(name="n" * 1_000_000), "name"),
        (_edge(strategy="s" * 1_000_000), "strategy"),
        (_edge(space="s" * 5000), "space"),
        (_edge(critic_history=["a", "h" * 1_000_000]), "critic_history[1]"),
        (_edge(warm_start=[common_pb2.Architecture(tokens=[8, 0, 1, 1, 1])] * 1001), "warm_start"),
        (_edge(critic_history=["0123456789ab"] * 101), "critic_history"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_out_of_range_values_are_refused_with_their_field_and_a_short_reply(agent, spec, field):
    app, channel = agent
    before = len(app.store.statuses())
    data = search_pb2.SubmitSearchRequest(spec=spec).SerializeToString()
    code, details = call(channel, SERVICE + "SubmitSearch", data)
    check_reply(search_pb2.SubmitSearchRequest, data, code, details)  # short: never echoes a huge value
    # The request guard names the path in the request (spec.name), the spec check the path in the spec.
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.removeprefix("spec.").startswith(f"{field}: "), details
    assert len(app.store.statuses()) == before
