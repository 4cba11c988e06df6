"""A real PostgreSQL server for the tests, from Debian's packages, on loopback.

``PostgresServer.start()`` runs ``initdb`` into a fresh temporary folder, starts ``postgres`` on
127.0.0.1 at a free port with its unix socket inside that folder (never /var/run), and waits
until it accepts connections (``pg_ctl start -w``); ``stop()`` stops it and removes the folder.
Each test gets a database of its own (``create_database``), dropped after.

The superuser has a random password and TCP connections must give it (scram-sha-256), so the
store's password handling is exercised for real; the password is passed to stores through
``QWEN_STORE_PASSWORD`` / the ``password`` argument, never written into a URL in a file.

PostgreSQL refuses to run as root. When the tests run as root (CI containers), the server runs
as the ``postgres`` user the Debian package creates (``runuser -u postgres``), in a folder it
owns; otherwise as the current user. ``find_bindir()`` returns None only when no PostgreSQL
binaries are installed, and the fixture then skips with that reason.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Where Debian puts each major version's programs; the newest wins.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "qwen_test"
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$QWEN_TEST_PG_BINDIR``,
    Debian's newest ``/usr/lib/postgresql/<major>/bin``, or the folder of ``initdb`` on PATH."""
    wanted = ("initdb", "pg_ctl", "postgres")
    candidates: list[Path] = []
    if os.environ.get("QWEN_TEST_PG_BINDIR"):
        candidates.append(Path(os.environ["QWEN_TEST_PG_BINDIR"]))
    if DEBIAN_ROOT.is_dir():
        majors = sorted(
            (p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [p / "bin" for p in majors]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in wanted):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One throw-away PostgreSQL cluster: ``start()``, ``url(db)``, ``stop()``."""

    bindir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    root: Path | None = None
    _run_as: str | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    def _command(self, *args: str) -> list[str]:
        """``args`` run as the server's user (``runuser -u postgres --`` when we are root)."""
        if self._run_as is None:
            return list(args)
        return ["runuser", "-u", self._run_as, "--", *args]

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self._log_tail()
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{log}"
            )

    def _log_tail(self) -> str:
        path = self.root / "server.log" if self.root is not None else None
        if path is None or not path.is_file():
            return ""
        return "server log:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:])

    def start(self) -> PostgresServer:
        """initdb into a new temporary folder and start the server; RuntimeError says why not."""
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to run PostgreSQL as "
                    "(Debian's postgresql package creates it)"
                ) from None
            self._run_as = "postgres"
        # A folder of its own (pytest's are root-only, 0700). Run as another user, it must be
        # reachable by that user: /tmp (1777) rather than a $TMPDIR that may sit under /root.
        base = "/tmp" if self._run_as is not None and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="qwen-pg-", dir=base))
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        (self.root / "socket").mkdir()
        if self._run_as is not None:
            info = pwd.getpwnam(self._run_as)
            for path in (self.root, pwfile, self.root / "socket"):
                os.chown(path, info.pw_uid, info.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # a throw-away cluster: initdb need not fsync its files
        )
        pwfile.unlink()
        last: RuntimeError | None = None
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.root / 'socket'} "
                "-c max_connections=200 -c shared_buffers=32MB"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "120",
                    "start",
                )
                return self
            except RuntimeError as exc:
                last = exc
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut) and remove its folder."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            pg_ctl = str(self.bindir / "pg_ctl")
            try:
                self._run(pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            except RuntimeError:
                self._run(pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, dbname: str = "postgres") -> str:
        """The libpq URL of ``dbname`` on this server, without the password."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def admin(self):  # -> psycopg.Connection (imported lazily: the module loads without it)
        """An autocommit superuser connection to the ``postgres`` database."""
        import psycopg

        return psycopg.connect(self.url(), password=self.password, autocommit=True)

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL (no password in it)."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, cutting any connection still open to it."""
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
