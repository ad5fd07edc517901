"""Any OpenAI-compatible chat-completions endpoint: hosted models, or a local `vllm serve`.

Requests run on a bounded thread pool; 429, 5xx, timeouts and dropped
connections are retried with exponential backoff (honouring Retry-After);
other 4xx answers are the user's to fix and stop the run with one line.
The API key is read from an environment variable and never recorded. A LoRA adapter folder as
the model is loaded by a `vllm serve --enable-lora` endpoint at run time (POST /load_lora_adapter)
and asked for by name.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx

from safeswap.errors import SafeswapError
from safeswap.evaluation.backends.base import (AdapterModel, BackendOptions, Conversation, DecodingSettings,
                                               Generation, adapter_model)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class EndpointError(Exception):
    """A failed attempt that may succeed when retried."""

    def __init__(self, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def request_body(model: str, messages: Conversation, settings: DecodingSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "seed": settings.seed,
    }
    if not settings.greedy:
        body["top_p"] = settings.top_p
    return body


def parse_completion(payload: Any) -> Generation:
    try:
        choice = payload["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError(f"answer is not a chat completion: {str(payload)[:120]}") from None
    usage = payload.get("usage") or {}
    return Generation(text=text.strip(), n_tokens=usage.get("completion_tokens"), finish_reason=choice.get("finish_reason"))


class OpenAIChatClient:
    """A thread-safe client for POST {base_url}/chat/completions."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if concurrency < 1:
            raise SafeswapError(f"--concurrency must be at least 1, got {concurrency}")
        if not base_url.startswith(("http://", "https://")):
            raise SafeswapError(f"base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # A local vLLM server needs no key; a hosted API will answer 401, reported below.
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._lock = threading.Lock()
        self.retries = 0  # attempts that failed and were retried (for logs and tests)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.backoff_max, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date; fall back to exponential backoff
        # Jitter keeps many rate-limited workers from retrying in lockstep.
        return min(self.backoff_max, self.backoff_base * (2**attempt)) * random.uniform(0.5, 1.0)

    def _attempt(self, body: dict[str, Any]) -> Generation:
        try:
            response = self._http.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise EndpointError(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise EndpointError(f"connection failed ({type(exc).__name__}: {exc})") from None
        if response.status_code in RETRY_STATUSES:
            raise EndpointError(f"HTTP {response.status_code}", response.headers.get("retry-after"))
        if response.status_code >= 400:
            detail = " ".join(response.text.split())[:200]
            raise SafeswapError(f"{self.url} answered HTTP {response.status_code}: {detail}")
        try:
            payload = response.json()
        except ValueError:
            raise EndpointError("answer is not JSON") from None
        return parse_completion(payload)

    def complete(self, messages: Conversation, settings: DecodingSettings) -> Generation:
        """One chat completion, retried on transient failures."""
        body = request_body(self.model, messages, settings)
        last = None
        for attempt in range(self.max_attempts):
            try:
                return self._attempt(body)
            except EndpointError as exc:
                last = exc
                if attempt + 1 < self.max_attempts:
                    with self._lock:
                        self.retries += 1
                    time.sleep(self._backoff(attempt, exc.retry_after))
        raise SafeswapError(f"{self.url} still failing after {self.max_attempts} attempts: {last}")

    def complete_many(
        self, conversations: Sequence[Conversation], settings: DecodingSettings
    ) -> Iterator[tuple[int, Generation]]:
        """(index, Generation) in completion order, at most `concurrency` requests in flight."""
        if not conversations:
            return
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(self.complete, c, settings): i for i, c in enumerate(conversations)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            # On error or interruption drop the queued requests instead of sending them.
            pool.shutdown(wait=True, cancel_futures=True)

    def load_lora_adapter(self, name: str, path: str) -> None:
        """Ask a `vllm serve --enable-lora` endpoint (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) to load an adapter
        folder under `name` (POST {base_url}/load_lora_adapter); a name it already holds is kept (names carry the
        adapter's content hash, so the same name is the same adapter)."""
        url = self.base_url + "/load_lora_adapter"
        try:
            response = self._http.post(url, json={"lora_name": name, "lora_path": path})
        except httpx.HTTPError as exc:
            raise SafeswapError(f"{url}: cannot load the LoRA adapter {path} ({type(exc).__name__}: {exc})") from None
        detail = " ".join(response.text.split())[:200]
        if response.status_code >= 400 and "already" not in detail.lower():
            raise SafeswapError(f"{url} answered HTTP {response.status_code} to loading the LoRA adapter {path}: "
                                f"{detail} (is the server started with --enable-lora and "
                                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)")

    def close(self) -> None:
        self._http.close()


def served_adapter_name(adapter: AdapterModel) -> str:
    """The name an adapter is loaded under: its folder's name and its weights' sha256, so that another adapter
    written to the same folder later is never answered by the one the server already holds."""
    from safeswap.files import sha256_file
    from safeswap.read.adapter import ADAPTER_WEIGHTS

    return f"{Path(adapter.folder).name}-{sha256_file(Path(adapter.folder) / ADAPTER_WEIGHTS)[:12]}"


class OpenAIBackend:
    """Generation through an OpenAI-compatible endpoint; the server applies the chat template."""

    name = "openai"

    def __init__(self, client: OpenAIChatClient, settings: DecodingSettings = DecodingSettings()):
        self.client = client
        self.settings = settings

    @classmethod
    def from_options(cls, model: str, settings: DecodingSettings, options: BackendOptions) -> "OpenAIBackend":
        # A LoRA adapter folder is loaded by the served base at run time and asked for by its name.
        adapter = adapter_model(model, options)
        name = served_adapter_name(adapter) if adapter else model
        client = OpenAIChatClient(options.base_url or DEFAULT_BASE_URL, name, api_key_env=options.api_key_env,
                                  concurrency=options.concurrency, timeout=options.request_timeout)
        if adapter:
            client.load_lora_adapter(name, adapter.folder)
        return cls(client, settings)

    @classmethod
    def decoding_identity(cls, settings: DecodingSettings, options: BackendOptions) -> dict[str, Any]:
        # The model name is already in the fingerprint ("endpoint:<model>").
        return {"backend": cls.name, **settings.as_dict()}

    def decoding(self) -> dict[str, Any]:
        return {"backend": self.name, **self.settings.as_dict()}

    def generate(
        self, conversations: Sequence[Conversation], *, add_generation_prompt: bool = True
    ) -> Iterator[tuple[int, Generation]]:
        # The server decides about the generation prompt; chat endpoints always add it.
        yield from self.client.complete_many(conversations, self.settings)

    def close(self) -> None:
        self.client.close()
