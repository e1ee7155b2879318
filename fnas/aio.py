"""Waiting with a deadline that never loses a cancellation.

On Python 3.11, `asyncio.wait_for` swallows a `cancel()` that arrives in the
same loop step as the awaited thing completes (CPython gh-86296, fixed in
3.12): it returns the result and the task runs on. A search loop that waits
for a wake-up in `wait_for` then never ended when the agent closed (a CI run
hung for 60 s on it). `asyncio.timeout` counts cancellations and re-raises
them, so the project waits with it only; ruff bans `asyncio.wait_for` (TID251).
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Waits until `event` is set or `timeout_s` passes; True when it is set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
