"""A real one-node SLURM cluster on this machine, for tests.

``slurm_cluster(partitions)`` installs Debian's ``slurmctld slurmd
slurm-client munge`` when missing (as root, ``apt-get``), starts a private
munged, slurmctld and slurmd, yields a :class:`Cluster` and stops the
daemons again, also when the body raises. Everything lives under
``STATE_DIR``: its own munge key and socket, ``etc/slurm.conf`` (clients
find it through ``SLURM_CONF``, in :attr:`Cluster.env`), free TCP ports, and
``daemons.json`` with the PID of each daemon started. A run that was killed
before it could stop its daemons leaves that file behind; the next start
stops those PIDs first (only processes whose command line names this
``STATE_DIR``). A lock file keeps two test runs on one machine from using
the directory at once.

``/etc/slurm/slurm.conf`` is made a symlink to the config while the cluster
runs (and removed after; an existing file that is not such a link is left
alone and the start fails): inside a job, snakemake-executor-plugin-slurm-
jobstep 0.6.1 drops every ``SLURM_*`` variable, ``SLURM_CONF`` included,
before its ``srun``, which then only finds the default path.

Node: the real CPUs and memory (``slurmd -C``) and ``FAKE_GPUS`` fake GPUs
(``gres.conf``: device files such as /dev/null), so ``--gpus=1`` jobs are
accepted.
Accounting is off (``sacct`` cannot report jobs; use ``squeue``), and
``MinJobAge=600`` keeps finished jobs visible to ``squeue`` and ``scontrol``
for 10 minutes. Recipe and pitfalls: ../shared/docs/ENVIRONMENT.md.

Every failure raises :class:`SlurmError` with the daemon logs: tests call
this to fail, never to skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/tmp/cbir-slurm-test")
LOCK_FILE = Path("/tmp/cbir-slurm-test.lock")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
# Binaries used here, each with the Debian package that ships it.
BINARIES = {
    "munged": "munge",
    "munge": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "sinfo": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
}
SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"]
)
# Two, so that two GPU jobs run at once, as on a node with two GPUs.
FAKE_GPUS = 2
START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 900


class SlurmError(RuntimeError):
    """SLURM could not be installed, started or stopped."""


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def ensure_installed() -> None:
    """Install the Debian packages when a binary is missing (root only)."""
    missing = sorted({BINARIES[b] for b in BINARIES if which(b) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmError(
            f"SLURM packages {', '.join(missing)} are missing and this is not root: "
            f"run `apt-get install -y {' '.join(PACKAGES)}` as root, then the tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt/dpkg process rather than fail at once.
    wait = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *wait, "update", "-qq"],
        ["apt-get", *wait, "install", "-y", "-qq", *PACKAGES],
    ):
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SlurmError(
                f"`{' '.join(command)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
    still_missing = [b for b in BINARIES if which(b) is None]
    if still_missing:
        raise SlurmError(
            f"after apt-get install {' '.join(PACKAGES)}, still missing: {still_missing}"
        )


@dataclass
class Cluster:
    """A running cluster: ``env`` points SLURM clients (and Snakemake) at it."""

    root: Path
    node: str
    partitions: list[str]
    env: dict[str, str]

    def command(self, *args: str, timeout: float = 30) -> str:
        result = subprocess.run(
            [which(args[0]) or args[0], *args[1:]],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise SlurmError(
                f"`{' '.join(args)}` failed: {result.stderr.strip()}\n{self.logs()}"
            )
        return result.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Partition, TresPerJob, ...)."""
        fields = {}
        for token in self.command(
            "scontrol", "show", "job", "--oneliner", job_id
        ).split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def logs(self) -> str:
        return daemon_logs(self.root)


