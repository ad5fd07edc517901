"""The openai backend and the llm judge against a real HTTP server on 127.0.0.1.

The server speaks the chat-completions format and is scripted per request
text: some prompts first get 429/500 answers or a slow answer, some judge
requests get text that names no label.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import DecodingSettings
from safeswap.evaluation.backends.openai_compat import OpenAIChatClient
from safeswap.evaluation.judges import INVALID, SAFE, UNPARSED, UNSAFE, JudgeItem
from safeswap.evaluation.judges.llm import PROMPT_FILE, RETRY_REMINDER, LLMJudge

# Prompt markers -> HTTP statuses answered before the request succeeds.
FAILURES = {"FLAKY": [429, 500], "ALWAYS500": [500] * 99, "BADREQUEST": [400] * 99}
SLOW_FIRST = "SLOW"


def judge_answer(reply: str, attempt: int) -> str:
    """What the scripted judge says about a reply, by the keyword the reply holds."""
    if "HARMFUL" in reply:
        return "unsafe"
    if "REFUSE" in reply:
        return "**Safe** - the assistant declines."
    if "GIBBERISH" in reply:
        return "Label: invalid"
    if "SECONDTRY" in reply:
        return "hmm, hard to tell" if attempt == 1 else "UNSAFE"
    return "I would rather discuss something else."  # names no label, ever


class ScriptedServer:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self.adapters: dict[str, str] = {}  # served LoRA adapters: name -> path
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload = server.answer(self.path, dict(self.headers), body)
                    time.sleep(server.delay)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, path: str, headers: dict, body: dict) -> tuple[int, dict]:
        if not path.startswith("/v1/"):
            return 404, {"detail": "Not Found"}
        if path.endswith("/load_lora_adapter"):  # vLLM's runtime LoRA loading; a second load of a name is a 400
            with self.lock:
                self.requests.append({"path": path, "headers": headers, "body": body})
                known = body["lora_name"] in self.adapters
                self.adapters[body["lora_name"]] = body["lora_path"]
            if known:
                return 400, {"message": f"The lora adapter '{body['lora_name']}' has already been loaded."}
            return 200, {}
        messages = body["messages"]
        first = messages[0]["content"]
        with self.lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            count = self.seen.get(first, 0) + 1
            self.seen[first] = count
        for marker, statuses in FAILURES.items():
            if marker in first and count <= len(statuses):
                return statuses[count - 1], {"error": {"message": f"scripted {statuses[count - 1]}"}}
        if SLOW_FIRST in first and count == 1:
            time.sleep(1.0)
        if first.startswith("Translate the following"):
            text = re.search(r"\[TEXT\]\n(.*)\n\[END TEXT\]", first, re.S).group(1)
            content = "TRANSLATED: " + text
        elif "[REPLY]" in first:
            reply = re.search(r"\[REPLY\]\n(.*)\n\[END REPLY\]", first, re.S).group(1)
            attempt = 2 if len(messages) > 1 else 1
            content = judge_answer(reply, attempt)
        else:
            content = f"Echo{' from ' + body['model'] if body['model'] in self.adapters else ''}: " + first
        return 200, {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": len(content.split())},
        }

    def count(self, marker: str) -> int:
        return sum(1 for r in self.requests if marker in r["body"]["messages"][0]["content"])


@pytest.fixture
def server():
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


def client(server, **kwargs) -> OpenAIChatClient:
    options = dict(concurrency=4, timeout=5.0, max_attempts=3, backoff_base=0.01)
    options.update(kwargs)
    return OpenAIChatClient(server.base_url, "served-model", **options)


SETTINGS = DecodingSettings(max_new_tokens=32)


def test_retries_429_and_500_then_succeeds(server):
    c = client(server)
    generation = c.complete([{"role": "user", "content": "FLAKY hello"}], SETTINGS)
    assert generation.text == "Echo: FLAKY hello"
    assert server.count("FLAKY") == 3  # 429, 500, then 200
    assert c.retries == 2
    body = server.requests[-1]["body"]
    assert body["model"] == "served-model"
    assert body["max_tokens"] == 32 and body["temperature"] == 0.0


def test_timeout_is_retried(server):
    c = client(server, timeout=0.3)
    generation = c.complete([{"role": "user", "content": "SLOW please"}], SETTINGS)
    assert generation.text == "Echo: SLOW please"
    assert server.count("SLOW") == 2


def test_gives_up_after_max_attempts(server):
    with pytest.raises(SafeswapError, match="still failing after 3 attempts: HTTP 500"):
        client(server).complete([{"role": "user", "content": "ALWAYS500"}], SETTINGS)
    assert server.count("ALWAYS500") == 3


def test_client_errors_are_not_retried(server):
    with pytest.raises(SafeswapError, match="HTTP 400"):
        client(server).complete([{"role": "user", "content": "BADREQUEST"}], SETTINGS)
    assert server.count("BADREQUEST") == 1


def test_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("SAFESWAP_TEST_KEY", "sk-test-123")
    client(server, api_key_env="SAFESWAP_TEST_KEY").complete([{"role": "user", "content": "a"}], SETTINGS)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("SAFESWAP_TEST_KEY")
    client(server, api_key_env="SAFESWAP_TEST_KEY").complete([{"role": "user", "content": "b"}], SETTINGS)
    assert "Authorization" not in server.requests[-1]["headers"]


def test_concurrency_is_bounded_and_every_answer_returns_once(server):
    server.delay = 0.05
    conversations = [[{"role": "user", "content": f"prompt {i}"}] for i in range(10)]
    answers = dict(client(server, concurrency=2).complete_many(conversations, SETTINGS))
    assert sorted(answers) == list(range(10))
    assert all(answers[i].text == f"Echo: prompt {i}" for i in range(10))
    assert server.max_in_flight == 2


def test_bad_base_url_is_a_user_error():
    with pytest.raises(SafeswapError, match="http"):
        OpenAIChatClient("localhost:8000", "m")


def items(*replies: str, language: str = "en") -> list[JudgeItem]:
    return [JudgeItem(prompt=f"request {i}", response=r, language=language, prompt_en=f"request {i} (en)")
            for i, r in enumerate(replies)]


def test_llm_judge_labels_retries_once_and_counts_unparsed(server):
    judge = LLMJudge(client(server))
    replies = ("Step 1: HARMFUL", "I REFUSE.", "GIBBERISH qq", "SECONDTRY text", "something odd")
    verdicts = dict(judge.judge(items(*replies)))
    assert [verdicts[i].label for i in range(5)] == [UNSAFE, SAFE, INVALID, UNSAFE, UNPARSED]
    assert [verdicts[i].attempts for i in range(5)] == [1, 1, 1, 2, 2]
    assert verdicts[4].raw == "I would rather discuss something else."
    # Exactly one retry for each unreadable answer, with the reminder appended.
    assert server.count("something odd") == 2 and server.count("SECONDTRY") == 2
    retry = [r["body"]["messages"] for r in server.requests if len(r["body"]["messages"]) == 3]
    assert len(retry) == 2 and all(m[-1]["content"] == RETRY_REMINDER for m in retry)


def test_llm_judge_translates_non_english_answers_first(server):
    judge = LLMJudge(client(server), translate=True)
    verdicts = dict(judge.judge(items("HARMFUL 방법", "REFUSE 거절", language="ko") + items("HARMFUL en")))
    assert verdicts[0].label == UNSAFE and verdicts[1].label == SAFE and verdicts[2].label == UNSAFE
    assert verdicts[0].translation == "TRANSLATED: HARMFUL 방법"
    assert verdicts[2].translation is None  # English is never translated
    translations = [r for r in server.requests if r["body"]["messages"][0]["content"].startswith("Translate")]
    assert len(translations) == 2
    judged = [r["body"]["messages"][0]["content"] for r in server.requests if "[REPLY]" in r["body"]["messages"][0]["content"]]
    assert any("TRANSLATED: HARMFUL 방법" in text and "request 0 (en)" in text for text in judged)


def test_llm_judge_records_the_prompt_hash(server):
    info = LLMJudge(client(server), translate=True).info().as_dict()
    assert info["name"] == "llm" and info["model"] == "served-model"
    assert info["prompt_sha256"] == hashlib.sha256(PROMPT_FILE.read_bytes()).hexdigest()
    assert info["translate"] is True and len(info["translate_prompt_sha256"]) == 64


def test_evaluate_safety_through_openai_backend_and_llm_judge(server, tmp_path):
    from safeswap.evaluation.safety import evaluate_safety
    from safeswap.evaluation.safety_output import result_paths

    data = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "a", "tags": ["Weapons"], "en": "HARMFUL one", "ko": "HARMFUL 하나"},
        {"id": "b", "tags": "['Theft']", "en": "REFUSE two", "ko": "REFUSE 둘"},
        {"id": "c", "tags": ["Weapons", "Theft"], "en": "GIBBERISH three", "ko": "odd 셋"},
    ]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "runs"
    options = dict(
        languages="en,ko", backend="openai", base_url=server.base_url, judge="llm", judge_model="judge-model",
        judge_base_url=server.base_url, data=data, out=out, max_new_tokens=16, concurrency=3,
    )
    result = evaluate_safety("served-model", **options)
    assert result["model"]["fingerprint"] == "endpoint:served-model"
    assert result["metric"] == "unsafe_rate"
    en, ko = result["languages"]["en"], result["languages"]["ko"]
    assert en["n"] == 3 and (en["unsafe_rate"]["k"], en["safe_rate"]["k"], en["invalid_rate"]["k"]) == (1, 1, 1)
    assert ko["unparsed_rate"]["k"] == 1 and ko["unsafe_rate"]["k"] == 1
    assert result["overall"]["unsafe_rate"]["k"] == 2 and result["overall"]["n"] == 6
    assert result["categories"]["Weapons"]["n"] == 4  # ids a and c, two languages
    assert result["judge"]["prompt_sha256"] == hashlib.sha256(PROMPT_FILE.read_bytes()).hexdigest()
    json_path, csv_path = result_paths(out, "served-model", "llm")
    assert json_path.is_file() and csv_path.is_file()

    # A rerun finds every generation and label cached: the server hears nothing.
    before = len(server.requests)
    again = evaluate_safety("served-model", **options)
    assert len(server.requests) == before
    assert again["languages"] == result["languages"]


def weights(folder, value):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"base_model.model.q_proj.lora_A.weight": torch.full((8, 4), value)},
              str(folder / "adapter_model.safetensors"))


def test_an_adapter_folder_is_loaded_by_the_served_base_then_asked_for_by_name(server, tmp_path):
    """`vllm serve BASE --enable-lora`: the adapter is loaded at run time (POST /v1/load_lora_adapter), then every
    request names it; a second run with the same adapter finds it loaded (400 'already loaded' is fine), and
    another adapter in the same folder gets another name."""
    from safeswap.evaluation.backends import BackendOptions, make_backend
    from safeswap.evaluation.safety import evaluate_safety

    adapter = tmp_path / "judge-abc"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8,
                                                              "base_model_name_or_path": "org/base"}))
    weights(adapter, 1.0)
    options = BackendOptions(backend="openai", base_url=server.base_url, concurrency=2)
    backend = make_backend(str(adapter), SETTINGS, options)
    loads = [r for r in server.requests if r["path"] == "/v1/load_lora_adapter"]
    name = loads[0]["body"]["lora_name"]
    assert loads[0]["body"] == {"lora_name": name, "lora_path": str(adapter.resolve())}
    assert name.startswith("judge-abc-") and backend.client.model == name
    answers = dict(backend.generate([[{"role": "user", "content": "hello"}]]))
    assert answers[0].text == f"Echo from {name}: hello"
    assert [r["body"]["model"] for r in server.requests if r["path"] == "/v1/chat/completions"] == [name]
    make_backend(str(adapter), SETTINGS, options)  # already loaded: no error
    weights(adapter, 2.0)
    assert make_backend(str(adapter), SETTINGS, options).client.model not in (name, "org/base")

    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"id": "a", "tags": ["Weapons"], "en": "REFUSE one"}) + "\n", encoding="utf-8")
    result = evaluate_safety(adapter, languages="en", backend="openai", base_url=server.base_url, data=data,
                             out=tmp_path / "runs", max_new_tokens=8)
    assert result["model"]["fingerprint"].startswith("sha256:")  # the adapter's content on the served base


def test_a_served_base_that_cannot_load_adapters_is_one_line(server, tmp_path):
    from safeswap.evaluation.backends import BackendOptions, make_backend

    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    weights(adapter, 1.0)
    options = BackendOptions(backend="openai", base_url=server.base_url)
    with pytest.raises(SafeswapError, match="names no base_model_name_or_path"):
        make_backend(str(adapter), SETTINGS, options)
    options = BackendOptions(backend="openai", base_url=server.base_url.replace("/v1", "/v2"), adapter_base="org/base")
    with pytest.raises(SafeswapError, match=r"load_lora_adapter answered HTTP 404 .*--enable-lora"):
        make_backend(str(adapter), SETTINGS, options)
