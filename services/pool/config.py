"""Configuration of the pool service: flags or FNAS_POOL_<FIELD> variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnas import config


@dataclass(frozen=True)
class PoolConfig(config.TransportSecurity):
    """Everything the pool needs to run; validated on construction (TLS and NATS credentials: the base)."""

    data_dir: Path = Path("fnas-data")
    """The pool's LMDB (block weights, metadata, source jobs) lives in <data_dir>/pool."""
    host: str = "127.0.0.1"
    """gRPC bind address (0.0.0.0 in a container)."""
    port: int = 50053
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on: loopback unless a scraper on another host needs it (0.0.0.0 in a pod)."""
    log_level: str = "INFO"
    """Root log level."""
    map_size_mb: int = 64
    """Initial LMDB map size in MiB; it doubles whenever it is full."""
    max_map_size_gb: int = 1024
    """Largest LMDB map in GiB; a put beyond it fails with RESOURCE_EXHAUSTED."""
    sync: bool = True
    """fsync every committed put (a SIGKILL or power cut then loses no acknowledged block)."""
    max_tensor_elements: int = 1 << 28
    """Largest tensor a query may ask for (elements); bigger shapes are refused as INVALID_ARGUMENT."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get on SIGTERM."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.map_size_mb < 1:
            raise ValueError(f"map_size_mb must be >= 1, got {self.map_size_mb}")
        if self.max_map_size_gb * 1024 < self.map_size_mb:
            raise ValueError("max_map_size_gb must be at least map_size_mb")
        if self.max_tensor_elements < 1:
            raise ValueError("max_tensor_elements must be >= 1")
        if self.grace_s < 0:
            raise ValueError("grace_s must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> PoolConfig:
        """Defaults, then FNAS_POOL_<FIELD> variables, then explicit (non-None) overrides."""
        return config.from_env(cls, "pool", environ, **overrides)
