"""The search folder as an output like any other: where it may be, what a resume accepts, made only after the checks.

Where: the destination rules of `merge --out` (it never is, contains or lies inside an input
model's folder); an existing folder is resumed only when it is a search folder (inputs.json or
search.lock), an empty folder is used as new, anything else is refused.

What a resume accepts: DIR/inputs.json records everything the cached scores and the Optuna
study depend on (settings_record); a resume whose record differs is refused in one line naming
the first setting that changed. Not recorded, so free to change: the trial budget, the
generation stage and the final evaluation (their results are cached per settings), the judge
and backend flags, keep_weights, and how candidates run (--workers, Ray).

When: `search_folder` is entered once every check has passed. It makes the folder, takes the
lock (search/lock.py), checks the record again under the lock and writes it. A search that
stops on an error before any candidate was scored removes the folder it made (parents
included), or empties the empty folder it was given; a search folder that existed before
(a resume) is not removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from safeswap.errors import SafeswapError
from safeswap.files import atomic_write
from safeswap.search.lock import search_lock
from safeswap.search.space import SearchSpace
from safeswap.write.destination import SEARCH_LOCK_FILENAME, check_clear_of_inputs

INPUTS_FILE = "inputs.json"


def check_search_destination(out: str | Path, inputs: Iterable[tuple[str, Path]]) -> None:
    """Refuse an --out that touches an input, is a file, or is a folder of something else than a search."""
    check_clear_of_inputs(out, inputs, "search folder")
    out = Path(out).expanduser()
    if not out.exists():
        return
    if not out.is_dir():
        raise SafeswapError(f"search folder {out.resolve()} exists and is a file; choose a folder name")
    if any(out.iterdir()) and not ((out / INPUTS_FILE).is_file() or (out / SEARCH_LOCK_FILENAME).exists()):
        raise SafeswapError(f"{out.resolve()} exists and is not a safeswap search folder (no {INPUTS_FILE}); "
                            "choose another --out")


def settings_record(base: str, safety: str, language: str, space: SearchSpace, *, multijail, benign,
                    prompts_sha256: list[str], ability, device: str | None, storage: str | None,
                    input_sha256: dict) -> dict[str, Any]:
    """What a resume must match: the inputs (paths and every file's sha256), the prompts, the probe, the split,
    the searched space (methods and ranges, sampler, parallel batches, seed, constraints), the probe's device
    and the study's storage. As JSON would read it back (tuples as lists)."""
    record = {
        "base": str(base), "safety": str(safety), "language": str(language),
        "multijail": str(multijail) if multijail else None, "benign": str(benign) if benign else None,
        "ability": list(ability) if ability else None, "languages": list(space.languages),
        "probe": [space.probe_harmful, space.probe_benign, space.batch_size, space.max_length],
        "split": [space.search_fraction, space.split_seed], "seed": space.seed,
        "prompts_sha256": prompts_sha256,
        "methods": {m.method: {p.name: {k: v for k, v in asdict(p).items() if k != "name"} for p in m.params}
                    for m in space.methods},
        "sampler": space.sampler, "parallel": space.parallel, "constraints": asdict(space.constraints),
        "device": device or "cpu", "storage": storage,
        "input_sha256": input_sha256,
    }
    return json.loads(json.dumps(record))


def _first_difference(before: Any, now: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], Any, Any] | None:
    if isinstance(before, dict) and isinstance(now, dict):
        for key in [*now, *(k for k in before if k not in now)]:
            found = _first_difference(before.get(key, _MISSING), now.get(key, _MISSING), (*path, key))
            if found:
                return found
        return None
    return None if before == now else (path, before, now)


_MISSING = "(none)"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 48 else text[:45] + "..."


def check_resume(out: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a search folder whose recorded settings differ from this run's, naming the first change."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SafeswapError(f"{path} is unreadable; this search folder cannot be resumed: use another --out") from None
    found = _first_difference(before, record)
    if found is None:
        return
    where, old, new = found
    if where[0] == "input_sha256" and len(where) >= 3:
        raise SafeswapError(f"{out} holds a search of other input files: the {where[1]} model's {where[2]} has "
                            "changed since it began; use another --out")
    raise SafeswapError(f"{out} holds a search made with another {'.'.join(where)} ({_short(old)}, now "
                        f"{_short(new)}); a resume changes only the trial budget, the generation and final stages "
                        "and how candidates run: use another --out")


def _missing_top(folder: Path) -> Path | None:
    """The outermost folder of folder's path that does not exist yet (what making it creates), else None."""
    top = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        top = candidate
    return top


@contextlib.contextmanager
def search_folder(out: str | Path, record: dict[str, Any]) -> Iterator[Path]:
    """Make (or reopen) the search folder, hold its lock and write its record; see the module docstring."""
    out = Path(out).expanduser()
    made = _missing_top(out.absolute())
    was_empty = made is None and out.is_dir() and not any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)
    # A search refused by the lock removes nothing: the folder is the holder's.
    with search_lock(out) as lock:
        foreign = [e.name for e in out.iterdir() if e.name != SEARCH_LOCK_FILENAME]
        if foreign and not (out / INPUTS_FILE).is_file():  # something else was put there since the checks
            lock.unlink()
            raise SafeswapError(f"{out.resolve()} exists and is not a safeswap search folder (it holds "
                                f"{sorted(foreign)[0]!r}); choose another --out")
        try:
            check_resume(out, record)  # again under the lock: another search may have begun meanwhile
            if not (out / INPUTS_FILE).is_file():
                atomic_write(out / INPUTS_FILE, json.dumps(record, indent=1))
            yield out
        except BaseException:
            if not (out / "candidates").exists():  # nothing scored yet: leave nothing behind
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
                elif was_empty:
                    for entry in out.iterdir():
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            raise
