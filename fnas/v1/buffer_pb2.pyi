from fnas.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddRequest(_message.Message):
    __slots__ = ("search_id", "samples")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    def __init__(self, search_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("search_id", "n", "beta", "seed", "min_observed", "capacity", "temperature")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MIN_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    n: int
    beta: float
    seed: int
    min_observed: int
    capacity: int
    temperature: float
    def __init__(self, search_id: _Optional[str] = ..., n: _Optional[int] = ..., beta: _Optional[float] = ..., seed: _Optional[int] = ..., min_observed: _Optional[int] = ..., capacity: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class WeightedSample(_message.Message):
    __slots__ = ("sample", "weight")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    sample: _common_pb2.Sample
    weight: float
    def __init__(self, sample: _Optional[_Union[_common_pb2.Sample, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[WeightedSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[WeightedSample, _Mapping]]] = ...) -> None: ...

class BufferStatsRequest(_message.Message):
    __slots__ = ("search_id", "capacity")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    capacity: int
    def __init__(self, search_id: _Optional[str] = ..., capacity: _Optional[int] = ...) -> None: ...

class BufferStatsResponse(_message.Message):
    __slots__ = ("size", "observed")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    size: int
    observed: int
    def __init__(self, size: _Optional[int] = ..., observed: _Optional[int] = ...) -> None: ...