def daemon_logs(root: Path, lines: int = 30) -> str:
    parts = []
    for log in sorted(root.glob("log/*.log")) + sorted(root.glob("munge-lib/*.log")):
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        parts.append(f"--- {log} (last {lines} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> tuple[str, str]:
    """(node name, ``NodeName=... CPUs=... RealMemory=...``) from ``slurmd -C``."""
    result = subprocess.run(
        [which("slurmd"), "-C"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    line = next(
        (l for l in result.stdout.splitlines() if l.startswith("NodeName=")), None
    )
    if result.returncode != 0 or line is None:
        raise SlurmError(
            f"`slurmd -C` did not describe this node:\n{result.stdout}\n{result.stderr}"
        )
    return line.split()[0].removeprefix("NodeName="), line


def write_config(root: Path, partitions: list[str]) -> str:
    node, line = node_line()
    nodes = " ".join(t for t in line.split() if not t.startswith("UpTime="))
    conf = [
        "ClusterName=cbirtest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root}/munge-run/munge.socket",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        # No cgroups, no systemd: plain process tracking.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        # Finished jobs stay visible to squeue/scontrol for 10 minutes.
        "MinJobAge=600",
        "ReturnToService=2",
        "KillWait=5",
        "GresTypes=gpu",
        f"{nodes} NodeAddr=127.0.0.1 Gres=gpu:{FAKE_GPUS} State=UNKNOWN",
    ]
    for i, name in enumerate(partitions):
        default = "YES" if i == 0 else "NO"
        conf.append(
            f"PartitionName={name} Nodes={node} Default={default} MaxTime=INFINITE State=UP"
        )
    (root / "etc").mkdir(parents=True)
    (root / "etc/slurm.conf").write_text("\n".join(conf) + "\n")
    # Fake GPUs: SLURM wants one device file per GPU and allocates them by
    # index (CUDA_VISIBLE_DEVICES); no GPU is behind them, so torch in the
    # job finds no CUDA and uses the CPU.
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random"][:FAKE_GPUS]
    (root / "etc/gres.conf").write_text(
        "".join(f"NodeName={node} Name=gpu File={d}\n" for d in devices)
    )
    return node


def is_our_link(root: Path) -> bool:
    return SYSTEM_CONF.is_symlink() and Path(os.readlink(SYSTEM_CONF)).is_relative_to(
        root
    )


def link_system_conf(root: Path) -> None:
    """Point the default config path at ours (see the module docstring)."""
    if is_our_link(root):
        SYSTEM_CONF.unlink()
    elif SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        raise SlurmError(
            f"{SYSTEM_CONF} exists and is not this test's: this machine has its own SLURM "
            "configuration, which the test cluster will not replace"
        )
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.symlink_to(root / "etc/slurm.conf")


def read_pids(root: Path) -> dict[str, int]:
    try:
        return json.loads((root / "daemons.json").read_text())
    except (OSError, ValueError):
        return {}


def write_pids(root: Path, pids: dict[str, int]) -> None:
    (root / "daemons.json").write_text(json.dumps(pids))


def is_ours(pid: int, root: Path) -> bool:
    """Whether ``pid`` runs and its command line names ``root`` (our daemon)."""
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
        )
    except OSError:
        return False
    return str(root) in cmdline


def stop_pids(root: Path, pids: dict[str, int], timeout: float = 15) -> None:
    """SIGTERM each PID of ours, then SIGKILL whatever is left after ``timeout``."""
    alive = [pid for pid in pids.values() if is_ours(pid, root)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if is_ours(pid, root) and not is_zombie(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def start_munge(root: Path, env: dict[str, str]) -> subprocess.Popen:
    """munged, as user ``munge``, with its own key and socket under ``root``.

    munged checks permissions: the socket's folder must be searchable by
    all, the key readable by munge only."""
    run_dir, lib_dir = root / "munge-run", root / "munge-lib"
    for folder, mode in ((run_dir, 0o755), (lib_dir, 0o700)):
        folder.mkdir()
        shutil.chown(folder, "munge", "munge")
        folder.chmod(mode)
    key = lib_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    return subprocess.Popen(
        [
            which("munged"),
            "--foreground",
            f"--socket={run_dir}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={run_dir}/munged.pid",
            f"--log-file={lib_dir}/munged.log",
            f"--seed-file={lib_dir}/munged.seed",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user="munge",
        group="munge",
        extra_groups=[],
        start_new_session=True,
    )


def wait_for(what: str, check, root: Path, procs: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise SlurmError(
                    f"{name} exited with status {proc.returncode} while waiting for {what}\n{daemon_logs(root)}"
                )
        if check():
            return
        time.sleep(0.2)
    raise SlurmError(
        f"timed out after {START_TIMEOUT_S} s waiting for {what}\n{daemon_logs(root)}"
    )


def succeeds(command: list[str], env: dict[str, str]) -> bool:
    try:
        return (
            subprocess.run(
                command,
                env=env,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=10,
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def node_states(env: dict[str, str]) -> set[str]:
    """States of the node, one per partition it is in (``idle`` when ready)."""
    result = subprocess.run(
        [which("sinfo"), "-h", "-N", "-o", "%T"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    return set(result.stdout.split())


@contextlib.contextmanager
def locked():
    """Hold the machine-wide lock of ``STATE_DIR`` (waits for another run)."""
    with open(LOCK_FILE, "a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SlurmError(
                        f"{LOCK_FILE} held by another test run for {LOCK_TIMEOUT_S} s"
                    ) from None
                if deadline - time.monotonic() > LOCK_TIMEOUT_S - 1:
                    print(
                        f"waiting for another SLURM test run to release {LOCK_FILE}",
                        file=sys.stderr,
                    )
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def slurm_cluster(partitions: list[str], root: Path = STATE_DIR):
    """Start a one-node cluster with these partitions (the first is the
    default), yield a :class:`Cluster`, stop it on exit."""
    if os.geteuid() != 0:
        raise SlurmError(
            "the SLURM test cluster runs its daemons as root; run the tests as root"
        )
    with locked():
        ensure_installed()
        # Daemons of an earlier run that was killed before stopping them.
        stop_pids(root, read_pids(root))
        shutil.rmtree(root, ignore_errors=True)
        for sub in ("log", "state", "spool"):
            (root / sub).mkdir(parents=True)
        root.chmod(0o755)
        env = {**os.environ, "SLURM_CONF": str(root / "etc/slurm.conf")}
        env.pop("SLURM_JOB_ID", None)
        procs: dict[str, subprocess.Popen] = {}
        try:
            procs["munged"] = start_munge(root, env)
            write_pids(root, {n: p.pid for n, p in procs.items()})
            socket_path = root / "munge-run/munge.socket"
            wait_for("munged's socket", socket_path.exists, root, procs)
            node = write_config(root, partitions)
            link_system_conf(root)
            conf = str(root / "etc/slurm.conf")
            for name, args in (
                ("slurmctld", ["-D", "-c", "-f", conf]),
                ("slurmd", ["-D", "-f", conf]),
            ):
                with open(root / f"log/{name}.out", "w") as out:
                    procs[name] = subprocess.Popen(
                        [which(name), *args],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                write_pids(root, {n: p.pid for n, p in procs.items()})
                if name == "slurmctld":
                    wait_for(
                        "slurmctld to answer",
                        lambda: succeeds([which("scontrol"), "ping"], env),
                        root,
                        procs,
                    )
            wait_for(
                f"node {node} to be idle",
                lambda: node_states(env) == {"idle"},
                root,
                procs,
            )
            yield Cluster(root=root, node=node, partitions=list(partitions), env=env)
        finally:
            if "slurmctld" in procs and procs["slurmctld"].poll() is None:
                # Jobs left by a failed test: cancel them so their steps end.
                subprocess.run(
                    [which("scancel"), "--user", "root"],
                    env=env,
                    capture_output=True,
                    stdin=subprocess.DEVNULL,
                    timeout=30,
                )
            # slurmd first, munged last: the daemons authenticate through it.
            pids = {n: p.pid for n, p in procs.items()}
            for name in ("slurmd", "slurmctld", "munged"):
                if name in pids:
                    stop_pids(root, {name: pids[name]})
            for proc in procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            leftover = [
                n
                for n, pid in pids.items()
                if is_ours(pid, root) and not is_zombie(pid)
            ]
            (root / "daemons.json").unlink(missing_ok=True)
            if is_our_link(root):
                SYSTEM_CONF.unlink()
            if leftover:
                raise SlurmError(f"could not stop {leftover}")
