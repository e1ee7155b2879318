"""Who may do what with a search, and how much: the AgentService's tenant rules and limits.

A search belongs to the tenant whose token submitted it (fnas.auth); only that
tenant sees, watches, cancels it or reads its top architectures. Another
tenant's request for it is NOT_FOUND, word for word what an unknown id gets,
so no answer tells another tenant that a search exists. ListSearches shows only
one's own searches.
Without authentication every caller is the anonymous tenant '' and sees all.

Limits protect a shared agent from one tenant: a budget above the agent's
maximum, or more running searches than a tenant's share, is refused with
RESOURCE_EXHAUSTED and the reason; nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fnas.auth import ANONYMOUS
from fnas.v1 import common_pb2, search_pb2


@dataclass(frozen=True)
class Limits:
    """The AgentService's per-search and per-tenant limits."""

    max_searches_per_tenant: int = 16
    """Running searches one authenticated tenant may have at once."""
    max_budget_samples: int = 100_000
    """Largest budget.max_activated_samples and budget.max_policy_samples."""
    max_budget_seconds: float = 7 * 24 * 3600.0
    """Largest budget.max_seconds."""

    def __post_init__(self) -> None:
        if self.max_searches_per_tenant < 1 or self.max_budget_samples < 1 or self.max_budget_seconds <= 0:
            raise ValueError("limits must be positive")


def budget_refusal(spec: common_pb2.SearchSpec, limits: Limits) -> str | None:
    """Why the spec's budget exceeds the limits ('<field>: <reason>'), or None when it fits."""
    budget = spec.budget
    for name in ("max_activated_samples", "max_policy_samples"):
        value = getattr(budget, name)
        if value > limits.max_budget_samples:
            return f"budget.{name}: {value} exceeds this agent's limit of {limits.max_budget_samples}"
    if budget.max_seconds > limits.max_budget_seconds:
        return (
            f"budget.max_seconds: {budget.max_seconds:g} exceeds this agent's limit of "
            f"{limits.max_budget_seconds:g}"
        )
    return None


def concurrency_refusal(tenant: str, running_tenants: Iterable[str], limits: Limits) -> str | None:
    """Why `tenant` may not start another search now, or None.

    Only authenticated tenants have a share: without authentication every caller
    is the one anonymous tenant, and the agent's max_searches is the bound.
    """
    if tenant == ANONYMOUS:
        return None
    running = sum(1 for t in running_tenants if t == tenant)
    if running >= limits.max_searches_per_tenant:
        return f"tenant {tenant!r} already runs {running} searches (limit {limits.max_searches_per_tenant})"
    return None


def may_access(status: search_pb2.SearchStatus, tenant: str) -> bool:
    """True when `tenant` owns the search (the anonymous tenant owns the searches submitted without auth)."""
    return status.tenant == tenant


__all__ = ["Limits", "budget_refusal", "concurrency_refusal", "may_access"]
