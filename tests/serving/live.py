"""A real `shopmind serve` process for tests that need sockets, several workers or kills."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(served: dict, state: Path, port: int, workers: int = 1, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.Popen:
    """Serve the test artifact (production mode unless env says otherwise) and wait until /health answers."""
    env = {**os.environ, **served["env"], "SHOPMIND_SERVING_STATE_DIR": str(state), "OMP_WAIT_POLICY": "PASSIVE",
           **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(served["store"]), "serve",
                             str(served["artifact"]), "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"server did not start in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
