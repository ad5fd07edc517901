"""Reading the files one stage hands the next (plans, statistics): one error line per problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from safeswap.errors import SafeswapError


def read_document(path: str | os.PathLike, default_name: str, what: str, parse: Callable[[str], Any],
                  parse_errors: tuple[type[BaseException], ...], expected_format: str) -> tuple[Path, dict]:
    """Parse `path` (or `path/default_name` for a folder) and check its "format" field.

    Returns the file's path and its top-level mapping; a missing file, unreadable or
    malformed text and a wrong format each raise SafeswapError naming the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafeswapError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, *parse_errors) as e:
        raise SafeswapError(f"{what} file {path} is malformed ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise SafeswapError(f"{what} file {path} is not a safeswap {what} (expected format: {expected_format})")
    return path, data
