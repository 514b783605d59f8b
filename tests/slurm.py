"""A one-node SLURM cluster on this machine, for the tests and benchmarks: Debian's slurm-wlm 22.05.

``SlurmCluster(root).start()`` starts, under ``root``: a MariaDB server, ``slurmdbd`` (job accounting:
submitit reads job states with ``sacct``, which needs it), ``slurmctld`` and ``slurmd``, on free local
ports, with munge's authentication (the system's ``munged``, started when none runs). ``stop()`` stops
what it started. ``.ci/run`` installs the packages (``apt-get install slurm-wlm slurmdbd munge
mariadb-server``); without them ``available()`` is False.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("mariadbd", "slurmdbd", "slurmctld", "slurmd", "munged")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
PARTITION = "debug"


def available() -> bool:
    """Whether this machine has the programs, and root (slurmd runs jobs as their user)."""
    return os.geteuid() == 0 and all(shutil.which(name) for name in (*DAEMONS, "mariadb-install-db", "sbatch"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, what: str, log: Path | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"timed out waiting for {what}\n{tail}")


class SlurmCluster:
    """The daemons of one cluster, their files under ``root``; ``env`` is what a client needs (SLURM_CONF)."""

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.pids: dict[str, Path] = {}
        self.mariadb: subprocess.Popen | None = None
        self.started_munge = False

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM command (``sinfo``, ``scontrol ...``) against this cluster."""
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> SlurmCluster:
        started = time.monotonic()
        for part in ("db", "state", "spool", "log", "run"):
            (self.root / part).mkdir(parents=True, exist_ok=True)
        self._munge()
        db_port, dbd_port = _free_port(), _free_port()
        self._mariadb(db_port)
        self._write_conf(db_port, dbd_port)
        self._daemon("slurmdbd", ["slurmdbd"], self.root / "log" / "slurmdbd.log")
        _wait(lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
              "slurmdbd", self.root / "log" / "slurmdbd.log")
        self.run("sacctmgr", "-i", "add", "cluster", "hreg")
        self._daemon("slurmctld", ["slurmctld"], self.root / "log" / "slurmctld.log")
        self._daemon("slurmd", ["slurmd"], self.root / "log" / "slurmd.log")
        _wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%t", check=False).stdout, "an idle node",
              self.root / "log" / "slurmctld.log")
        self.startup_s = time.monotonic() - started
        return self

    def _munge(self) -> None:
        if MUNGE_SOCKET.exists() and subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True)
        self.started_munge = True

    def _mariadb(self, port: int) -> None:
        db = self.root / "db"
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={db}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
        pid = self.root / "run" / "mariadb.pid"
        self.mariadb = subprocess.Popen(["mariadbd", "--no-defaults", "--user=root", f"--datadir={db}", f"--port={port}",
                          "--bind-address=127.0.0.1", f"--socket={self.root / 'run' / 'mysql.sock'}",
                          "--skip-grant-tables", f"--pid-file={pid}", f"--log-error={self.root / 'log' / 'mariadb.log'}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.pids["mariadbd"] = pid
        _wait(pid.exists, "MariaDB", self.root / "log" / "mariadb.log")

    def _daemon(self, name: str, command: list[str], log: Path) -> None:
        subprocess.run(command, env=self.env, check=True, capture_output=True)
        self.pids[name] = self.root / "run" / f"{name}.pid"
        _wait(self.pids[name].exists, name, log)

    def _write_conf(self, db_port: int, dbd_port: int) -> None:
        r = self.root
        (r / "slurmdbd.conf").write_text(f"""AuthType=auth/munge
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
""")
        (r / "slurmdbd.conf").chmod(0o600)
        self.conf.write_text(f"""ClusterName=hreg
SlurmctldHost={self.host}
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName={self.host} CPUs={self.cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def release_requeued(self) -> None:
        """Start requeued jobs now: SLURM holds a requeued job back for two minutes (its begin time)."""
        pending = self.run("squeue", "-h", "-t", "PD", "-o", "%i").stdout.split()
        for job in pending:
            self.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)

    def stop(self) -> None:
        """Cancel what still runs and stop every daemon this cluster started (the last ones first)."""
        self.run("scancel", "--full", "--user=root", check=False)
        for name in ("slurmd", "slurmctld", "slurmdbd"):
            pid_file = self.pids.get(name)
            if pid_file is None or not pid_file.exists():
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                _wait(lambda: not Path(f"/proc/{pid}").exists(), f"{name} to stop", timeout=30)
            except (ValueError, ProcessLookupError, RuntimeError):
                continue
        if self.mariadb is not None:
            self.mariadb.terminate()
            self.mariadb.wait(timeout=30)
        if self.started_munge:
            subprocess.run(["pkill", "-x", "munged"], check=False)
