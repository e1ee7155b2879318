"""Configuration of a trainer worker: flags or FNAS_TRAINER_<FIELD> variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fnas import config


def _default_trainer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class TrainerConfig:
    """Everything one trainer worker needs; validated on construction."""

    nats_url: str = "nats://127.0.0.1:4222"
    """JetStream server carrying train jobs and results."""
    trainer_id: str = ""
    """Name of this worker in results and logs; empty means <hostname>-<pid>."""
    heartbeat_s: float = 5.0
    """Seconds between in_progress() heartbeats while a job runs; must be well below ack_wait_s."""
    ack_wait_s: float = 30.0
    """Seconds a job may go without a heartbeat before JetStream hands it to another trainer."""
    max_deliver: int = 5
    """Deliveries of a job before it is reported as a FAILED result ("redeliveries exhausted")."""
    nak_delay_s: float = 2.0
    """Delay before a job that failed transiently (not an invalid job) is redelivered."""
    grace_s: float = 10.0
    """On SIGTERM, seconds the current job gets to finish before it is handed back to the queue."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    torch_threads: int = 1
    """torch.set_num_threads for training; more threads than free cores slows training 20-50x."""
    pending_poll_s: float = 5.0
    """Seconds between reads of the queue depth for the fnas_trainer_queue_pending gauge."""
    log_level: str = "INFO"
    """Root log level."""

    def __post_init__(self) -> None:
        if not self.nats_url:
            raise ValueError("nats_url must not be empty")
        if not self.trainer_id:
            object.__setattr__(self, "trainer_id", _default_trainer_id())
        if self.ack_wait_s <= 0:
            raise ValueError(f"ack_wait_s must be > 0, got {self.ack_wait_s}")
        if not 0 < self.heartbeat_s < self.ack_wait_s:
            raise ValueError(
                f"heartbeat_s must be in (0, ack_wait_s={self.ack_wait_s}), got {self.heartbeat_s}"
            )
        if self.max_deliver < 1:
            raise ValueError(f"max_deliver must be >= 1, got {self.max_deliver}")
        if self.nak_delay_s < 0 or self.grace_s < 0 or self.pending_poll_s <= 0:
            raise ValueError("nak_delay_s and grace_s must be >= 0, pending_poll_s > 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TrainerConfig:
        """Defaults, then FNAS_TRAINER_<FIELD> variables, then explicit (non-None) overrides."""
        return config.from_env(cls, "trainer", environ, **overrides)
