"""Configuration of the buffer service: flags or FNAS_BUFFER_<FIELD> variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnas import config


@dataclass(frozen=True)
class BufferConfig(config.JetStreamClient):
    """Everything the buffer needs to run; validated on construction (TLS and NATS credentials: the base)."""

    nats_url: str = "nats://127.0.0.1:4222"
    """JetStream server carrying the train results (durable consumer "buffer")."""
    data_dir: Path = Path("fnas-data")
    """The buffer's LMDB (each search's trained results) lives in <data_dir>/buffer."""
    host: str = "127.0.0.1"
    """gRPC bind address (0.0.0.0 in a container)."""
    port: int = 50054
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on: loopback unless a scraper on another host needs it (0.0.0.0 in a pod)."""
    log_level: str = "INFO"
    """Root log level."""
    sample_wait_s: float = 5.0
    """How long Sample waits for missing results before answering UNAVAILABLE (the client retries)."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get on SIGTERM."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.sample_wait_s <= 0:
            raise ValueError("sample_wait_s must be > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BufferConfig:
        """Defaults, then FNAS_BUFFER_<FIELD> variables, then explicit (non-None) overrides."""
        return config.from_env(cls, "buffer", environ, **overrides)
