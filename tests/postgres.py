"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

``initdb`` makes a cluster in a new temporary directory; ``pg_ctl`` starts it listening only on a
unix socket in that directory (no TCP port to collide with anything), with durability off
(fsync, full-page writes) since nothing here must survive a crash. ``stop`` removes it all.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (made
by the distribution's package), or ``nobody``.

A missing binary is a failure, not a skip: ``make test`` installs them where it can (Makefile,
``postgres-binaries``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

#: The superuser ``initdb`` creates; trust authentication on the private socket only.
USER = "fluxbot"
#: Speed (a test database never has to survive a crash), and a time zone that is not UTC and
#: not a whole hour off it, so a naive timestamp anywhere would show.
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200 -c timezone=Asia/Kathmandu"
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the cluster did not start; the message says why."""


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``PG_BINDIR``, the ``PATH``, or Debian's place."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(debian, key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. As root, `make test` "
        "installs them (apt-get install postgresql); otherwise install your distribution's "
        "PostgreSQL server package, or set PG_BINDIR to the directory holding initdb."
    )


class PostgresServer:
    """One cluster in a temporary directory; ``database()`` hands out empty databases."""

    def __init__(self, bindir: Path, root: Path, account: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.root = root
        self._account = account
        self._names = itertools.count(1)

    @property
    def socket_dir(self) -> Path:
        return self.root

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_bindir()
        account = None
        if os.geteuid() == 0:
            account = _unprivileged_account()
        root = Path(tempfile.mkdtemp(prefix="fluxbot-pg-"))
        server = cls(bindir, root, account)
        try:
            if account is not None:
                os.chown(root, account.pw_uid, account.pw_gid)
            server._run(
                "initdb", "-D", "data", "-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale"
            )
            server._run(
                "pg_ctl", "start", "-D", "data", "-l", "server.log", "-w", "-s",
                "-o", f"-k {root} {SERVER_OPTIONS}",
            )  # fmt: skip
        except BaseException:
            server._remove()
            raise
        return server

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", "data", "-m", "immediate", "-w", "-s")
        finally:
            self._remove()

    def url(self, database: str) -> str:
        """A ``DATABASE_URL`` for ``database`` on this server's socket."""
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A new empty database for one test (about 40 ms), dropped afterwards."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        admin = await asyncpg.connect(host=str(self.socket_dir), user=USER, database="postgres")
        try:
            # FILE_COPY: with fsync off its checkpoint is cheap, and it beats WAL_LOG here.
            await admin.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
            try:
                yield self.url(name)
            finally:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        account = self._account
        result = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{server_log}"
            )

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged_account() -> pwd.struct_passwd:
    """PostgreSQL will not run as root: the distribution's ``postgres`` user, else ``nobody``."""
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root, and neither a postgres nor a nobody user exists")
