from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_SOURCE_UNSPECIFIED: _ClassVar[SampleSource]
    SAMPLE_SOURCE_TRAINED: _ClassVar[SampleSource]
    SAMPLE_SOURCE_CRITIC: _ClassVar[SampleSource]
    SAMPLE_SOURCE_BUFFER: _ClassVar[SampleSource]
    SAMPLE_SOURCE_RECALL: _ClassVar[SampleSource]

class CostMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COST_METRIC_UNSPECIFIED: _ClassVar[CostMetric]
    COST_METRIC_LATENCY: _ClassVar[CostMetric]
    COST_METRIC_MULT_ADDS: _ClassVar[CostMetric]
    COST_METRIC_NONE: _ClassVar[CostMetric]
SAMPLE_SOURCE_UNSPECIFIED: SampleSource
SAMPLE_SOURCE_TRAINED: SampleSource
SAMPLE_SOURCE_CRITIC: SampleSource
SAMPLE_SOURCE_BUFFER: SampleSource
SAMPLE_SOURCE_RECALL: SampleSource
COST_METRIC_UNSPECIFIED: CostMetric
COST_METRIC_LATENCY: CostMetric
COST_METRIC_MULT_ADDS: CostMetric
COST_METRIC_NONE: CostMetric

class Architecture(_message.Message):
    __slots__ = ("space", "tokens")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    space: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, space: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class Reward(_message.Message):
    __slots__ = ("accuracy", "latency_ms", "mult_adds", "params", "value")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MULT_ADDS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    latency_ms: float
    mult_adds: int
    params: int
    value: float
    def __init__(self, accuracy: _Optional[float] = ..., latency_ms: _Optional[float] = ..., mult_adds: _Optional[int] = ..., params: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("architecture", "reward", "source", "behaviour_log_prob", "index")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOUR_LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    architecture: Architecture
    reward: Reward
    source: SampleSource
    behaviour_log_prob: float
    index: int
    def __init__(self, architecture: _Optional[_Union[Architecture, _Mapping]] = ..., reward: _Optional[_Union[Reward, _Mapping]] = ..., source: _Optional[_Union[SampleSource, str]] = ..., behaviour_log_prob: _Optional[float] = ..., index: _Optional[int] = ...) -> None: ...

class RewardSpec(_message.Message):
    __slots__ = ("cost", "target_latency_ms", "target_mult_adds", "alpha", "beta")
    COST_FIELD_NUMBER: _ClassVar[int]
    TARGET_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TARGET_MULT_ADDS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    cost: CostMetric
    target_latency_ms: float
    target_mult_adds: int
    alpha: float
    beta: float
    def __init__(self, cost: _Optional[_Union[CostMetric, str]] = ..., target_latency_ms: _Optional[float] = ..., target_mult_adds: _Optional[int] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_activated_samples", "max_policy_samples", "max_seconds", "target_reward")
    MAX_ACTIVATED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_POLICY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_REWARD_FIELD_NUMBER: _ClassVar[int]
    max_activated_samples: int
    max_policy_samples: int
    max_seconds: float
    target_reward: float
    def __init__(self, max_activated_samples: _Optional[int] = ..., max_policy_samples: _Optional[int] = ..., max_seconds: _Optional[float] = ..., target_reward: _Optional[float] = ...) -> None: ...

class Modules(_message.Message):
    __slots__ = ("uac", "akp", "aeb")
    UAC_FIELD_NUMBER: _ClassVar[int]
    AKP_FIELD_NUMBER: _ClassVar[int]
    AEB_FIELD_NUMBER: _ClassVar[int]
    uac: bool
    akp: bool
    aeb: bool
    def __init__(self, uac: _Optional[bool] = ..., akp: _Optional[bool] = ..., aeb: _Optional[bool] = ...) -> None: ...

class FnasOptions(_message.Message):
    __slots__ = ("threshold", "target_error", "warmup", "max_trusted_fraction", "audit_fraction", "buffer_size", "max_replay_fraction", "priority_temperature", "candidates", "ucb", "resample_temperature", "local_candidates", "elite_size")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_ERROR_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    MAX_TRUSTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLAY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    UCB_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ELITE_SIZE_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    target_error: float
    warmup: int
    max_trusted_fraction: float
    audit_fraction: float
    buffer_size: int
    max_replay_fraction: float
    priority_temperature: float
    candidates: int
    ucb: float
    resample_temperature: float
    local_candidates: int
    elite_size: int
    def __init__(self, threshold: _Optional[float] = ..., target_error: _Optional[float] = ..., warmup: _Optional[int] = ..., max_trusted_fraction: _Optional[float] = ..., audit_fraction: _Optional[float] = ..., buffer_size: _Optional[int] = ..., max_replay_fraction: _Optional[float] = ..., priority_temperature: _Optional[float] = ..., candidates: _Optional[int] = ..., ucb: _Optional[float] = ..., resample_temperature: _Optional[float] = ..., local_candidates: _Optional[int] = ..., elite_size: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("dataset", "epochs", "pool_epochs", "simulated_seconds")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    POOL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    epochs: int
    pool_epochs: int
    simulated_seconds: float
    def __init__(self, dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., pool_epochs: _Optional[int] = ..., simulated_seconds: _Optional[float] = ...) -> None: ...

class SearchSpec(_message.Message):
    __slots__ = ("space", "task", "reward", "budget", "modules", "strategy", "seed", "batch_size", "critic_snapshot", "pool_task", "name", "warm_start", "fnas", "critic_history", "final_top_k", "final_epochs")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CRITIC_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    POOL_TASK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WARM_START_FIELD_NUMBER: _ClassVar[int]
    FNAS_FIELD_NUMBER: _ClassVar[int]
    CRITIC_HISTORY_FIELD_NUMBER: _ClassVar[int]
    FINAL_TOP_K_FIELD_NUMBER: _ClassVar[int]
    FINAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    space: str
    task: Task
    reward: RewardSpec
    budget: Budget
    modules: Modules
    strategy: str
    seed: int
    batch_size: int
    critic_snapshot: str
    pool_task: str
    name: str
    warm_start: _containers.RepeatedCompositeFieldContainer[Architecture]
    fnas: FnasOptions
    critic_history: _containers.RepeatedScalarFieldContainer[str]
    final_top_k: int
    final_epochs: int
    def __init__(self, space: _Optional[str] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., reward: _Optional[_Union[RewardSpec, _Mapping]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., modules: _Optional[_Union[Modules, _Mapping]] = ..., strategy: _Optional[str] = ..., seed: _Optional[int] = ..., batch_size: _Optional[int] = ..., critic_snapshot: _Optional[str] = ..., pool_task: _Optional[str] = ..., name: _Optional[str] = ..., warm_start: _Optional[_Iterable[_Union[Architecture, _Mapping]]] = ..., fnas: _Optional[_Union[FnasOptions, _Mapping]] = ..., critic_history: _Optional[_Iterable[str]] = ..., final_top_k: _Optional[int] = ..., final_epochs: _Optional[int] = ...) -> None: ...
