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
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class QueryBlocksRequest(_message.Message):
    __slots__ = ("architecture", "task", "iterations")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    architecture: _common_pb2.Architecture
    task: str
    iterations: int
    def __init__(self, architecture: _Optional[_Union[_common_pb2.Architecture, _Mapping]] = ..., task: _Optional[str] = ..., iterations: _Optional[int] = ...) -> None: ...

class BlockMatch(_message.Message):
    __slots__ = ("position", "similarity", "weights", "adapted", "source_job_id")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ADAPTED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    position: int
    similarity: float
    weights: bytes
    adapted: bool
    source_job_id: str
    def __init__(self, position: _Optional[int] = ..., similarity: _Optional[float] = ..., weights: _Optional[bytes] = ..., adapted: _Optional[bool] = ..., source_job_id: _Optional[str] = ...) -> None: ...

class QueryBlocksResponse(_message.Message):
    __slots__ = ("matches", "hit_ratio")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[BlockMatch]
    hit_ratio: float
    def __init__(self, matches: _Optional[_Iterable[_Union[BlockMatch, _Mapping]]] = ..., hit_ratio: _Optional[float] = ...) -> None: ...

class PoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStatsResponse(_message.Message):
    __slots__ = ("blocks", "queries", "hit_ratio")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    blocks: int
    queries: int
    hit_ratio: float
    def __init__(self, blocks: _Optional[int] = ..., queries: _Optional[int] = ..., hit_ratio: _Optional[float] = ...) -> None: ...
