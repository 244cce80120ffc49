"""A real single-node SLURM cluster on localhost, for the tests (Debian, root).

Why a real one: submitit talks to SLURM through ``sbatch``/``sacct``/``scancel`` and
requeues through ``scontrol``; only the real commands show whether a job array, a
failed task and a ``USR2``-preempted ``Checkpointable`` behave as on a real cluster.

Everything (munge key and socket, MariaDB data dir, SLURM state, spool, logs and pid
files) lives under one folder; nothing is written to ``/etc`` or ``/run``.  Daemons
are stopped through their pid files only.  Usable from a shell too::

    python tests/slurm/cluster.py up /tmp/slurm     # prints: export SLURM_CONF=...
    python tests/slurm/cluster.py down /tmp/slurm

Facts behind the settings: /work/shared/design/SLURM.md (kept in the docstrings here,
the repository does not depend on it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
# Binaries that prove the packages above are installed.
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "sacctmgr", "munged",
            "mariadbd", "mariadb-install-db", "mariadb")
CLUSTER = "nlrepro"
PARTITION = "debug"
# Daemons in stop order: pid file name -> binary name (checked before signalling).
DAEMONS = (("slurmd.pid", "slurmd"), ("slurmctld.pid", "slurmctld"),
           ("slurmdbd.pid", "slurmdbd"), ("mariadb.pid", "mariadbd"), ("munged.pid", "munged"))


class ClusterUnavailable(RuntimeError):
    """This machine cannot host the test cluster (not root, not Debian, no packages)."""


def unavailable_reason() -> str | None:
    """Why a cluster cannot be brought up here, or None when it can be tried."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "needs root (starts munged, MariaDB and the SLURM daemons)"
    if not Path("/etc/debian_version").is_file():
        return "needs Debian (installs SLURM from Debian's packages)"
    if not all(shutil.which(b) for b in BINARIES) and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is not available"
    return None


def ensure_packages(log: Path | None = None) -> float:
    """Install the Debian packages when a binary is missing; seconds spent (0 if none)."""
    if all(shutil.which(b) for b in BINARIES):
        return 0.0
    t0 = time.time()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if log is not None:
            with open(log, "a") as fh:
                fh.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
        if res.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd[:2])} failed (rc {res.returncode}): "
                                     f"{_tail(res.stderr or res.stdout)}")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise ClusterUnavailable(f"packages installed but binaries missing: {missing}")
    return time.time() - t0


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, ok, timeout: float, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ok():
            return
        time.sleep(0.1)
    detail = f"\n--- {log} ---\n{_tail(log.read_text())}" if log and log.is_file() else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s{detail}")


