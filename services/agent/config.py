"""Configuration of the agent service: flags or FNAS_AGENT_<FIELD> variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run; validated on construction."""

    nats_url: str = "nats://127.0.0.1:4222"
    """JetStream server carrying train jobs, results and events."""
    data_dir: Path = Path("fnas-data")
    """The agent's LMDB (searches, results, checkpoints) lives in <data_dir>/agent."""
    host: str = "127.0.0.1"
    """gRPC bind address (0.0.0.0 in a container)."""
    port: int = 50051
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus endpoint port; None disables it."""
    max_searches: int = 64
    """Searches running at once; more are refused with RESOURCE_EXHAUSTED."""
    ack_wait_s: float = 30.0
    """Seconds a trainer may go without a heartbeat before its job is redelivered."""
    max_deliver: int = 5
    """Deliveries of a train job before it is reported as a failed sample."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get on SIGTERM."""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_searches < 1:
            raise ValueError("max_searches must be >= 1")
        if self.ack_wait_s <= 0 or self.max_deliver < 1:
            raise ValueError("ack_wait_s must be > 0 and max_deliver >= 1")

    @classmethod
    def from_env(cls, **overrides) -> AgentConfig:
        """Defaults, then FNAS_AGENT_<FIELD> variables, then explicit overrides."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"FNAS_AGENT_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(kind: str, raw: str):
    if "Path" in kind:
        return Path(raw)
    if "int" in kind:
        return int(raw)
    if "float" in kind:
        return float(raw)
    return raw
