"""Configuration of a trainer worker: flags or FNAS_TRAINER_<FIELD> variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnas import config


def _default_trainer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class TrainerConfig(config.JetStreamClient):
    """Everything one trainer worker needs; validated on construction (TLS and NATS credentials: the base)."""

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
    max_jobs_per_fetch: int = 16
    """Most jobs one fetch takes when jobs take milliseconds (tables); a training job always comes alone."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on: loopback unless a scraper on another host needs it (0.0.0.0 in a pod)."""
    torch_threads: int = 1
    """torch.set_num_threads for training; more threads than free cores slows training 20-50x."""
    pending_poll_s: float = 5.0
    """Seconds between reads of the queue depth for the fnas_trainer_queue_pending gauge."""
    log_level: str = "INFO"
    """Root log level."""
    # Training of trained spaces (mnas): the proxy task and the AKP pool (paper 4.3).
    pool_address: str = ""
    """host:port of the PoolService (AKP); empty: every job trains from scratch."""
    pool_timeout_s: float = 30.0
    """Deadline of one pool call; a pool that does not answer means training from scratch, not failing."""
    device: str = "auto"
    """Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:N (one job per GPU)."""
    amp: str = "auto"
    """Mixed precision: auto (bf16 autocast on CUDA), bf16, off."""
    latency: str = "measured"
    """Latency figure: measured (whole model, batch 1, median after warm-up), table (per layer), none."""
    latency_repeats: int = 20
    """Timed forward passes per latency measurement (after 5 untimed ones)."""
    width_mult: float = 0.5
    """Global width multiplier of the trained mnas networks (MobileNetV2's alpha)."""
    image_side: int = 16
    """Images are resized to this square side before training (digits: 8 -> 16); 0 keeps them as stored."""
    batch_size: int = 128
    """Training batch size; an epoch is floor(train images / batch_size) steps, equal for every sample."""
    lr: float = 0.01
    """Peak AdamW learning rate of the one-cycle schedule."""
    data_seed: int = 0
    """Seed of the train / validation split: the same split for every sample of every search."""
    val_fraction: float = 0.2
    """Share of each class held out for validation (the accuracy of the reward)."""
    data_dir: Path = Path("fnas-data")
    """The per-layer latency table lives in <data_dir>/trainer/."""
    isolation: str = "process"
    """Where training runs: process (a child process per worker, killable) or thread (in this process)."""
    job_timeout_s: float = 3600.0
    """A training job running longer is killed and handed back to the queue."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_training(self)
        if not self.nats_url:
            raise ValueError("nats_url must not be empty")
        if not self.trainer_id:
            object.__setattr__(self, "trainer_id", _default_trainer_id())
        if self.ack_wait_s <= 0:
            raise ValueError(f"ack_wait_s must be > 0, got {self.ack_wait_s}")
        if self.max_jobs_per_fetch < 1:
            raise ValueError(f"max_jobs_per_fetch must be >= 1, got {self.max_jobs_per_fetch}")
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


def check_training(cfg: TrainerConfig) -> None:
    """ValueError naming the first training field with a bad value."""
    choices = {"amp": ("auto", "bf16", "off"), "latency": ("measured", "table", "none"),
               "isolation": ("process", "thread")}  # fmt: skip
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    positive = ("pool_timeout_s", "latency_repeats", "width_mult", "batch_size", "lr", "job_timeout_s")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.image_side < 0 or not 0 < cfg.val_fraction < 1:
        raise ValueError("image_side must be >= 0 and val_fraction in (0, 1)")
