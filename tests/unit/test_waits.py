"""fnas.waits: a bounded wait and a task cancel that keep every cancel of the caller."""

from __future__ import annotations

import asyncio

from fnas import waits


async def test_it_says_whether_the_event_came_before_the_deadline():
    event = asyncio.Event()
    assert not await waits.wait_event(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await waits.wait_event(event, 5)


async def test_a_cancel_in_the_step_the_event_is_set_still_cancels():
    event = asyncio.Event()
    task = asyncio.create_task(waits.wait_event(event, 5))
    await asyncio.sleep(0)  # the task waits
    event.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.cancelled()


async def test_cancelling_a_task_keeps_a_cancel_of_the_caller_and_retrieves_the_task_s_error():
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # e.g. a nak on the way out
            raise

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    caller = asyncio.create_task(waits.cancel(inner))
    await asyncio.sleep(0.01)  # the caller waits for the inner task to stop
    caller.cancel()
    await asyncio.wait({caller, inner}, timeout=1)
    assert inner.cancelled() and caller.cancelled()

    async def fails() -> None:
        raise ValueError("its own error")

    failing = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await waits.cancel(failing)  # does not raise it
    assert isinstance(failing.exception(), ValueError)


async def test_waiting_until_a_condition_holds_checks_now_at_each_notify_and_gives_up_at_the_deadline():
    changed, seen = asyncio.Condition(), [0]

    async def add(n: int) -> None:
        seen[0] += n
        async with changed:
            changed.notify_all()

    assert await waits.wait_until(changed, lambda: seen[0] >= 0, 0)  # holds already: no wait
    assert not await waits.wait_until(changed, lambda: seen[0] >= 2, 0.01)
    loop = asyncio.get_running_loop()
    for delay in (0.01, 0.02):
        loop.call_later(delay, lambda: asyncio.ensure_future(add(1)))
    assert await waits.wait_until(changed, lambda: seen[0] >= 2, 5) and seen[0] == 2
    waiter = asyncio.create_task(waits.wait_until(changed, lambda: seen[0] >= 3, 5))
    await asyncio.sleep(0.01)
    waiter.cancel()  # a cancel of the caller is no timeout
    await asyncio.wait({waiter}, timeout=1)
    assert waiter.cancelled() and not changed.locked()
