"""Configuration of the critic service: flags or FNAS_CRITIC_<FIELD> variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnas import config


@dataclass(frozen=True)
class CriticConfig(config.JetStreamClient):
    """Everything the critic needs to run; validated on construction (TLS and NATS credentials: the base)."""

    nats_url: str = "nats://127.0.0.1:4222"
    """JetStream server carrying the train results (durable consumer "critic")."""
    data_dir: Path = Path("fnas-data")
    """The critic's LMDB (histories, nets, snapshots) lives in <data_dir>/critic."""
    host: str = "127.0.0.1"
    """gRPC bind address (0.0.0.0 in a container)."""
    port: int = 50052
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on: loopback unless a scraper on another host needs it (0.0.0.0 in a pod)."""
    log_level: str = "INFO"
    """Root log level."""
    torch_threads: int = 1
    """torch threads for training rounds (the nets are small; more threads only contend)."""
    predict_wait_s: float = 5.0
    """How long Predict waits for missing results before answering UNAVAILABLE (the client retries)."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get on SIGTERM."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.torch_threads < 1:
            raise ValueError("torch_threads must be >= 1")
        if self.predict_wait_s <= 0:
            raise ValueError("predict_wait_s must be > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CriticConfig:
        """Defaults, then FNAS_CRITIC_<FIELD> variables, then explicit (non-None) overrides."""
        return config.from_env(cls, "critic", environ, **overrides)
