"""Who evaluates a batch of candidates: this process, a small process pool on this machine, or Ray tasks.

Every executor returns the records in the candidates' order, so the study sees the same
results whatever ran them. Ray is imported only when asked for. A Ray address is checked
before ray.init is called (which waits for an absent cluster without end): it must accept a
connection within the timeout and answer as a Ray cluster (GCS), else one line names it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from safeswap.errors import SafeswapError
from safeswap.search.candidates import Candidate
from safeswap.search.runner import SearchContext, evaluate


class InProcess:
    """One candidate after another in this process."""

    def map(self, context: SearchContext, candidates: list[Candidate]) -> list[dict[str, Any]]:
        return [evaluate(context, c) for c in candidates]

    def close(self) -> None:
        pass


class ProcessPool:
    """Up to `workers` candidates at once in spawned processes on this machine."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, context: SearchContext, candidates: list[Candidate]) -> list[dict[str, Any]]:
        return list(self.pool.map(evaluate, [context] * len(candidates), candidates))

    def close(self) -> None:
        self.pool.shutdown()


def require_ray():
    """Ray, or one line saying which extra brings it."""
    try:
        import ray
    except ImportError:
        raise SafeswapError("--ray-address needs Ray: pip install 'safeswap[ray]'") from None
    return ray


RAY_TIMEOUT = 30.0  # seconds a Ray address has to answer (--ray-timeout)
# Asked in a child process, which is killed at the deadline: Ray's own client waits without end.
_GCS_PROBE = ("import sys; from ray._raylet import GcsClient; "
              "GcsClient(address=sys.argv[1]).internal_kv_get(b'safeswap', namespace=None, timeout=5)")


def _endpoint(address: str) -> tuple[str, int, bool]:
    """(host, port, is a Ray Client address) of a --ray-address; 'auto' reads the running cluster's address as
    ray.init would."""
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            found = None
        if not found:
            raise SafeswapError("--ray-address auto: no running Ray cluster found on this machine "
                                "(start one with `ray start --head`, or give its address)")
        address = found
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SafeswapError(f"--ray-address {address}: give host:port, ray://host:port, auto or local")
    return host.strip("[]"), int(port), client


def check_ray_address(address: str, timeout: float = RAY_TIMEOUT) -> None:
    """Refuse a Ray address that does not answer within `timeout` seconds, in one line naming it."""
    require_ray()
    if address == "local":
        return
    if timeout <= 0:
        raise SafeswapError(f"--ray-timeout must be above 0 seconds, got {timeout:g}")
    host, port, client = _endpoint(address)
    deadline = time.monotonic() + timeout
    while True:  # a head node still starting refuses connections for a moment: try again until the deadline
        try:
            socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())).close()
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                reason = e.strerror or type(e).__name__
                raise SafeswapError(f"Ray at {address} did not answer within {timeout:g} s ({reason}); start the "
                                    "cluster or fix --ray-address (--ray-timeout sets the wait)") from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    if client:
        return  # a Ray Client server: ray.init connects with a bounded retry of its own
    wait = max(5.0, deadline - time.monotonic())
    try:
        probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, f"{host}:{port}"], capture_output=True,
                               timeout=wait)
    except subprocess.TimeoutExpired:
        probe = None
    if probe is None or probe.returncode != 0:
        raise SafeswapError(f"{address} accepts connections but did not answer as a Ray cluster within "
                            f"{timeout:g} s; check --ray-address (--ray-timeout sets the wait)")


class RayTasks:
    """Each candidate a Ray task asking for cpus and gpus; address 'local' starts a local Ray with 2 CPUs."""

    def __init__(self, address: str, cpus_per_candidate: float = 1, gpus_per_candidate: float = 0):
        ray = require_ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address == "local":
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(num_cpus=cpus_per_candidate, num_gpus=gpus_per_candidate)(evaluate)

    def map(self, context: SearchContext, candidates: list[Candidate]) -> list[dict[str, Any]]:
        shared = self.ray.put(context)
        return self.ray.get([self.task.remote(shared, c) for c in candidates])

    def close(self) -> None:
        if self.started:
            self.started = False  # closed once, however often asked
            self.ray.shutdown()


def make_executor(ray_address: str | None = None, workers: int = 1, gpus_per_candidate: float = 0,
                  cpus_per_candidate: float = 1, ray_timeout: float = RAY_TIMEOUT):
    if ray_address:
        check_ray_address(ray_address, ray_timeout)
        return RayTasks(ray_address, cpus_per_candidate, gpus_per_candidate)
    if workers > 1:
        return ProcessPool(workers)
    return InProcess()
