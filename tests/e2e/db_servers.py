"""Database and cache servers from Debian's packages, started on loopback for one test
module and stopped by pid: redis-server, memcached, PostgreSQL (a fresh cluster made
with initdb, run as the `postgres` user) and MariaDB (a fresh data directory made with
mariadb-install-db, grant tables skipped). scripts/test.sh installs the packages.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _which(*names: str) -> str:
    for n in names:
        p = shutil.which(n) or next(iter(glob.glob(n)), None)
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail(f"none of {names} is installed (scripts/test.sh installs them)", pytrace=False)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s:\n{log.read_text()[-3000:]}",
                pytrace=False)


class Servers:
    """Starts servers; `stop()` ends them (only those it started, by pid)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.cleanup: list[Path] = []

    def _start(self, what: str, argv: list[str], port: int, user: str | None = None,
               timeout: float = 60.0) -> subprocess.Popen:
        log = self.workdir / f"{what}-{port}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, user=user, group=user)
        self.procs.append((what, proc))
        _wait_port(port, proc, log, what, timeout)
        return proc

    def redis(self, port: int) -> subprocess.Popen:
        return self._start("redis", [_which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--protected-mode", "no"], port)

    def memcached(self, port: int) -> subprocess.Popen:
        return self._start("memcached", [_which("memcached"), "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                         "-u", "root", "-m", "64"], port)

    def postgres(self, port: int) -> subprocess.Popen:
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindir:
            pytest.fail("PostgreSQL is not installed (scripts/test.sh installs it)", pytrace=False)
        bindir = bindir[-1]
        # The server runs as `postgres`, which cannot enter the test's private
        # directories: its cluster lives in a directory of its own under the temp dir.
        data = Path(tempfile.mkdtemp(prefix=f"weft-pg-{port}-"))
        self.cleanup.append(data)
        shutil.chown(data, "postgres", "postgres")
        init = subprocess.run([f"{bindir}/initdb", "-D", str(data / "data"), "-U", "postgres", "--auth=trust",
                               "--no-sync"], capture_output=True, text=True, cwd=data, user="postgres",
                              group="postgres")
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        return self._start("postgres", [f"{bindir}/postgres", "-D", str(data / "data"), "-p", str(port),
                                        "-k", str(data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                        "-c", "ssl=off"], port, user="postgres")

    def mariadb(self, port: int) -> subprocess.Popen:
        data = self.workdir / f"mariadb-{port}"
        data.mkdir()
        init = subprocess.run([_which("mariadb-install-db", "mysql_install_db"), "--user=root",
                               f"--datadir={data / 'data'}", "--skip-test-db",
                               "--auth-root-authentication-method=normal"],
                              capture_output=True, text=True, cwd=data)
        assert init.returncode == 0, f"mariadb-install-db failed:\n{init.stdout}\n{init.stderr}"
        return self._start("mariadb", [_which("mariadbd", "/usr/sbin/mariadbd", "/usr/sbin/mysqld"), "--no-defaults",
                                       "--user=root", f"--datadir={data / 'data'}", f"--port={port}",
                                       "--bind-address=127.0.0.1", f"--socket={data / 'sock'}",
                                       "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                                       f"--pid-file={data / 'pid'}"], port)

    def dnsmasq(self, port: int) -> subprocess.Popen:
        """A DNS server on 127.0.0.1:port (UDP, and TCP, which tells it is up) that
        knows `svc.test` (A 10.1.2.3, no AAAA), `db.test` (A 10.0.0.7 and 10.0.0.8),
        answers NXDOMAIN for other names under `test.` and REFUSED elsewhere."""
        return self._start("dnsmasq", [_which("dnsmasq", "/usr/sbin/dnsmasq"), "--keep-in-foreground",
                                       "--conf-file=/dev/null", f"--port={port}", "--listen-address=127.0.0.1",
                                       "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll",
                                       "--user=root", "--pid-file=", "--local=/test/",
                                       "--host-record=svc.test,10.1.2.3",
                                       "--host-record=db.test,10.0.0.7", "--host-record=db.test,10.0.0.8",
                                       "--cache-size=0"], port)

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for what, proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for d in self.cleanup:
            shutil.rmtree(d, ignore_errors=True)
        self.cleanup.clear()
