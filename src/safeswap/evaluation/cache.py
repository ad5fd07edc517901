"""Append-only JSONL caches for generations and judge labels.

A generation is keyed by (model fingerprint, language, prompt id, scenario,
decoding settings) plus the hash of the exact text sent, so a changed data
file or template never reuses a stale answer. A judge label is keyed by the
generation key plus the judge's identity (name, model, prompt hash, ...).

Each record is appended and flushed as soon as it exists, so an interrupted
run loses at most the batch in flight; the rerun reads what is stored and
produces only what is missing. A line cut short by a crash is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

GENERATIONS_FILE = "generations.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def generation_key(
    fingerprint: str,
    language: str,
    prompt_id: str,
    scenario: str,
    decoding: Mapping[str, Any],
    prompt_sha256: str,
    dataset: str = "multijail",
) -> str:
    return sha256_text(
        canonical_json(
            {
                "fingerprint": fingerprint,
                "dataset": dataset,
                "language": language,
                "prompt_id": prompt_id,
                "scenario": scenario,
                "decoding": dict(decoding),
                "prompt_sha256": prompt_sha256,
            }
        )
    )


def judgement_key(generation: str, judge_identity: Mapping[str, Any]) -> str:
    return sha256_text(canonical_json({"generation": generation, "judge": dict(judge_identity)}))


def cache_folder(out: str | os.PathLike, fingerprint: str) -> Path:
    """One folder per model so that runs of different models never share a file."""
    return Path(out) / "cache" / hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:16]


class JsonlCache:
    """Records with a "key" field, one JSON object per line; the last record of a key wins."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # A write cut short by a crash or kill; the record is simply redone.
                    self.skipped_lines += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    self._records[record["key"]] = record
                else:
                    self.skipped_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def values(self) -> Iterator[dict[str, Any]]:
        return iter(self._records.values())

    def put(self, record: dict[str, Any]) -> None:
        if not isinstance(record.get("key"), str):
            raise ValueError("a cache record needs a string 'key'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with open(self.path, "a+b") as f:
            # If the previous writer died mid-line, start on a fresh line so
            # this record is not glued to the broken one.
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line)
            f.flush()
        self._records[record["key"]] = record


def stored_answers(out: str | os.PathLike, fingerprint: str, languages: list[str] | tuple[str, ...],
                   ids: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """A model's stored answers per language, harmful and benign together: the prompts of `ids` (dataset ->
    prompt ids) only, one answer per (dataset, language, prompt), in a fixed order."""
    generations = JsonlCache(cache_folder(out, fingerprint) / GENERATIONS_FILE)
    latest: dict[tuple, str] = {}
    for record in generations.values():
        if record.get("language") in languages and record.get("prompt_id") in ids.get(record.get("dataset"), ()):
            latest[(record["dataset"], record["language"], record["prompt_id"])] = record["response"]
    return {lang: [text for (_, code, _), text in sorted(latest.items()) if code == lang] for lang in languages}
