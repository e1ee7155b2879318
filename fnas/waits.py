"""Waiting with a deadline, and cancelling a task, without losing a cancel of the caller.

On Python 3.11, `asyncio.wait_for` swallows a `cancel()` that arrives in the
same loop step as the awaited thing completes (CPython gh-86296, fixed in
3.12): it returns the result and the task runs on. A search loop that waits
for a wake-up in `wait_for` then never ended when the agent closed (a CI run
hung for 60 s on it). `asyncio.timeout` counts cancellations and re-raises
them, so the project waits with it only; ruff bans `asyncio.wait_for` (TID251).
The same loss hides in `task.cancel(); with suppress(CancelledError): await task`,
which `cancel` replaces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Waits until `event` is set or `timeout_s` passes; True when it is set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def wait_until(changed: asyncio.Condition, done: Callable[[], bool], timeout_s: float) -> bool:
    """Waits until `done()` holds, checked now and at each notify of `changed`; False after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s), changed:
            await changed.wait_for(done)
    except TimeoutError:
        return False
    return True


async def cancel(task: asyncio.Future) -> None:
    """Cancels `task` and waits until it has ended, whatever it ends with.

    Unlike `task.cancel(); with suppress(CancelledError): await task`, a cancel of the
    caller that comes meanwhile is raised, not taken for the task's own.
    """
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its end is this caller's business, not the loop's log
