"""Guard-model judges (Llama Guard 3, Qwen3Guard-Gen) run through any generation backend.

A guard model is a chat model whose chat template turns (user prompt,
assistant response) into a moderation request; it answers in a fixed format
that a parser turns into a Verdict. An answer that does not parse is asked
again once, then counted as unparsed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

from safeswap.evaluation.backends import Backend, BackendOptions, DecodingSettings, decoding_identity, make_backend
from safeswap.evaluation.judges.base import UNPARSED, JudgeInfo, JudgeItem, Verdict

Parser = Callable[[str], "Verdict | None"]


def moderation_conversation(item: JudgeItem) -> list[dict[str, str]]:
    return [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.response}]


class GuardJudge:
    metric = "unsafe_rate"

    def __init__(
        self,
        name: str,
        make_backend: Callable[[], Backend],
        decoding: dict[str, Any],
        parse: Parser,
        model: str,
        supported_languages: Sequence[str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        self.name = name
        # The guard model is loaded on first use only: when every label is
        # already cached, a rerun never loads it.
        self._make_backend = make_backend
        self._backend: Backend | None = None
        self.decoding = decoding
        self.parse = parse
        self.model = model
        self.supported_languages = tuple(supported_languages) if supported_languages else None
        self.details = dict(details or {})

    @classmethod
    def running(
        cls,
        name: str,
        model: str,
        options: BackendOptions,
        max_new_tokens: int,
        parse: Parser,
        supported_languages: Sequence[str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> "GuardJudge":
        """A guard judge that runs `model` greedily through the backend `options` choose."""
        settings = DecodingSettings(max_new_tokens=max_new_tokens)
        return cls(name, lambda: make_backend(model, settings, options), decoding_identity(settings, options),
                   parse, model, supported_languages, details)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def info(self) -> JudgeInfo:
        return JudgeInfo(self.name, model=self.model, details={"decoding": self.decoding, **self.details})

    def language_warning(self, languages: Sequence[str]) -> str | None:
        if self.supported_languages is None:
            return None
        unsupported = [code for code in languages if code not in self.supported_languages]
        if not unsupported:
            return None
        return (
            f"{self.model} does not list {', '.join(unsupported)} among its supported languages "
            f"({', '.join(self.supported_languages)}); its labels there are less reliable"
        )

    def judge(self, items: Sequence[JudgeItem]) -> Iterator[tuple[int, Verdict]]:
        conversations = [moderation_conversation(item) for item in items]
        # Guard templates write the assistant header themselves.
        unparsed = []
        for index, generation in self.backend.generate(conversations, add_generation_prompt=False):
            verdict = self.parse(generation.text)
            if verdict is None:
                unparsed.append(index)
            else:
                yield index, verdict
        retry = [conversations[i] for i in unparsed]
        if not retry:
            return
        for position, generation in self.backend.generate(retry, add_generation_prompt=False):
            verdict = self.parse(generation.text)
            index = unparsed[position]
            if verdict is None:
                yield index, Verdict(UNPARSED, raw=generation.text, attempts=2)
            else:
                yield index, replace(verdict, attempts=2)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
