"""fnas.bounds.violation: the first non-finite number or over-long string of a request, by field path."""

import math

from fnas import bounds
from fnas.v1 import common_pb2, critic_pb2, pool_pb2


def test_reports_the_path_of_the_first_bad_value_and_passes_good_ones():
    spec = common_pb2.SearchSpec(
        space="nasbench-graph/cora",
        warm_start=[common_pb2.Architecture(tokens=[1, 2]), common_pb2.Architecture(space="x" * 1025)],
    )
    assert bounds.violation(spec) == "warm_start[1].space: longer than 1024 characters (1025)"
    spec.warm_start[1].space = "x" * 1024
    assert bounds.violation(spec) is None
    spec.critic_history.extend(["a", "b" * 2000])
    assert bounds.violation(spec) == "critic_history[1]: longer than 1024 characters (2000)"
    put = pool_pb2.PutBlocksRequest(
        blocks=[pool_pb2.Block(embedding=[0.5, math.nan], weights=b"\xff" * 5000)]
    )
    assert bounds.violation(put) == "blocks[0].embedding[1]: must be a finite number, got nan"
    reward = common_pb2.RewardSpec(target_latency_ms=math.inf)
    assert bounds.violation(reward) == "target_latency_ms: must be a finite number, got inf"
    # Integers, enums and bytes cannot break a bound; a large request of them passes.
    big = critic_pb2.PredictRequest(architectures=[common_pb2.Architecture(tokens=[9] * 50)] * 500)
    assert bounds.violation(big) is None
