from fnas.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_STATE_UNSPECIFIED: _ClassVar[SearchState]
    SEARCH_STATE_RUNNING: _ClassVar[SearchState]
    SEARCH_STATE_SUCCEEDED: _ClassVar[SearchState]
    SEARCH_STATE_FAILED: _ClassVar[SearchState]
    SEARCH_STATE_CANCELLED: _ClassVar[SearchState]
SEARCH_STATE_UNSPECIFIED: SearchState
SEARCH_STATE_RUNNING: SearchState
SEARCH_STATE_SUCCEEDED: SearchState
SEARCH_STATE_FAILED: SearchState
SEARCH_STATE_CANCELLED: SearchState

class SearchStatus(_message.Message):
    __slots__ = ("search_id", "spec", "state", "activated_samples", "policy_samples_trained", "policy_samples_critic", "policy_samples_buffer", "failed_samples", "updates", "best", "created_at", "updated_at", "error", "calibration_error", "calibration_samples", "sample_speedup", "tenant", "final_ranking", "pool_blocks_queried", "pool_blocks_matched", "policy_samples_recall", "trainer_seconds", "trainer_setup_seconds", "trainer_evaluate_seconds", "final_trainer_seconds", "pool_warm_samples")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    POLICY_SAMPLES_TRAINED_FIELD_NUMBER: _ClassVar[int]
    POLICY_SAMPLES_CRITIC_FIELD_NUMBER: _ClassVar[int]
    POLICY_SAMPLES_BUFFER_FIELD_NUMBER: _ClassVar[int]
    FAILED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FINAL_RANKING_FIELD_NUMBER: _ClassVar[int]
    POOL_BLOCKS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    POOL_BLOCKS_MATCHED_FIELD_NUMBER: _ClassVar[int]
    POLICY_SAMPLES_RECALL_FIELD_NUMBER: _ClassVar[int]
    TRAINER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_SETUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_EVALUATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINAL_TRAINER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POOL_WARM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    spec: _common_pb2.SearchSpec
    state: SearchState
    activated_samples: int
    policy_samples_trained: int
    policy_samples_critic: int
    policy_samples_buffer: int
    failed_samples: int
    updates: int
    best: _common_pb2.Sample
    created_at: float
    updated_at: float
    error: str
    calibration_error: float
    calibration_samples: int
    sample_speedup: float
    tenant: str
    final_ranking: _containers.RepeatedCompositeFieldContainer[FinalCandidate]
    pool_blocks_queried: int
    pool_blocks_matched: int
    policy_samples_recall: int
    trainer_seconds: float
    trainer_setup_seconds: float
    trainer_evaluate_seconds: float
    final_trainer_seconds: float
    pool_warm_samples: int
    def __init__(self, search_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.SearchSpec, _Mapping]] = ..., state: _Optional[_Union[SearchState, str]] = ..., activated_samples: _Optional[int] = ..., policy_samples_trained: _Optional[int] = ..., policy_samples_critic: _Optional[int] = ..., policy_samples_buffer: _Optional[int] = ..., failed_samples: _Optional[int] = ..., updates: _Optional[int] = ..., best: _Optional[_Union[_common_pb2.Sample, _Mapping]] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., error: _Optional[str] = ..., calibration_error: _Optional[float] = ..., calibration_samples: _Optional[int] = ..., sample_speedup: _Optional[float] = ..., tenant: _Optional[str] = ..., final_ranking: _Optional[_Iterable[_Union[FinalCandidate, _Mapping]]] = ..., pool_blocks_queried: _Optional[int] = ..., pool_blocks_matched: _Optional[int] = ..., policy_samples_recall: _Optional[int] = ..., trainer_seconds: _Optional[float] = ..., trainer_setup_seconds: _Optional[float] = ..., trainer_evaluate_seconds: _Optional[float] = ..., final_trainer_seconds: _Optional[float] = ..., pool_warm_samples: _Optional[int] = ...) -> None: ...

class FinalCandidate(_message.Message):
    __slots__ = ("rank", "sample", "final_reward", "epochs", "seed", "error")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FINAL_REWARD_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    rank: int
    sample: _common_pb2.Sample
    final_reward: _common_pb2.Reward
    epochs: int
    seed: int
    error: str
    def __init__(self, rank: _Optional[int] = ..., sample: _Optional[_Union[_common_pb2.Sample, _Mapping]] = ..., final_reward: _Optional[_Union[_common_pb2.Reward, _Mapping]] = ..., epochs: _Optional[int] = ..., seed: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class SearchEvent(_message.Message):
    __slots__ = ("search_id", "seq", "sample", "update", "finished")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    seq: int
    sample: _common_pb2.Sample
    update: SearchStatus
    finished: SearchStatus
    def __init__(self, search_id: _Optional[str] = ..., seq: _Optional[int] = ..., sample: _Optional[_Union[_common_pb2.Sample, _Mapping]] = ..., update: _Optional[_Union[SearchStatus, _Mapping]] = ..., finished: _Optional[_Union[SearchStatus, _Mapping]] = ...) -> None: ...

class SubmitSearchRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.SearchSpec
    def __init__(self, spec: _Optional[_Union[_common_pb2.SearchSpec, _Mapping]] = ...) -> None: ...

class SubmitSearchResponse(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class GetSearchResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: SearchStatus
    def __init__(self, status: _Optional[_Union[SearchStatus, _Mapping]] = ...) -> None: ...

class WatchSearchRequest(_message.Message):
    __slots__ = ("search_id", "after_seq")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    after_seq: int
    def __init__(self, search_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class CancelSearchRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class CancelSearchResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: SearchStatus
    def __init__(self, status: _Optional[_Union[SearchStatus, _Mapping]] = ...) -> None: ...

class ListSearchesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSearchesResponse(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[SearchStatus]
    def __init__(self, searches: _Optional[_Iterable[_Union[SearchStatus, _Mapping]]] = ...) -> None: ...

class GetTopArchitecturesRequest(_message.Message):
    __slots__ = ("search_id", "k")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    k: int
    def __init__(self, search_id: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class GetTopArchitecturesResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ...) -> None: ...

class ExportCriticSnapshotRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class ExportCriticSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_id", "weights")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    weights: bytes
    def __init__(self, snapshot_id: _Optional[str] = ..., weights: _Optional[bytes] = ...) -> None: ...

class ImportCriticSnapshotRequest(_message.Message):
    __slots__ = ("weights", "space")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    weights: bytes
    space: str
    def __init__(self, weights: _Optional[bytes] = ..., space: _Optional[str] = ...) -> None: ...

class ImportCriticSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...
