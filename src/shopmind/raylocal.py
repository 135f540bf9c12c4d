"""A throwaway Ray cluster on this machine, started with the `ray` CLI: a head plus extra "nodes" joined with
`ray start --address`, for tests and benchmarks (a real multi-node cluster, as far as Ray can tell).

Each node runs `ray start --block` in its own process group; `stop()` ends exactly those process groups (and the
worker processes Ray started under them), never other Ray clusters on the machine, which `ray stop` would.
Its nodes run with `RAY_AUTH_MODE=disabled` said explicitly (Ray's default for `ray start` without a token):
a token some earlier local `ray.init()` left in ~/.ray/auth_token would otherwise switch token authentication on
for the nodes but not for drivers, which read the mode once per process. It listens on 127.0.0.1: tests only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .raycluster import RayUnavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_cli() -> str:
    """The `ray` script next to this Python (a virtualenv's bin), else the one on PATH."""
    import sys

    here = Path(sys.executable).with_name("ray")
    found = str(here) if here.is_file() else shutil.which("ray")
    if not found:
        raise RayUnavailable("the `ray` command is missing: pip install 'shopmind[scale]'")
    return found


class LocalRayCluster:
    """`with LocalRayCluster(nodes=2) as c: connect(c.address)`: a head and nodes-1 more nodes, cpus each."""

    def __init__(self, nodes: int = 2, cpus: int = 1, object_store_memory: int = 200_000_000,
                 env: dict[str, str] | None = None) -> None:
        self.nodes, self.cpus, self.object_store_memory = nodes, cpus, object_store_memory
        # Ray's memory monitor counts every program's memory on the machine, and on a shared test machine would
        # kill this cluster's workers for another program's use: off here (the kernel's OOM killer remains).
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0",
                    "RAY_AUTH_MODE": "disabled", **(env or {})}
        # Short: Ray's socket paths live under it and a Unix socket path has at most 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="smray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []

    def _common(self) -> list[str]:
        return ["--num-cpus", str(self.cpus), "--object-store-memory", str(self.object_store_memory),
                "--disable-usage-stats", "--block", "--dashboard-agent-listen-port", str(_free_port()),
                "--min-worker-port", "0", "--max-worker-port", "0"]

    def _spawn(self, args: list[str], name: str) -> None:
        log = open(self.temp_dir / f"{name}.log", "wb")
        self._procs.append(subprocess.Popen([ray_cli(), "start", *args, *self._common()], stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env, start_new_session=True))
        log.close()

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[0].poll() is not None:
                raise RayUnavailable(f"the Ray head exited: {(self.temp_dir / 'head.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RayUnavailable(f"the Ray head did not open port {self.port} within {timeout:.0f} s")

    def start(self, timeout: float = 60) -> "LocalRayCluster":
        self._spawn(["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--include-dashboard=false",
                     "--ray-client-server-port", str(_free_port()), "--temp-dir", str(self.temp_dir)], "head")
        self._wait_port(timeout)
        for n in range(1, self.nodes):
            # Its own temp folder: each node's log monitor then forwards only its own workers' output.
            self._spawn(["--address", self.address, "--node-ip-address", "127.0.0.1",
                         "--temp-dir", str(self.temp_dir / f"n{n}")], f"node{n}")
        return self

    def wait_for_nodes(self, timeout: float = 60) -> int:
        """Block until every node is alive in the connected driver's view (call after `connect`)."""
        from .raycluster import alive_nodes

        deadline = time.monotonic() + timeout
        while (alive := alive_nodes()) < self.nodes:
            if time.monotonic() > deadline:
                raise RayUnavailable(f"{alive} of {self.nodes} Ray nodes alive after {timeout:.0f} s")
            dead = [p.args for p in self._procs if p.poll() is not None]
            if dead:
                raise RayUnavailable(f"a Ray node exited: {dead[0]}")
            time.sleep(0.25)
        return alive

    def members(self) -> dict[int, int]:
        """Every live process of this cluster (pid -> start time): the `ray start` processes and all their
        descendants, read from /proc (Linux)."""
        children: dict[int, list[int]] = {}
        started: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited while we looked
                continue
            pid = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: the parent's pid
            started[pid] = int(fields[19])  # start time: tells a reused pid apart
        out: dict[int, int] = {}
        todo = [p.pid for p in self._procs if p.pid in started]
        while todo:
            pid = todo.pop()
            if pid not in out:
                out[pid] = started[pid]
                todo += children.get(pid, [])
        return out

    def stop(self, grace: float = 2) -> None:
        """SIGTERM to each node's process group (`ray start` stops what it started), then SIGKILL whatever of
        this cluster's processes is left after `grace` seconds."""
        members = self.members()
        for p in reversed(self._procs):  # worker nodes first, the head last
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._left(members):
            time.sleep(0.2)
        for pid in self._left(members):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - killed above
                pass
        self._procs = []
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _left(members: dict[int, int]) -> list[int]:
        """Those of `members` still running (same pid, same start time, not a zombie)."""
        left = []
        for pid, start in members.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[19]) == start and fields[0] != "Z":
                left.append(pid)
        return left

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
