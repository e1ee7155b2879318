from fnas.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Block(_message.Message):
    __slots__ = ("position", "embedding", "weights", "iterations")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    position: int
    embedding: _containers.RepeatedScalarFieldContainer[float]
    weights: bytes
    iterations: int
    def __init__(self, position: _Optional[int] = ..., embedding: _Optional[_Iterable[float]] = ..., weights: _Optional[bytes] = ..., iterations: _Optional[int] = ...) -> None: ...

class PutBlocksRequest(_message.Message):
    __slots__ = ("architecture", "task", "source_job_id", "blocks")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    architecture: _common_pb2.Architecture
    task: str
    source_job_id: str
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, architecture: _Optional[_Union[_common_pb2.Architecture, _Mapping]] = ..., task: _Optional[str] = ..., source_job_id: _Optional[str] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class PutBlocksResponse(_message.Message):
    __slots__ = ("stored", "duplicate")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicate: bool
    def __init__(self, stored: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class BlockQuery(_message.Message):
    __slots__ = ("position", "tensors")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    position: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, position: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class QueryBlocksRequest(_message.Message):
    __slots__ = ("architecture", "task", "iterations", "blocks", "min_similarity", "seed")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    architecture: _common_pb2.Architecture
    task: str
    iterations: int
    blocks: _containers.RepeatedCompositeFieldContainer[BlockQuery]
    min_similarity: float
    seed: int
    def __init__(self, architecture: _Optional[_Union[_common_pb2.Architecture, _Mapping]] = ..., task: _Optional[str] = ..., iterations: _Optional[int] = ..., blocks: _Optional[_Iterable[_Union[BlockQuery, _Mapping]]] = ..., min_similarity: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class BlockMatch(_message.Message):
    __slots__ = ("position", "similarity", "weights", "adapted", "source_job_id", "iterations", "task", "adaptations")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ADAPTATIONS_FIELD_NUMBER: _ClassVar[int]
    position: int
    similarity: float
    weights: bytes
    adapted: bool
    source_job_id: str
    iterations: int
    task: str
    adaptations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, position: _Optional[int] = ..., similarity: _Optional[float] = ..., weights: _Optional[bytes] = ..., adapted: _Optional[bool] = ..., source_job_id: _Optional[str] = ..., iterations: _Optional[int] = ..., task: _Optional[str] = ..., adaptations: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryBlocksResponse(_message.Message):
    __slots__ = ("matches", "hit_ratio", "queried", "matched")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    QUERIED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[BlockMatch]
    hit_ratio: float
    queried: int
    matched: int
    def __init__(self, matches: _Optional[_Iterable[_Union[BlockMatch, _Mapping]]] = ..., hit_ratio: _Optional[float] = ..., queried: _Optional[int] = ..., matched: _Optional[int] = ...) -> None: ...

class PoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStatsResponse(_message.Message):
    __slots__ = ("blocks", "queries", "hit_ratio", "blocks_by_task", "jobs", "blocks_queried", "blocks_matched")
    class BlocksByTaskEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_BY_TASK_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_MATCHED_FIELD_NUMBER: _ClassVar[int]
    blocks: int
    queries: int
    hit_ratio: float
    blocks_by_task: _containers.ScalarMap[str, int]
    jobs: int
    blocks_queried: int
    blocks_matched: int
    def __init__(self, blocks: _Optional[int] = ..., queries: _Optional[int] = ..., hit_ratio: _Optional[float] = ..., blocks_by_task: _Optional[_Mapping[str, int]] = ..., jobs: _Optional[int] = ..., blocks_queried: _Optional[int] = ..., blocks_matched: _Optional[int] = ...) -> None: ...
