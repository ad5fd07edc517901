"""Who evaluates a batch of candidates: this process, a small process pool on this machine, or Ray tasks.

Every executor returns the records in the candidates' order, so the study sees the same
results whatever ran them. Ray is imported only when asked for.
"""

from __future__ import annotations

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
            self.ray.shutdown()


def make_executor(ray_address: str | None = None, workers: int = 1, gpus_per_candidate: float = 0,
                  cpus_per_candidate: float = 1):
    if ray_address:
        return RayTasks(ray_address, cpus_per_candidate, gpus_per_candidate)
    if workers > 1:
        return ProcessPool(workers)
    return InProcess()
