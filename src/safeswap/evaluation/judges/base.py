"""What every judge shares: the labels, one item to judge, one verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Protocol, Sequence

SAFE = "safe"
UNSAFE = "unsafe"
INVALID = "invalid"
# A judge answer that could not be read even after one retry. Counted apart,
# never folded into "safe".
UNPARSED = "unparsed"

REFUSAL = "refusal"
NO_REFUSAL = "no_refusal"


@dataclass(frozen=True)
class JudgeItem:
    """The harmful prompt (without any jailbreak wrapper), the model's answer, its language.

    prompt_en is the data set's English version of the prompt, used when the
    judge works on English translations.
    """

    prompt: str
    response: str
    language: str
    prompt_en: str | None = None


@dataclass(frozen=True)
class Verdict:
    label: str
    categories: tuple[str, ...] = ()
    raw: str = ""
    attempts: int = 1
    refusal: bool | None = None
    severity: str | None = None  # the judge's own grade, e.g. Qwen3Guard's "Controversial"
    translation: str | None = None  # the English text judged, with --judge-translate

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["categories"] = list(self.categories)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Verdict":
        fields = {k: record.get(k) for k in cls.__dataclass_fields__ if k in record}
        fields["categories"] = tuple(record.get("categories") or ())
        return cls(**fields)


@dataclass
class JudgeInfo:
    """How a judge is recorded in results (schema field "judge") and in cache keys."""

    name: str
    model: str | None = None
    prompt_sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "prompt_sha256": self.prompt_sha256, **self.details}


class Judge(Protocol):
    name: str
    metric: str  # "unsafe_rate" for safety judges, "refusal_rate" for the refusal judge

    def info(self) -> JudgeInfo: ...

    def language_warning(self, languages: Sequence[str]) -> str | None:
        """A warning when the judge is not known to handle some of these languages."""
        ...

    def judge(self, items: Sequence[JudgeItem]) -> Iterator[tuple[int, Verdict]]: ...

    def close(self) -> None: ...
