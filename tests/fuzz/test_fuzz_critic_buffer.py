"""CriticService and BufferService fed random and malformed requests over real gRPC.

No request may crash a handler (UNKNOWN / INTERNAL), a refusal names the field,
and the LMDB stores hold nothing a check would have refused: every stored
observation is a valid architecture of its space with a finite reward.
"""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from protogen import ServerThread, call, check_reply, requests

from fnas import serving, spaces
from fnas.nats_server import EmbeddedNats
from fnas.v1 import buffer_pb2, common_pb2, critic_pb2
from services.buffer.app import BufferApp
from services.buffer.config import BufferConfig
from services.critic.app import CriticApp
from services.critic.config import CriticConfig

pytestmark = pytest.mark.timeout(180)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,  # "the results you ask for have not arrived yet; retry"
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
CORA = "nasbench-graph/cora"
HINTS = {
    "search_id": st.sampled_from(["fz1", "fz2", "", "x" * 600, "a/b", "a.b", "a b"]),
    "space": st.sampled_from([CORA, "mnas", "nasbench-graph/nope", ""]),
    "tokens": st.lists(st.integers(0, 9), min_size=5, max_size=5),
    "min_observed": st.integers(0, 3),
    "n": st.integers(0, 8),
    "beta": st.floats(0, 1),
    "value": st.floats(-1, 2),
}
CRITIC, BUFFER = "/fnas.v1.CriticService/", "/fnas.v1.BufferService/"
METHODS = {
    CRITIC + "OpenSearch": critic_pb2.OpenSearchRequest,
    CRITIC + "Predict": critic_pb2.PredictRequest,
    CRITIC + "Observe": critic_pb2.ObserveRequest,
    CRITIC + "ExportSnapshot": critic_pb2.ExportSnapshotRequest,
    CRITIC + "ImportSnapshot": critic_pb2.ImportSnapshotRequest,
    BUFFER + "Add": buffer_pb2.AddRequest,
    BUFFER + "Sample": buffer_pb2.SampleRequest,
    BUFFER + "Stats": buffer_pb2.BufferStatsRequest,
}


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    """Critic and buffer on one real server, with NATS; yields (critic, buffer, channel)."""
    tmp = tmp_path_factory.mktemp("fuzz-helpers")
    nats = EmbeddedNats(tmp / "nats").start()
    thread = ServerThread()

    async def start():
        critic = CriticApp(CriticConfig(nats_url=nats.url, data_dir=tmp, port=0, predict_wait_s=0.05))
        buffer = BufferApp(BufferConfig(nats_url=nats.url, data_dir=tmp, port=0, sample_wait_s=0.05))
        run = await serving.start([critic.register, buffer.register], serving.ServerConfig(port=0))
        await critic.warm_up()
        await buffer.warm_up()
        return critic, buffer, run

    critic, buffer, run = thread.run(start())
    channel = grpc.insecure_channel(f"127.0.0.1:{run.port}")
    try:
        yield critic, buffer, channel
    finally:
        channel.close()

        async def stop():
            await run.server.stop(0)
            await critic.close()
            await buffer.close()

        thread.close(stop)
        nats.stop()


def stored_garbage(critic: CriticApp, buffer: BufferApp) -> list[str]:
    """Everything in the two stores that its service's checks should have refused."""
    bad = []
    with critic.store.env.begin() as txn:
        for key, value in txn.cursor(db=critic.store.db["observations"]):
            sample = common_pb2.Sample.FromString(value)
            try:
                spaces.get(sample.architecture.space).validate(sample.architecture.tokens)
            except ValueError as e:
                bad.append(f"critic {key!r}: {e}")
            if not math.isfinite(sample.reward.value):
                bad.append(f"critic {key!r}: reward {sample.reward.value}")
    with buffer.store.env.begin() as txn:
        for key, value in txn.cursor(db=buffer.store.db):
            sample = common_pb2.Sample.FromString(value)
            if not sample.architecture.tokens or not math.isfinite(sample.reward.value):
                bad.append(f"buffer {key!r}: {sample}")
    return bad


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), data=st.data())
def test_critic_and_buffer_survive_random_requests_and_store_no_garbage(helpers, method, data):
    critic, buffer, channel = helpers
    cls = METHODS[method]
    raw = data.draw(requests(cls, HINTS))
    code, details = call(channel, method, raw, timeout_s=10.0)
    event(f"{method.rsplit('/', 1)[1]} {code.name} {details.split(':')[0][:30]}")
    check_reply(cls, raw, code, details)
    assert code in ALLOWED, f"{code.name}: {details}"
    assert stored_garbage(critic, buffer) == []


LONG = "x" * 600  # longer than an LMDB key may be
VALID = common_pb2.Sample(
    architecture=common_pb2.Architecture(space=CORA, tokens=[0, 1, 1, 1, 1]),
    reward=common_pb2.Reward(value=0.5),
)
EDGES = [
    (CRITIC + "OpenSearch", critic_pb2.OpenSearchRequest(search_id=LONG, space=CORA)),
    (CRITIC + "Observe", critic_pb2.ObserveRequest(search_id=LONG, samples=[VALID])),
    (CRITIC + "Predict", critic_pb2.PredictRequest(search_id=LONG)),
    (CRITIC + "ExportSnapshot", critic_pb2.ExportSnapshotRequest(search_id=LONG)),
    (CRITIC + "ImportSnapshot", critic_pb2.ImportSnapshotRequest(space=CORA, weights=b"\x00" * 64)),
    (BUFFER + "Add", buffer_pb2.AddRequest(search_id=LONG, samples=[VALID])),
    (BUFFER + "Sample", buffer_pb2.SampleRequest(search_id=LONG, n=1)),
    (BUFFER + "Stats", buffer_pb2.BufferStatsRequest(search_id=LONG)),
]


@pytest.mark.parametrize(("method", "request_"), EDGES, ids=[m.rsplit("/", 1)[1] for m, _ in EDGES])
def test_edge_requests(helpers, method, request_):
    critic, buffer, channel = helpers
    raw = request_.SerializeToString()
    code, details = call(channel, method, raw, timeout_s=10.0)
    check_reply(METHODS[method], raw, code, details)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {details}"
    assert stored_garbage(critic, buffer) == []
