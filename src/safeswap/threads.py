"""Two worker threads, each running torch kernels on one core.

The engine and the analysis split their work over their own worker threads;
torch's intra-op threads on top of those oversubscribe the cores, and OpenMP's
idle threads spin while they wait. Kernels run single-threaded inside the pools.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import torch

WORKERS = 2


@contextmanager
def worker_pool() -> Iterator[ThreadPoolExecutor]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            yield pool
    finally:
        torch.set_num_threads(previous)
