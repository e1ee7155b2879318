from fnas.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAIN_OUTCOME_UNSPECIFIED: _ClassVar[TrainOutcome]
    TRAIN_OUTCOME_OK: _ClassVar[TrainOutcome]
    TRAIN_OUTCOME_FAILED: _ClassVar[TrainOutcome]
TRAIN_OUTCOME_UNSPECIFIED: TrainOutcome
TRAIN_OUTCOME_OK: TrainOutcome
TRAIN_OUTCOME_FAILED: TrainOutcome

class TrainJob(_message.Message):
    __slots__ = ("job_id", "search_id", "sample_index", "architecture", "task", "reward", "use_pool", "pool_task", "seed", "behaviour_log_prob", "replayable", "final_rank")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    USE_POOL_FIELD_NUMBER: _ClassVar[int]
    POOL_TASK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    REPLAYABLE_FIELD_NUMBER: _ClassVar[int]
    FINAL_RANK_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    search_id: str
    sample_index: int
    architecture: _common_pb2.Architecture
    task: _common_pb2.Task
    reward: _common_pb2.RewardSpec
    use_pool: bool
    pool_task: str
    seed: int
    behaviour_log_prob: float
    replayable: bool
    final_rank: int
    def __init__(self, job_id: _Optional[str] = ..., search_id: _Optional[str] = ..., sample_index: _Optional[int] = ..., architecture: _Optional[_Union[_common_pb2.Architecture, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., reward: _Optional[_Union[_common_pb2.RewardSpec, _Mapping]] = ..., use_pool: _Optional[bool] = ..., pool_task: _Optional[str] = ..., seed: _Optional[int] = ..., behaviour_log_prob: _Optional[float] = ..., replayable: _Optional[bool] = ..., final_rank: _Optional[int] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("job_id", "search_id", "sample_index", "architecture", "reward", "outcome", "error", "train_seconds", "trainer_id", "pool_blocks_matched", "pool_blocks_queried", "behaviour_log_prob", "final_rank", "setup_seconds", "evaluate_seconds", "epochs", "device_kind", "replayable")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_BLOCKS_MATCHED_FIELD_NUMBER: _ClassVar[int]
    POOL_BLOCKS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    FINAL_RANK_FIELD_NUMBER: _ClassVar[int]
    SETUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    REPLAYABLE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    search_id: str
    sample_index: int
    architecture: _common_pb2.Architecture
    reward: _common_pb2.Reward
    outcome: TrainOutcome
    error: str
    train_seconds: float
    trainer_id: str
    pool_blocks_matched: int
    pool_blocks_queried: int
    behaviour_log_prob: float
    final_rank: int
    setup_seconds: float
    evaluate_seconds: float
    epochs: int
    device_kind: str
    replayable: bool
    def __init__(self, job_id: _Optional[str] = ..., search_id: _Optional[str] = ..., sample_index: _Optional[int] = ..., architecture: _Optional[_Union[_common_pb2.Architecture, _Mapping]] = ..., reward: _Optional[_Union[_common_pb2.Reward, _Mapping]] = ..., outcome: _Optional[_Union[TrainOutcome, str]] = ..., error: _Optional[str] = ..., train_seconds: _Optional[float] = ..., trainer_id: _Optional[str] = ..., pool_blocks_matched: _Optional[int] = ..., pool_blocks_queried: _Optional[int] = ..., behaviour_log_prob: _Optional[float] = ..., final_rank: _Optional[int] = ..., setup_seconds: _Optional[float] = ..., evaluate_seconds: _Optional[float] = ..., epochs: _Optional[int] = ..., device_kind: _Optional[str] = ..., replayable: _Optional[bool] = ...) -> None: ...
