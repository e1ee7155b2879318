"""The training child process: `python -m services.trainer.child`, one per trainer worker, reused across jobs.

Training runs outside the worker's event loop, so heartbeats keep flowing, a stuck or cancelled job can be
killed (SIGKILL) without taking the worker down, CUDA state never leaks between workers, and torch's thread
count is fixed before torch is imported. The child imports torch once and keeps datasets on its device
between jobs (starting one per job would cost the 5-10 s torch import every time on these CPUs).

Protocol on the child's stdin/stdout, no pickle (only JSON headers, protobuf messages and safetensors cross):
a frame is a 4-byte big-endian header length, a JSON header whose "blobs" lists the byte sizes of the binary
blobs that follow it, then those blobs.

    parent -> child  {"op": "init", "settings": {...}}                  child -> parent {"op": "ready", ...}
    parent -> child  {"op": "train", "use_pool": bool} [TrainJob]
      (use_pool)     child -> parent {"op": "query"} [QueryBlocksRequest]
                     parent -> child {"op": "matches"} [QueryBlocksResponse]
    child -> parent  {"op": "result", figures...} [PutBlocksRequest when use_pool]
                  or {"op": "error", "invalid": bool, "message": str}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import BinaryIO

from fnas import logs
from fnas.v1 import pool_pb2, queue_pb2

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_HEADER_BYTES = 16 << 20


def encode(header: dict, blobs: Sequence[bytes] = ()) -> bytes:
    """One frame: header length, JSON header (with the blob sizes), blobs."""
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    return _LEN.pack(len(head)) + head + b"".join(blobs)


def _decode_header(raw: bytes) -> dict:
    header = json.loads(raw)
    if not isinstance(header, dict) or not isinstance(header.get("blobs"), list):
        raise ValueError("malformed frame header")
    return header


def read_frame(stream: BinaryIO) -> tuple[dict, list[bytes]]:
    """Reads one frame from a blocking stream; EOFError when it ends."""

    def exactly(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise EOFError("stream closed")
        return data

    (size,) = _LEN.unpack(exactly(_LEN.size))
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"frame header of {size} bytes")
    header = _decode_header(exactly(size))
    return header, [exactly(int(n)) for n in header["blobs"]]


async def read_frame_async(reader: asyncio.StreamReader) -> tuple[dict, list[bytes]]:
    """Reads one frame from an asyncio stream; EOFError when it ends."""
    try:
        (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"frame header of {size} bytes")
        header = _decode_header(await reader.readexactly(size))
        return header, [await reader.readexactly(int(n)) for n in header["blobs"]]
    except asyncio.IncompleteReadError:
        raise EOFError("child closed its output") from None


class ChildError(Exception):
    """The child died or broke the protocol; the job is retried elsewhere (transient)."""


AsyncQuery = Callable[[pool_pb2.QueryBlocksRequest], Awaitable[pool_pb2.QueryBlocksResponse]]


class ChildProcess:
    """The parent's handle on one training child; starts it lazily, restarts it after a failure."""

    def __init__(self, settings: dict, start_timeout_s: float = 300.0) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict = {}
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        threads = str(self.settings.get("torch_threads", 1))
        # Before torch is imported in the child: its thread pools size themselves from these (TECH-NOTES).
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.trainer.child", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            await self._send(proc, {"op": "init", "settings": self.settings})
            async with asyncio.timeout(self.start_timeout_s):
                header, _ = await read_frame_async(proc.stdout)
        except BaseException:
            await _kill(proc)
            raise
        if header.get("op") != "ready":
            await _kill(proc)
            raise ChildError(f"child failed to start: {header.get('message', header)}")
        self.info = header
        log.info("training child %d ready on %s", proc.pid, header.get("device"))
        return proc

    @staticmethod
    async def _send(proc: asyncio.subprocess.Process, header: dict, blobs: Sequence[bytes] = ()) -> None:
        proc.stdin.write(encode(header, blobs))
        await proc.stdin.drain()

    async def run(
        self, job: queue_pb2.TrainJob, query: AsyncQuery | None, timeout_s: float | None = None
    ) -> tuple[dict, list[bytes]]:
        """Runs one job in the child; answers its pool query with `query`. Kills the child if interrupted.

        `timeout_s` bounds the job itself (TimeoutError); starting the child is bounded by start_timeout_s.
        """
        async with self._lock:
            try:
                if self.proc is None or self.proc.returncode is not None:
                    self.proc = await self._start()
                async with asyncio.timeout(timeout_s):
                    return await self._exchange(self.proc, job, query)
            except (EOFError, ConnectionError, ValueError) as e:
                await self.kill()
                raise ChildError(f"training child failed: {e}") from e
            except BaseException:  # cancelled (job timeout, shutdown): the child's state is unknown
                await self.kill()
                raise

    async def _exchange(
        self, proc: asyncio.subprocess.Process, job: queue_pb2.TrainJob, query: AsyncQuery | None
    ) -> tuple[dict, list[bytes]]:
        await self._send(proc, {"op": "train", "use_pool": query is not None}, [job.SerializeToString()])
        while True:
            header, blobs = await read_frame_async(proc.stdout)
            if header.get("op") != "query":
                return header, blobs
            response = await query(pool_pb2.QueryBlocksRequest.FromString(blobs[0]))
            await self._send(proc, {"op": "matches"}, [response.SerializeToString()])

    async def kill(self) -> None:
        """Kills the child now (SIGKILL); the next job starts a fresh one."""
        if self.proc is not None:
            await _kill(self.proc)
            self.proc = None

    async def close(self, timeout_s: float = 5.0) -> None:
        """Ends the child: EOF on its stdin lets it exit; killed if it does not within timeout_s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.stdin.close()
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            await _kill(proc)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def serve(stdin: BinaryIO, out: BinaryIO) -> int:
    """The child's loop: init, then one job per "train" frame until stdin closes."""
    from services.trainer.job import JobRunner, Settings

    def send(header: dict, blobs: Sequence[bytes] = ()) -> None:
        out.write(encode(header, blobs))
        out.flush()

    header, _ = read_frame(stdin)
    try:
        runner = JobRunner(Settings(**header["settings"]))
    except (TypeError, ValueError) as e:  # unknown settings or an unusable device
        send({"op": "error", "invalid": True, "message": str(e)})
        return 2
    send({"op": "ready", "device": str(runner.device), "bf16": runner.bf16, "pid": os.getpid()})
    while True:
        try:
            header, blobs = read_frame(stdin)
        except EOFError:
            return 0
        job = queue_pb2.TrainJob.FromString(blobs[0])

        def query(request: pool_pb2.QueryBlocksRequest) -> pool_pb2.QueryBlocksResponse:
            send({"op": "query"}, [request.SerializeToString()])
            _, answer = read_frame(stdin)
            return pool_pb2.QueryBlocksResponse.FromString(answer[0])

        try:
            result = runner.run(job, query if header.get("use_pool") else None)
        except ValueError as e:  # the job can never succeed: bad tokens, unreadable dataset...
            send({"op": "error", "invalid": True, "message": str(e)})
            continue
        except Exception as e:
            log.exception("job %s failed", job.job_id)
            send({"op": "error", "invalid": False, "message": f"{type(e).__name__}: {e}"})
            continue
        figures = {k: getattr(result, k) for k in _FIGURES}
        send({"op": "result", **figures}, [result.put.SerializeToString()] if result.put else [])


_FIGURES = (
    "accuracy", "latency_ms", "mult_adds", "params", "iterations", "losses", "epochs",
    "pool_blocks_matched", "pool_blocks_queried", "seconds",
)  # fmt: skip


def main() -> int:
    """Entry point: frames on the original stdout; anything else printed goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print() must not corrupt the protocol
    logs.setup(os.environ.get("FNAS_TRAINER_LOG_LEVEL", "INFO"), stream=sys.stderr)
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
