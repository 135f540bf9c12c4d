"""Ray for the heavy batch work (`mine`, `train`, `benchmark` with `--ray`): the one place that imports Ray and
joins a cluster. Ray is the optional `scale` extra; nothing else in shopmind imports it at start-up.

`connect(address)` joins `auto` (the cluster `ray start` left on this machine), `HOST:PORT` (a head's GCS
port), `ray://HOST:PORT` (Ray Client) or `local` (an in-process cluster). The job's runtime environment ships
this very `shopmind` package to the workers (so every node runs the driver's code, whatever is installed
there) and passes on the few environment variables that matter to encoding (offline hub, OpenMP waiting).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from .errors import ShopmindError

INSTALL_HINT = "pip install 'shopmind[scale]'"
_PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "OMP_WAIT_POLICY", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class RayUnavailable(ShopmindError, RuntimeError):
    """Ray is not installed, or no cluster answers at the address given."""


def require_ray() -> Any:
    """The `ray` module, or one clear error line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _worker_setup() -> None:
    """Runs in every worker process of the job. Ray Train's placement-group cleaner asks the State API, which
    only a cluster with Ray's dashboard has (the `scale` extra does not install it), whether the controller is
    alive, and warns once a second when it cannot; the cleanup itself still happens, so that warning goes."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def runtime_env() -> dict[str, Any]:
    """This package's source for every worker, and the environment variables encoding depends on."""
    env = {k: os.environ[k] for k in _PASSED_ENV if os.environ.get(k)}
    return {"py_modules": [str(Path(__file__).resolve().parent)], "env_vars": env,
            "worker_process_setup_hook": _worker_setup}


def _check_reachable(address: str) -> None:
    match = _HOST_PORT.match(address)
    if not match:
        raise RayUnavailable(f"bad Ray address {address!r}: use auto, local, HOST:PORT or ray://HOST:PORT")
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as e:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({e.strerror or e}); start a head with "
                             "`ray start --head --port PORT`, or use --ray local") from None


def connect(address: str | None = "auto", num_cpus: int | None = None) -> Any:
    """Join a Ray cluster (once per process; later calls reuse the connection). Returns the `ray` module.
    num_cpus: the CPUs of a `local` cluster (default: all)."""
    address = (address or "auto").strip()
    if address == "local" and "ray" not in sys.modules and "RAY_AUTH_MODE" not in os.environ:
        # Ray protects a new local cluster with a token and saves one to ~/.ray/auth_token, which every later
        # `ray start` on the machine then enforces. A token for this command's cluster only leaves no trace; it
        # must be in the environment before Ray is imported (Ray reads the mode once per process).
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    ray = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a CLI run
    # Ray's own INFO lines (every report of every Train worker, ...) off on the driver and the workers.
    kwargs: dict[str, Any] = {"runtime_env": runtime_env(), "logging_level": logging.WARNING,
                              "logging_config": ray.LoggingConfig(log_level="WARNING"),
                              "include_dashboard": False if address == "local" else None}
    if address == "local":
        ray.init(num_cpus=num_cpus, **kwargs)
    else:
        if address != "auto" and not address.startswith("ray://"):
            _check_reachable(address)
        try:
            ray.init(address=address, **{k: v for k, v in kwargs.items() if v is not None})
        except ConnectionError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RayUnavailable(f"cannot join the Ray cluster at {address!r}: {first} (start one with `ray start "
                                 "--head`, or use --ray local; a cluster with token authentication also needs "
                                 "RAY_AUTH_MODE=token and its token here)") from None
    _quiet_data()
    return ray


def _quiet_data() -> None:
    """Ray Data's own progress bars and per-dataset INFO lines off (with the warning that bars are off): the
    commands show their own progress."""
    try:
        from ray.data import DataContext
    except ImportError:  # pragma: no cover - ray without the data extra
        return
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def cluster_cpus() -> int:
    """CPUs of the connected cluster (all nodes)."""
    ray = require_ray()
    return int(ray.cluster_resources().get("CPU", 0))


def alive_nodes() -> int:
    ray = require_ray()
    return sum(1 for n in ray.nodes() if n.get("Alive"))
