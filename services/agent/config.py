"""Configuration of the agent service: flags or FNAS_AGENT_<FIELD> variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnas import config


@dataclass(frozen=True)
class AgentConfig(config.JetStreamClient):
    """Everything the agent needs to run; validated on construction (TLS and NATS credentials: the base)."""

    nats_url: str = "nats://127.0.0.1:4222"
    """JetStream server carrying train jobs, results and events."""
    data_dir: Path = Path("fnas-data")
    """The agent's LMDB (searches, results, checkpoints) lives in <data_dir>/agent."""
    host: str = "127.0.0.1"
    """gRPC bind address (0.0.0.0 in a container)."""
    port: int = 50051
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics port; None serves no endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address /metrics listens on: loopback unless a scraper on another host needs it (0.0.0.0 in a pod)."""
    log_level: str = "INFO"
    """Root log level."""
    max_searches: int = 64
    """Searches running at once; more are refused with RESOURCE_EXHAUSTED."""
    torch_threads: int = 1
    """torch threads for the policy updates."""
    grace_s: float = 5.0
    """Seconds in-flight RPCs get on SIGTERM."""
    critic_address: str = ""
    """host:port of the CriticService (UAC) the fnas strategies use; empty: none (they are refused)."""
    buffer_address: str = ""
    """host:port of the BufferService (AEB) the fnas strategies use; empty: none (they are refused)."""
    module_patience_s: float = 120.0
    """Seconds a critic or buffer call is retried; then the batch goes without it (trained, no replays)."""

    auth_tokens_file: Path | None = None
    """File of `tenant:token` lines; set (or auth_tokens), AgentService requires a bearer token."""
    auth_tokens: str = ""
    """Comma-separated `tenant:token` entries (use the environment variable, not a flag; never logged)."""
    max_searches_per_tenant: int = 16
    """Searches one authenticated tenant may run at once (more: RESOURCE_EXHAUSTED); no auth: max_searches."""
    max_budget_samples: int = 100_000
    """Largest budget.max_activated_samples / max_policy_samples a search may ask for."""
    max_budget_seconds: float = 7 * 24 * 3600.0
    """Largest budget.max_seconds a search may ask for."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest AgentService request accepted (a SearchSpec is small; this bounds warm_start lists)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.max_searches_per_tenant, self.max_budget_samples, self.max_message_bytes) < 1:
            raise ValueError("max_searches_per_tenant, max_budget_samples and max_message_bytes must be >= 1")
        if not 0 < self.module_patience_s <= 3600:
            raise ValueError(f"module_patience_s must be in (0, 3600], got {self.module_patience_s}")
        if self.max_budget_seconds <= 0:
            raise ValueError("max_budget_seconds must be > 0")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_searches < 1:
            raise ValueError("max_searches must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AgentConfig:
        """Defaults, then FNAS_AGENT_<FIELD> variables, then explicit (non-None) overrides."""
        return config.from_env(cls, "agent", environ, **overrides)