def _pid_alive(pid: int, binary: str) -> bool:
    """True if ``pid`` runs ``binary`` (guards against a recycled pid)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if "State:\tZ" in status:
        return False
    return comm == binary[:15]  # /proc/<pid>/comm holds at most 15 characters


@dataclass
class SlurmCluster:
    """One cluster under ``root``; ``start()`` brings it up, ``stop()`` takes it down."""

    root: Path
    name: str = CLUSTER
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (and submitit): ``SLURM_CONF`` points here."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- commands -------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        res = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (rc {res.returncode}): "
                               f"{res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def _daemon(self, *cmd: str, user: str | None = None) -> None:
        full = ["runuser", "-u", user, "--", *cmd] if user else list(cmd)
        res = subprocess.run(full, env=self.env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} did not start (rc {res.returncode}): "
                               f"{res.stderr.strip() or res.stdout.strip()}")

    # ---- bring-up ---------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        """Munge, MariaDB, slurmdbd (+ cluster in the database), slurmctld, slurmd."""
        t0 = time.time()
        # munged wants execute permission for all on every folder above its socket.
        for sub in ("", "etc", "log", "state", "spool", "munge", "mysql"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            (self.root / sub).chmod(0o755)
        self.ports = {k: _free_port() for k in ("mysql", "dbd", "ctld", "slurmd")}
        steps = (("munge", self._start_munge), ("mariadb", self._start_mariadb),
                 ("slurmdbd", self._start_slurmdbd), ("slurmctld", self._start_slurmctld),
                 ("slurmd", self._start_slurmd))
        try:
            for name, step in steps:
                t = time.time()
                step()
                self.timings[name] = time.time() - t
        except BaseException:
            self.stop(remove=False)
            raise
        self.timings["bring_up"] = time.time() - t0
        return self

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        m = self.root / "munge"
        self._daemon("munged", f"--socket={m / 'munge.socket'}", f"--key-file={key}",
                     f"--pid-file={self.root / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                     f"--seed-file={m / 'munge.seed'}")
        _wait("munged", (m / "munge.socket").exists, 10, m / "munged.log")

    def _start_mariadb(self) -> None:
        """A private MariaDB for slurmdbd: submitit polls ``sacct``, which needs accounting."""
        data = self.root / "mysql"
        res = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                              "--user=root", "--auth-root-authentication-method=socket",
                              "--skip-test-db"], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {_tail(res.stderr + res.stdout)}")
        log = self.root / "log" / "mariadb.log"
        subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
             f"--socket={self.root / 'mysql.sock'}", f"--port={self.ports['mysql']}",
             "--bind-address=127.0.0.1", "--skip-name-resolve",
             f"--pid-file={self.root / 'mariadb.pid'}", f"--log-error={log}",
             "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
             "--skip-log-bin"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _wait("mariadbd", lambda: _port_open(self.ports["mysql"])
              and (self.root / "mariadb.pid").is_file(), 60, log)
        self.db_password = secrets.token_hex(12)
        sql = (f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        res = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.root / 'mysql.sock'}",
                              "-u", "root", "-e", sql], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"creating the slurm database user failed: {res.stderr.strip()}")

    def _auth(self) -> str:
        # Requeued jobs wait cred_expire + 1 s before they may start again (default 121 s).
        return f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'},cred_expire=10"

    def _start_slurmdbd(self) -> None:
        conf = self.root / "etc" / "slurmdbd.conf"
        conf.write_text("\n".join([
            "AuthType=auth/munge", self._auth(), "DbdHost=localhost",
            f"DbdPort={self.ports['dbd']}", "SlurmUser=root",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.ports['mysql']}", "StorageUser=slurm",
            f"StoragePass={self.db_password}", "StorageLoc=slurm_acct_db",
            f"PidFile={self.root / 'slurmdbd.pid'}",
            f"LogFile={self.root / 'log' / 'slurmdbd.log'}", "DebugLevel=info", ""]))
        conf.chmod(0o600)  # slurmdbd refuses a config that others can read
        self._daemon("slurmdbd")  # finds slurmdbd.conf next to $SLURM_CONF
        _wait("slurmdbd", lambda: _port_open(self.ports["dbd"]), 60,
              self.root / "log" / "slurmdbd.log")

    def _node_line(self) -> str:
        """The node as ``slurmd -C`` sees it (hand-written CPU counts trigger warnings)."""
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]
        words = [w for w in out.split() if not w.startswith("NodeName=")]
        return " ".join(["NodeName=localhost", *words, "State=UNKNOWN"])

    def _start_slurmctld(self) -> None:
        r = self.root
        self.conf.write_text("\n".join([
            f"ClusterName={self.name}", "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ports['ctld']}", f"SlurmdPort={self.ports['slurmd']}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            "CredType=cred/munge", self._auth(),
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerParameters=sched_interval=1,bf_interval=1", "ReturnToService=2",
            "MpiDefault=none", "KillWait=5", "InactiveLimit=0", "MailProg=/bin/true",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost", f"AccountingStoragePort={self.ports['dbd']}",
            # For slurmdbd connections the munge socket comes from here, not AuthInfo.
            f"AccountingStoragePass={self.root / 'munge' / 'munge.socket'}",
            self._node_line(),
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.run("sacctmgr", "-i", "add", "cluster", self.name)
        self._daemon("slurmctld")
        _wait("slurmctld", lambda: self.run("scontrol", "ping", check=False).count("UP") > 0,
              60, r / "log" / "slurmctld.log")

    def _start_slurmd(self) -> None:
        self._daemon("slurmd", "-N", "localhost")

        def idle() -> bool:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip()
            return state.startswith("idle")

        _wait("slurmd (node idle)", idle, 60, self.root / "log" / "slurmd.log")

    # ---- tear-down --------------------------------------------------------------------
    def stop(self, remove: bool = True, timeout: float = 20) -> None:
        """Cancel jobs, then stop each daemon by its pid file (never by process name)."""
        if self.conf.is_file() and (self.root / "slurmctld.pid").is_file():
            try:
                ids = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).split()
                if ids:
                    self.run("scancel", *ids, check=False, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for pidfile, binary in DAEMONS:
            path = self.root / pidfile
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not _pid_alive(pid, binary):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while _pid_alive(pid, binary) and time.time() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid, binary):
                os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, lines: int = 30) -> str:
        """Tails of every daemon log (for failure messages)."""
        out = []
        for log in sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {log.name} ---\n{_tail(log.read_text(errors='replace'), lines)}")
        return "\n".join(out)


def bring_up(root: Path | None = None) -> SlurmCluster:
    """Install what is missing and start a cluster under ``root`` (default: a new temp dir)."""
    reason = unavailable_reason()
    if reason:
        raise ClusterUnavailable(reason)
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="nlrepro-slurm-"))
    root.mkdir(parents=True, exist_ok=True)
    install_s = ensure_packages(root / "apt.log")
    cluster = SlurmCluster(root).start()
    cluster.timings["install"] = install_s
    return cluster


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: cluster.py up|down DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "up":
        cluster = bring_up(root)
        print(f"# up in {cluster.timings['bring_up']:.1f}s "
              f"(+{cluster.timings['install']:.1f}s install)", file=sys.stderr)
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        SlurmCluster(root).stop(remove=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
