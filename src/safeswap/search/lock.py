"""One search per folder at a time: an exclusive flock on DIR/search.lock, held for the whole search.

The operating system releases a flock when its holder exits, however it exits (SIGKILL
included), so a killed search never leaves a stale lock: the next run takes it at once.
The file itself stays (a search folder is recognised by it, see write.destination) and
holds the holder's pid and start time, which a refused second search names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from safeswap.errors import SafeswapError
from safeswap.write.destination import SEARCH_LOCK_FILENAME


def _holder(fd: int) -> str:
    """Who holds the lock, from the file's text (the holder writes it right after locking)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8")
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


@contextlib.contextmanager
def search_lock(folder: str | Path) -> Iterator[Path]:
    """Hold DIR/search.lock for the block; another holder is refused in one line naming its process."""
    path = Path(folder) / SEARCH_LOCK_FILENAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SafeswapError(f"search folder {Path(folder).resolve()} is in use by another search "
                                f"({_holder(fd)}); wait for it to finish or choose another --out") from None
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays, marking the folder as a search folder
