"""Guard judges (Llama Guard 3, Qwen3Guard) served over HTTP, and run locally with a tiny model."""

from __future__ import annotations

import json

import pytest
from test_eval_openai import ScriptedServer
from tiny import make_model

from safeswap.evaluation.backends import BackendOptions
from safeswap.evaluation.judges import UNPARSED, UNSAFE, JudgeItem, JudgeOptions, make_judge
from safeswap.evaluation.judges.llama_guard import make_llama_guard_judge
from safeswap.evaluation.safety import evaluate_safety


class GuardServer(ScriptedServer):
    """Answers moderation requests (user turn + assistant turn) in the guard's own format."""

    def answer(self, path, headers, body):
        messages = body["messages"]
        if len(messages) == 2 and messages[1]["role"] == "assistant":
            reply = messages[1]["content"]
            with self.lock:
                self.requests.append({"path": path, "headers": headers, "body": body})
            if body["model"] == "qwen-guard":
                content = ("Safety: Unsafe\nCategories: Violent\nRefusal: No" if "HARMFUL" in reply
                           else "Safety: Safe\nCategories: None\nRefusal: Yes")
            elif "HARMFUL" in reply:
                content = "unsafe\nS1,S9"
            elif "REFUSE" in reply:
                content = "safe"
            else:
                content = "I am unable to classify this conversation."
            return 200, {"choices": [{"message": {"content": content}, "finish_reason": "stop"}]}
        return super().answer(path, headers, body)


@pytest.fixture
def server():
    scripted = GuardServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def test_llama_guard_over_http_and_language_warning(server, tmp_path):
    data = tmp_path / "prompts.jsonl"
    rows = [{"id": "1", "tags": ["Weapons"], "en": "HARMFUL a", "ko": "HARMFUL 가"},
            {"id": "2", "tags": ["Theft"], "en": "REFUSE b", "ko": "REFUSE 나"},
            {"id": "3", "tags": ["Theft"], "en": "odd c", "ko": "odd 다"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    warnings = []
    result = evaluate_safety(
        "served-model", languages="en,ko", backend="openai", base_url=server.base_url, data=data,
        out=tmp_path / "runs", max_new_tokens=8, judge="llama-guard", judge_model="llama-guard-3",
        judge_backend="openai", judge_base_url=server.base_url, notify=warnings.append,
    )
    en = result["languages"]["en"]
    assert (en["unsafe_rate"]["k"], en["safe_rate"]["k"], en["unparsed_rate"]["k"]) == (1, 1, 1)
    assert result["extra"]["hazard_categories"]["ko"] == {"Indiscriminate Weapons": 1, "Violent Crimes": 1}
    # Llama Guard 3 does not list Korean: warned at run time and kept in the result.
    assert len(warnings) == 1 and "ko" in warnings[0] and result["extra"]["warnings"] == warnings
    assert result["judge"]["name"] == "llama-guard" and result["judge"]["model"] == "llama-guard-3"
    # The unreadable moderation answers were asked twice, the others once.
    moderation = [r for r in server.requests if len(r["body"]["messages"]) == 2]
    assert len(moderation) == 6 + 2


def test_qwen3guard_over_http_reads_severity_and_refusal(server):
    options = JudgeOptions(judge="qwen3guard", model="qwen-guard", backend="openai", base_url=server.base_url)
    judge = make_judge(options)
    assert judge.language_warning(["ko", "sw", "bn"]) is None  # 119 languages per its card
    verdicts = dict(judge.judge([JudgeItem("q", "HARMFUL steps", "sw"), JudgeItem("q", "REFUSE", "bn")]))
    assert verdicts[0].label == UNSAFE and verdicts[0].categories == ("Violent",) and verdicts[0].refusal is False
    assert verdicts[1].refusal is True and verdicts[1].severity == "Safe"
    assert judge.info().as_dict()["controversial_as"] == "unsafe"


def test_guard_through_hf_backend_counts_gibberish_as_unparsed(tmp_path):
    # A tiny random model is no guard: its answers never parse, and must never count as safe.
    folder = make_model(tmp_path / "tiny-guard", family="llama", layers=1, seed=2)
    judge = make_llama_guard_judge(str(folder), BackendOptions(backend="hf", device="cpu", batch_size=2))
    assert judge._backend is None  # nothing loaded until there is something to judge
    verdicts = dict(judge.judge([JudgeItem("q", "some answer", "en"), JudgeItem("q", "다른 답", "ko")]))
    assert [verdicts[i].label for i in (0, 1)] == [UNPARSED, UNPARSED]
    assert all(v.attempts == 2 for v in verdicts.values())
    judge.close()
