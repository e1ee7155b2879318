"""The plain runs of `fnas bench search`, in-process or in worker processes (`--workers`).

One run (`run_one`) is one space, strategy and seed: a task (a JSON-able dict)
in, JSON-ready figures out. With several workers, every task is submitted at
once so every core stays busy; each run is seeded and shares nothing with the
others, so the figures are the same whatever the number of workers. A transfer
source's task carries the target tasks (`then`) that start from the critic it
exports.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from asyncio.subprocess import PIPE
from collections import deque
from collections.abc import Callable, Sequence

from fnas_bench import plain_search
from fnas_bench.tabular import Setup, evaluator

#: Longest answer line of a worker: a transfer source's critic snapshot is about 1 MB of base64.
ANSWER_LIMIT = 64 * 2**20


def run_one(task: dict) -> dict:
    """One plain run, the unit of work of `--workers`: a task in, JSON-ready figures out.

    `plain_search.plain_result`'s figures (the trajectory's rewards, the accounting, and a
    snapshot when asked) and the wall seconds.
    """
    setup = Setup.of(task["space"], task["reward"])
    space, evaluate = setup.space, evaluator(setup)
    name, seed, budget = task["strategy"], task["seed"], task["budget"]
    started = time.perf_counter()
    out = plain_search.plain_result(
        space,
        evaluate,
        name,
        seed,
        budget,
        snapshot=task.get("snapshot", ""),
        export=task.get("export", False),
        samples=task.get("samples", False),
    )
    out["seconds"] = time.perf_counter() - started
    return out


class _Finished:
    """The results of the tasks by id; a progress line for each, and the tasks it unlocks."""

    def __init__(self, tasks: Sequence[dict], progress: Callable[[str], None]) -> None:
        self.total, self.progress = _count(tasks), progress
        self.results: dict[str, dict] = {}

    def add(self, task: dict, result: dict) -> list[dict]:
        self.results[task["id"]] = result
        self.progress(f"{task['id']}: {result['seconds']:.1f} s ({len(self.results)}/{self.total})")
        # A transfer source's `then` tasks start from the critic it exported.
        return [{**t, "snapshot": result["snapshot"]} for t in task.get("then", ())]


def _count(tasks: Sequence[dict]) -> int:
    return sum(1 + _count(t.get("then", ())) for t in tasks)


def execute(tasks: Sequence[dict], workers: int, progress: Callable[[str], None]) -> dict[str, dict]:
    """Runs the tasks and those they unlock; results by task id, equal whatever `workers` is."""
    finished = _Finished(tasks, progress)
    if workers == 1:
        queue = deque(tasks)
        while queue:
            task = queue.popleft()
            queue.extend(finished.add(task, run_one(task)))
    else:
        progress(f"{finished.total} plain runs in {workers} worker processes")
        asyncio.run(_in_workers(tasks, min(workers, finished.total), finished))
    return finished.results


async def _in_workers(tasks: Sequence[dict], workers: int, finished: _Finished) -> None:
    """Feeds the tasks to `workers` fresh interpreters (`_serve`), one at a time each, as JSON lines.

    Fresh processes, not forks of this one (its torch and gRPC threads do not survive a fork), and
    JSON, not pickle, across the pipe (tests/unit/test_no_pickle.py).
    """
    queue: asyncio.Queue[dict | None] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)
    unfinished = len(tasks)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fnas_bench.search_workers",
            stdin=PIPE,
            stdout=PIPE,
            env=env,
            limit=ANSWER_LIMIT,
        )
        for _ in range(workers)
    ]

    async def drive(proc: asyncio.subprocess.Process) -> None:
        nonlocal unfinished
        while (task := await queue.get()) is not None:
            wire = {k: v for k, v in task.items() if k != "then"}
            proc.stdin.write(json.dumps(wire).encode() + b"\n")
            await proc.stdin.drain()
            try:
                line = await proc.stdout.readline()
            except ValueError as e:  # longer than ANSWER_LIMIT: a fault here, not bad input
                raise RuntimeError(f"{task['id']}: {e}") from None
            if not line:
                raise RuntimeError(f"search worker exited (code {await proc.wait()}) during {task['id']}")
            result = json.loads(line)
            if "error" in result:  # a bad value stays a ValueError: the CLI answers it with exit code 2
                raise (ValueError if result["bad_input"] else RuntimeError)(
                    f"{task['id']}: {result['error']}"
                )
            for then in finished.add(task, result):
                queue.put_nowait(then)
                unfinished += 1
            unfinished -= 1
            if unfinished == 0:  # nothing left that could unlock more: every driver stops
                for _ in procs:
                    queue.put_nowait(None)

    ok = False
    try:
        async with asyncio.TaskGroup() as group:
            for proc in procs:
                group.create_task(drive(proc))
        ok = True
    except ExceptionGroup as e:
        raise e.exceptions[0] from None
    finally:
        for proc in procs:
            if ok:
                proc.stdin.close()  # end of input: the worker returns
            else:  # a failed benchmark does not wait for the other runs
                if proc.returncode is None:
                    proc.kill()
                await proc.stdout.read()  # wait() also waits for the pipe to close; a paused one never would
            await proc.wait()


def torch_setup() -> None:
    """One torch thread, and torch's lazy imports done before any run's clock starts."""
    import torch

    torch.set_num_threads(1)  # the policy is tiny; more threads only contend (TECH-NOTES, PyTorch)
    # The first optimizer imports torch._dynamo (1-2 s): it would count in the first run of each process.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _serve() -> int:
    """A worker (`python -m fnas_bench.search_workers`): a task per stdin line, its result per stdout line."""
    torch_setup()
    answers, sys.stdout = sys.stdout, sys.stderr  # a stray print must not corrupt the answers
    while line := sys.stdin.readline():
        try:
            result = run_one(json.loads(line))
        except Exception as e:  # reported to the benchmark, which stops with this message
            result = {"error": f"{type(e).__name__}: {e}", "bad_input": isinstance(e, ValueError)}
        answers.write(json.dumps(result) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
