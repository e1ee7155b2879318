from fnas.v1 import common_pb2 as c
from fnas.v1 import queue_pb2 as q
from fnas.v1 import search_pb2 as s
from services.agent.batch import Planned
from services.agent.store import AgentStore, LoopState


def result(index: int, value: float, ok: bool = True) -> q.TrainResult:
    return q.TrainResult(
        job_id=f"x/{index}",
        search_id="x",
        sample_index=index,
        architecture=c.Architecture(space="nasbench-graph/cora", tokens=[0, 1, 2, 3, 4]),
        reward=c.Reward(accuracy=value, value=value),
        outcome=q.TRAIN_OUTCOME_OK if ok else q.TRAIN_OUTCOME_FAILED,
    )


def test_results_count_once_and_track_best(tmp_path):
    store = AgentStore(tmp_path)
    store.put_status(s.SearchStatus(search_id="x", state=s.SEARCH_STATE_RUNNING))
    (first,) = store.add_results([result(0, 0.5)])
    assert first.activated_samples == 1
    # One fetched batch, one transaction: a redelivery (in it or from before) and a result of no search
    # of this agent are dropped; each new one counts once.
    got = store.add_results(
        [
            result(0, 0.9),
            result(1, 0.7),
            result(1, 0.7),
            result(2, 0.0, ok=False),
            q.TrainResult(search_id="other", sample_index=0),
        ]
    )
    assert [g is None for g in got] == [True, False, True, False, True]
    status = got[1]
    assert status.activated_samples == 2 and status.best.reward.value == 0.7 and status.best.index == 1
    assert status.failed_samples == 1
    store.close()
    reopened = AgentStore(tmp_path)
    assert reopened.status("x").activated_samples == 2 and reopened.status("x").failed_samples == 1
    assert [r and r.reward.value for r in reopened.results("x", [0, 1, 5])] == [0.5, 0.7, None]


def test_commit_is_atomic_and_keeps_concurrent_counters(tmp_path):
    store = AgentStore(tmp_path)
    store.put_status(s.SearchStatus(search_id="x"))
    store.add_results([result(0, 0.5)])
    loop = LoopState(next_index=3, plan=[Planned((1, 2), -0.5, c.SAMPLE_SOURCE_TRAINED)], plan_index=1)

    def mutate(st):
        st.updates += 1

    def events(st):
        loop.next_seq += 1
        return [s.SearchEvent(search_id="x", seq=1, update=st)]

    status, _new = store.commit("x", mutate, b"state", loop, [c.Sample(index=0)], events)
    assert status.activated_samples == 1 and status.updates == 1
    assert [e.seq for e in store.events("x")] == [1] and store.events("x", after_seq=1) == []
    strategy, saved = store.checkpoint("x")
    assert (
        strategy == b"state"
        and saved.next_seq == 2
        and [(i, p.tokens, p.log_prob) for i, p in saved.jobs()] == [(1, (1, 2), -0.5)]
    )
    assert [x.index for x in store.samples("x")] == [0]
