"""The seeded, disjoint search / held-out split of MultiJail ids and benign prompts (no tuning on the test set).

Candidates are scored on the search split only; the held-out split is kept for the final
evaluation of the recommended candidate and the references. The split depends only on
the prompt ids, the fraction and the seed, never on the order of the file.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from safeswap.errors import SafeswapError
from safeswap.evaluation.multijail import Prompt, PromptSet

BENIGN_ASSET = Path(__file__).resolve().parents[1] / "demo" / "assets" / "benign_eval.json"


@dataclass(frozen=True)
class Split:
    """Prompt ids of the search and held-out halves of one prompt set."""

    search: tuple[str, ...]
    held_out: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"search": list(self.search), "held_out": list(self.held_out)}


def split_ids(ids: Sequence[str], search_fraction: float, seed: int) -> Split:
    """Disjoint halves of ids: each id goes to the search split with the given share, by a seeded shuffle of the
    sorted ids (so the file's order does not matter); both halves keep at least one id when there are two."""
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise SafeswapError("prompt ids are not unique; a split needs unique ids")
    if not 0.0 < search_fraction < 1.0:
        raise SafeswapError(f"search_fraction must lie strictly between 0 and 1, got {search_fraction}")
    shuffled = list(unique)
    random.Random(seed).shuffle(shuffled)
    n = round(len(shuffled) * search_fraction)
    if len(shuffled) >= 2:
        n = min(max(n, 1), len(shuffled) - 1)
    return Split(tuple(sorted(shuffled[:n])), tuple(sorted(shuffled[n:])))


def pick(prompts: Sequence[Prompt], ids: Sequence[str], limit: int | None, seed: int) -> list[Prompt]:
    """The prompts of one half (file order), at most limit of them, chosen by the seed."""
    wanted = set(ids)
    chosen = [p for p in prompts if p.id in wanted]
    if limit is not None and limit < len(chosen):
        keep = set(random.Random(seed).sample([p.id for p in chosen], limit))
        chosen = [p for p in chosen if p.id in keep]
    return chosen


def load_benign_asset(path: str | Path = BENIGN_ASSET) -> PromptSet:
    """The benign prompts shipped with safeswap (demo/assets/benign_eval.json) as a PromptSet, ids benign-N."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    languages = tuple(k for k, v in data.items() if isinstance(v, list))
    n = min(len(data[code]) for code in languages)
    prompts = [Prompt(id=f"benign-{i + 1}", texts={code: data[code][i]["prompt"] for code in languages})
               for i in range(n)]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PromptSet(prompts, source=str(path), sha256=digest, languages=languages)


def split_record(harmful: PromptSet, benign: PromptSet, search_fraction: float, seed: int) -> dict:
    """Both splits with what they were made from, as written to DIR/splits.json."""
    return {
        "seed": seed,
        "search_fraction": search_fraction,
        "multijail": {"source": harmful.source, "sha256": harmful.sha256,
                      **split_ids([p.id for p in harmful.prompts], search_fraction, seed).to_dict()},
        "benign": {"source": benign.source, "sha256": benign.sha256,
                   **split_ids([p.id for p in benign.prompts], search_fraction, seed + 1).to_dict()},
    }


def write_half(prompt_set: PromptSet, ids: Sequence[str], path: str | Path, languages: Sequence[str] | None = None,
               limit: int | None = None) -> Path:
    """One half of a split as a JSONL prompt file that every evaluation reads (`--data`, `--benign`): the prompts
    of `ids` in file order, at most `limit` (the first ones), with their tags and the texts of `languages`."""
    from safeswap.files import atomic_write

    wanted = set(ids)
    chosen = [p for p in prompt_set.prompts if p.id in wanted][:limit]
    codes = list(languages or prompt_set.languages)
    lines = [json.dumps({"id": p.id, "source": p.source, "tags": list(p.tags), **{c: p.texts.get(c, "") for c in codes}},
                        ensure_ascii=False) for p in chosen]
    return atomic_write(Path(path), "\n".join(lines) + "\n")
