from fnas.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Prediction(_message.Message):
    __slots__ = ("value", "uncertainty", "trusted", "known")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    value: float
    uncertainty: float
    trusted: bool
    known: bool
    def __init__(self, value: _Optional[float] = ..., uncertainty: _Optional[float] = ..., trusted: _Optional[bool] = ..., known: _Optional[bool] = ...) -> None: ...

class OpenSearchRequest(_message.Message):
    __slots__ = ("search_id", "space", "seed", "options", "snapshot_id", "history", "tenant")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    space: str
    seed: int
    options: _common_pb2.FnasOptions
    snapshot_id: str
    history: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    def __init__(self, search_id: _Optional[str] = ..., space: _Optional[str] = ..., seed: _Optional[int] = ..., options: _Optional[_Union[_common_pb2.FnasOptions, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., history: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ...) -> None: ...

class OpenSearchResponse(_message.Message):
    __slots__ = ("observed",)
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    observed: int
    def __init__(self, observed: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("search_id", "architectures", "min_observed")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURES_FIELD_NUMBER: _ClassVar[int]
    MIN_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    architectures: _containers.RepeatedCompositeFieldContainer[_common_pb2.Architecture]
    min_observed: int
    def __init__(self, search_id: _Optional[str] = ..., architectures: _Optional[_Iterable[_Union[_common_pb2.Architecture, _Mapping]]] = ..., min_observed: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "observed", "threshold")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    observed: int
    threshold: float
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., observed: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("search_id", "samples")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.Sample]
    def __init__(self, search_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.Sample, _Mapping]]] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("observed",)
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    observed: int
    def __init__(self, observed: _Optional[int] = ...) -> None: ...

class ExportSnapshotRequest(_message.Message):
    __slots__ = ("search_id", "tenant")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    tenant: str
    def __init__(self, search_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ExportSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_id", "weights")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    weights: bytes
    def __init__(self, snapshot_id: _Optional[str] = ..., weights: _Optional[bytes] = ...) -> None: ...

class ImportSnapshotRequest(_message.Message):
    __slots__ = ("weights", "space", "tenant")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    weights: bytes
    space: str
    tenant: str
    def __init__(self, weights: _Optional[bytes] = ..., space: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ImportSnapshotResponse(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...
