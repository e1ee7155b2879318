"""fnas.aio.wait_event: a bounded wait that keeps every cancel."""

from __future__ import annotations

import asyncio

from fnas import aio


async def test_it_says_whether_the_event_came_before_the_deadline():
    event = asyncio.Event()
    assert not await aio.wait_event(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await aio.wait_event(event, 5)


async def test_a_cancel_in_the_step_the_event_is_set_still_cancels():
    event = asyncio.Event()
    task = asyncio.create_task(aio.wait_event(event, 5))
    await asyncio.sleep(0)  # the task waits
    event.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled()
