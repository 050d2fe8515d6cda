"""``openai``: any OpenAI-compatible chat endpoint as the judge (OpenAI, vLLM, serve-judge, ...).

One chat request per pair (two in both-orders mode), the prompt rendered from the task's template.
What can go wrong, and what happens:

- 429, 5xx, timeouts, connection errors: retried with exponential backoff and jitter, honouring
  the server's Retry-After; after ``max_attempts`` the label is INVALID with the last error as its
  reason and the run goes on. A fault is never recorded as A or B.
- an answer without a verdict on its final line: INVALID with the reason (paid, not retried).
- an answer cut off at ``max_tokens`` (``finish_reason == "length"``): INVALID with the reason,
  whatever it ends with (paid, not retried); the finish reason is kept with the label (ledger).
- 400 / 413 / 422 for one request (e.g. a pair too long for the model): INVALID with the reason.
- bad key (401/403), unknown model (404), unreachable endpoint: :class:`OracleError` from
  ``setup()`` before any budget is spent (and, should it happen mid-run, from the call).

The API key is read from the environment variable named by ``api_key_env`` at setup and handed
only to the SDK client: it is not in the config, identity, logs, reprs or exception messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Sequence

import httpx2
import openai as sdk
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from rlaif.oracle import parsing, templates
from rlaif.oracle.call_slots import CallSlots
from rlaif.oracle.base import Oracle, OracleConfig, OracleError, merge_both_orders
from rlaif.registry import ConfigError
from rlaif.types import Label, Pair, Spend

log = logging.getLogger(__name__)

CHAT_OVERHEAD_TOKENS = 32  # role markers and message framing, generously
POOL_SIZE = 8  # connections per httpx pool (see setup)
HTTP_BACKENDS = ("aiohttp", "httpx", "lean")


@dataclass
class OpenAIConfig(OracleConfig):
    base_url: str = field(default="https://api.openai.com/v1", metadata={
        "help": "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for vLLM or serve-judge"})
    model: str = field(default="gpt-4o-mini", metadata={"help": "model name as the server knows it"})
    api_key_env: Optional[str] = field(default="OPENAI_API_KEY", metadata={
        "help": "NAME of the environment variable holding the API key (the key itself never goes in a config)",
        "fingerprint": False})
    free: bool = field(default=False, metadata={
        "help": "a local server that costs nothing: no prices needed, no key needed"})
    price_input_per_mtok: Optional[float] = field(default=None, metadata={
        "help": "US$ per million input tokens", "fingerprint": False})
    price_output_per_mtok: Optional[float] = field(default=None, metadata={
        "help": "US$ per million output tokens", "fingerprint": False})
    template: Optional[str] = field(default=None, metadata={
        "help": "judge prompt: a name under prompts/ or a file path (default: the task's rubric)"})
    temperature: float = field(default=0.05, metadata={"help": "sampling temperature (the paper: 0.05)"})
    max_tokens: int = field(default=128, metadata={"help": "max answer tokens (bounds the cost of a call)"})
    mode: str = field(default="text", metadata={
        "help": "text: outcome from the final verdict line | logprobs: also P(A) from the answer token's top log-probs"})
    top_logprobs: int = field(default=5, metadata={"help": "alternatives requested per token in logprobs mode"})
    both_orders: bool = field(default=False, metadata={
        "help": "ask twice (shown and swapped): agreement gives the label, disagreement gives `on_disagreement`"})
    on_disagreement: str = field(default="tie", metadata={"help": "tie | invalid (both-orders mode)"})
    timeout_s: float = field(default=60.0, metadata={"help": "per-request timeout", "fingerprint": False})
    max_attempts: int = field(default=5, metadata={
        "help": "attempts per request before the label is invalid", "fingerprint": False})
    backoff_initial_s: float = field(default=1.0, metadata={
        "help": "first backoff wait (doubles per retry)", "fingerprint": False})
    backoff_max_s: float = field(default=60.0, metadata={"help": "longest backoff wait", "fingerprint": False})
    backoff_jitter_s: float = field(default=1.0, metadata={"help": "random extra wait, up to this", "fingerprint": False})
    max_retry_after_s: float = field(default=120.0, metadata={"help": "cap on a server's Retry-After"})
    requests_per_minute: Optional[float] = field(default=None, metadata={
        "help": "client-side request rate limit", "fingerprint": False})
    tokens_per_minute: Optional[float] = field(default=None, metadata={
        "help": "client-side token rate limit (counts the worst case of each request)", "fingerprint": False})
    batch_size: int = field(default=1, metadata={"help": "pairs per call (one chat request each)"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight at once", "fingerprint": False})
    http_backend: str = field(default="aiohttp", metadata={
        "help": "aiohttp: the SDK over its aiohttp transport (openai.DefaultAioHttpClient) | httpx: the SDK's "
                "default transport | lean: chat requests straight through aiohttp, errors still the SDK's "
                "(a third of the SDK's CPU per request: for fast local judges at high concurrency)"})

    def __post_init__(self) -> None:
        if self.mode not in ("text", "logprobs"):
            raise ConfigError(f"oracle.mode must be 'text' or 'logprobs', got {self.mode!r}")
        if self.on_disagreement not in ("tie", "invalid"):
            raise ConfigError(f"oracle.on_disagreement must be 'tie' or 'invalid', got {self.on_disagreement!r}")
        if self.max_attempts < 1:
            raise ConfigError("oracle.max_attempts must be at least 1")
        if self.http_backend not in HTTP_BACKENDS:
            raise ConfigError(f"oracle.http_backend must be one of {', '.join(HTTP_BACKENDS)}, "
                              f"got {self.http_backend!r}")


class RateLimiter:
    """An async token bucket: ``rate_per_minute`` units refill continuously, bursts up to one second's worth."""

    def __init__(self, rate_per_minute: float) -> None:
        if rate_per_minute <= 0:
            raise OracleError(f"rate limits must be positive, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # a request bigger than the bucket waits for a full one
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


def _retryable(e: BaseException) -> bool:
    if isinstance(e, (sdk.APITimeoutError, sdk.APIConnectionError)):
        return True
    if isinstance(e, sdk.APIStatusError):
        return e.status_code in (408, 409, 429) or e.status_code >= 500
    return False


def _refused(e: BaseException) -> bool:
    """Whether a connection error or timeout was in fact a refused connection (its cause chain says so)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, ConnectionRefusedError):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def retry_after_s(e: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or HTTP date; also retry-after-ms), if any."""
    if not isinstance(e, sdk.APIStatusError):
        return None
    h = e.response.headers
    if h.get("retry-after-ms"):
        try:
            return float(h["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    ra = h.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        when = email.utils.parsedate_to_datetime(ra)
        return max(0.0, when.timestamp() - time.time()) if when else None


class OpenAIOracle(Oracle):
    Config = OpenAIConfig
    kind = "openai"
    free = False
    caps_own_concurrency = True  # each HTTP attempt is made in one of `concurrency` call slots

    def __init__(self, cfg: OpenAIConfig, *, task: Any = None, **kw: Any) -> None:
        template = templates.choose(cfg.template, task)
        cfg = template.configure(cfg)  # an alpaca_eval annotator's model / max_tokens / temperature, where unset
        super().__init__(cfg, task=task, **kw)
        self.free = bool(cfg.free)
        self.template = template
        self._client: sdk.AsyncOpenAI | None = None
        self._clients: list[sdk.AsyncOpenAI] = []
        self._lean: Any = None
        self._next = itertools.count()
        self._secret: str | None = None
        self._slots: CallSlots | None = None
        self._rpm = RateLimiter(cfg.requests_per_minute) if cfg.requests_per_minute else None
        self._tpm = RateLimiter(cfg.tokens_per_minute) if cfg.tokens_per_minute else None
        self.base_url = cfg.base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"OpenAIOracle(base_url={self.base_url!r}, model={self.cfg.model!r})"

    def identity(self) -> dict:
        c = self.cfg
        return {"kind": self.kind, "base_url": self.base_url, "model": c.model, "template": self.template.name,
                "template_hash": self.template.hash, "temperature": c.temperature, "max_tokens": c.max_tokens,
                "mode": c.mode, "both_orders": c.both_orders,
                "on_disagreement": c.on_disagreement if c.both_orders else None,
                "swap_p": c.swap_p, "seed": c.seed}

    # -- secrets ---------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """Remove the key (and any long piece of it a server echoes back) from a message."""
        s = self._secret
        if s and len(s) >= 8:
            text = text.replace(s, "***")
            for n in (16, 12, 8):  # providers echo partial keys, e.g. "sk-abc...wxyz"
                for i in range(0, len(s) - n + 1):
                    if s[i:i + n] in text:
                        text = text.replace(s[i:i + n], "***")
        elif s:
            text = text.replace(s, "***")
        return text

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, sdk.APIStatusError):
            msg = f"HTTP {e.status_code}"
            body = e.body.get("message") if isinstance(e.body, dict) else None
            body = body or (e.body.get("error", {}).get("message") if isinstance(e.body, dict)
                            and isinstance(e.body.get("error"), dict) else None)
            if body:
                msg += f" ({str(body)[:200]})"
        elif isinstance(e, sdk.APITimeoutError) and not _refused(e):  # aiohttp reports a refusal as a timeout
            msg = f"timeout after {self.cfg.timeout_s:g}s"
        elif _refused(e):
            msg = "connection refused (nothing listens there)"
        elif isinstance(e, sdk.APIConnectionError):
            cause = e.__cause__ or e.__context__
            msg = f"connection error ({type(cause).__name__ if cause else 'no response'})"
        else:
            msg = f"{type(e).__name__}: {str(e)[:200]}"
        return self.scrub(msg)

    # -- lifecycle -------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Key, prices, endpoint and model checked before any budget is spent (one GET /models)."""
        c = self.cfg
        if not self.free and (c.price_input_per_mtok is None or c.price_output_per_mtok is None):
            raise OracleError(f"oracle {self.name!r} is a paid judge ({self.base_url}) with no price: set "
                              "oracle.price_input_per_mtok and oracle.price_output_per_mtok (US$ per million "
                              "tokens), or oracle.free=true for a local server")
        key = os.environ.get(c.api_key_env) if c.api_key_env else None
        if not key:
            if not self.free:
                raise OracleError(f"oracle {self.name!r}: the environment variable {c.api_key_env!r} holding the "
                                  "API key is not set (oracle.api_key_env names it)")
            key = "EMPTY"  # local servers accept anything
        self._secret = key if key != "EMPTY" else None
        await self.aclose()
        n = max(1, c.concurrency)
        if c.http_backend in ("aiohttp", "lean"):
            # aiohttp parses HTTP in C and keeps its pool cheap at any size: one client
            try:
                http = sdk.DefaultAioHttpClient(
                    limits=httpx2.Limits(max_connections=n, max_keepalive_connections=n), timeout=c.timeout_s)
            except RuntimeError as e:  # the SDK says so when aiohttp is missing
                raise OracleError(f"oracle {self.name!r}: http_backend=aiohttp needs the aiohttp package "
                                  f"({e}); install it or set oracle.http_backend=httpx") from None
            self._clients = [sdk.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0,
                                             timeout=c.timeout_s, http_client=http)]
        else:
            # httpx: several small connection pools rather than one big one, as httpcore scans all
            # its connections on every request (milliseconds of CPU at 64 in flight)
            self._clients = []
            for i in range(math.ceil(n / POOL_SIZE)):
                size = min(POOL_SIZE, n - i * POOL_SIZE)
                http = sdk.DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size), timeout=c.timeout_s)
                self._clients.append(sdk.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0,
                                                     timeout=c.timeout_s, http_client=http))
        self._client = self._clients[0]
        self._slots = CallSlots(n)
        try:
            if c.http_backend == "lean":
                from rlaif.oracle.lean_http import LeanChatClient

                self._lean = LeanChatClient(self._client, timeout_s=c.timeout_s, connections=n)
            await self._preflight()
        except BaseException:
            await self.aclose()
            raise

    async def _preflight(self) -> None:
        c = self.cfg
        assert self._client is not None
        try:
            listed = [m.id async for m in self._client.models.list()]
        except sdk.AuthenticationError as e:
            raise OracleError(f"oracle {self.name!r}: the server at {self.base_url} rejected the API key from "
                              f"${c.api_key_env}: {self._describe(e)}") from None
        except sdk.PermissionDeniedError as e:
            raise OracleError(f"oracle {self.name!r}: permission denied at {self.base_url}: {self._describe(e)}") from None
        except sdk.NotFoundError:
            listed = None  # the server has no model list: the first call will tell
        except (sdk.APIConnectionError, sdk.APIStatusError) as e:
            raise OracleError(f"oracle {self.name!r}: cannot reach the judge endpoint {self.base_url}: "
                              f"{self._describe(e)}") from None
        if listed is not None and c.model not in listed:
            raise OracleError(f"oracle {self.name!r}: unknown model {c.model!r} at {self.base_url}; the server "
                              f"offers: {', '.join(listed[:20]) or '(none)'}")

    async def aclose(self) -> None:
        if self._slots is not None:
            await self._slots.aclose()
            self._slots = None
        if self._lean is not None:
            await self._lean.close()
            self._lean = None
        for client in self._clients:
            await client.close()
        self._clients, self._client = [], None

    # -- cost ------------------------------------------------------------------------------------
    def _input_bound(self, pair: Pair) -> int:
        """Safe upper bound on input tokens: no tokenizer makes more tokens than UTF-8 bytes."""
        messages = self.template.messages(pair.prompt.text, pair.a.text, pair.b.text)
        return sum(len(m["content"].encode("utf-8")) + CHAT_OVERHEAD_TOKENS for m in messages)

    def _price(self, tokens_in: int, tokens_out: int) -> float:
        if self.free:
            return 0.0
        return (tokens_in * (self.cfg.price_input_per_mtok or 0.0)
                + tokens_out * (self.cfg.price_output_per_mtok or 0.0)) / 1e6

    def worst_case(self, pair: Pair) -> Spend:
        calls = 2 if self.cfg.both_orders else 1
        t_in, t_out = self._input_bound(pair), self.cfg.max_tokens
        return Spend(labels=1, dollars=calls * self._price(t_in, t_out), tokens=calls * (t_in + t_out))

    # -- judging ---------------------------------------------------------------------------------
    async def judge_shown(self, shown: Sequence[Pair]) -> list[Label]:
        if len(shown) == 1:  # the usual batch (batch_size 1): no task to spawn
            return [await self._judge_pair(shown[0])]
        return list(await asyncio.gather(*(self._judge_pair(p) for p in shown)))

    async def _judge_pair(self, pair: Pair) -> Label:
        first = await self._ask(pair)
        if not self.cfg.both_orders:
            return first
        second = await self._ask(pair.swapped())  # in the swapped pair's order: the merge flips it back
        return merge_both_orders(first, second, self.cfg.on_disagreement)

    def _wait(self, state: Any) -> float:
        backoff = wait_exponential_jitter(initial=self.cfg.backoff_initial_s, max=self.cfg.backoff_max_s,
                                          jitter=self.cfg.backoff_jitter_s)
        ra = retry_after_s(state.outcome.exception() if state.outcome else None)
        return min(ra, self.cfg.max_retry_after_s) if ra is not None else backoff(state)

    def _retry(self, call: Callable[[], Awaitable[Any]], first: BaseException) -> Awaitable[Any]:
        """tenacity takes over after a failed first attempt: its attempt 1 is that failure (so its
        wait, Retry-After included, comes first), then up to ``max_attempts - 1`` new calls."""
        failed = [first]

        async def attempt() -> Any:
            if failed:
                raise failed.pop()
            return await call()

        return AsyncRetrying(stop=stop_after_attempt(self.cfg.max_attempts), wait=self._wait,
                             retry=retry_if_exception(_retryable), reraise=True)(attempt)

    async def _ask(self, pair: Pair) -> Label:
        """One judgement of ``pair`` as shown, with retries. Outcome in the shown order."""
        if self._client is None:
            raise OracleError(f"oracle {self.name!r}: call setup() before judging")
        body, bound = self._request(pair)
        attempts = 0
        t0 = time.monotonic()

        async def call() -> Any:
            nonlocal attempts
            assert self._slots is not None
            attempts += 1
            return await self._slots.call(lambda: self._send(body, bound), retry=attempts > 1)

        try:
            resp = await self._with_retries(call)
        except (sdk.AuthenticationError, sdk.PermissionDeniedError, sdk.NotFoundError) as e:
            raise OracleError(f"oracle {self.name!r}: fatal error from {self.base_url} (model {self.cfg.model!r}): "
                              f"{self._describe(e)}") from None
        except sdk.OpenAIError as e:  # every other failure is an invalid label with its reason
            return self._gave_up(e, attempts, t0)
        # a paid answer from here on: usage as reported (the bound where the server reports none)
        return self._answer(resp, bound, attempts, time.monotonic() - t0)

    def _request(self, pair: Pair) -> tuple[dict[str, Any], int]:
        """The chat request's body for ``pair`` as shown, and the bound on its tokens (in + out)."""
        c = self.cfg
        messages = self.template.messages(pair.prompt.text, pair.a.text, pair.b.text)
        bound = sum(len(m["content"].encode("utf-8")) + CHAT_OVERHEAD_TOKENS for m in messages) + c.max_tokens
        body: dict[str, Any] = {"model": c.model, "messages": messages,
                                "temperature": c.temperature, "max_tokens": c.max_tokens}
        if c.mode == "logprobs":
            body.update(logprobs=True, top_logprobs=c.top_logprobs)
        return body, bound

    async def _send(self, body: dict[str, Any], bound: int) -> Any:
        """One HTTP attempt (made in a call slot), after the client-side rate limits."""
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:
            await self._tpm.acquire(bound)
        if self._lean is not None:
            return await self._lean.post(body)
        client = self._clients[next(self._next) % len(self._clients)]
        # the SDK's documented raw route: same transport, auth, errors and retries-by-status,
        # without re-validating the request parameters or building pydantic models of the
        # answer (about a millisecond of CPU per call); the JSON is read in _answer
        return (await client.post("/chat/completions", cast_to=httpx2.Response, body=body)).content

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> Any:
        # the first attempt goes straight; tenacity takes over only after a failure (its machinery
        # costs ~0.3 ms of CPU a call: 15% of the client's CPU against a fast local judge)
        try:
            return await call()
        except Exception as e:
            if not _retryable(e) or self.cfg.max_attempts <= 1:
                raise
            return await self._retry(call, e)

    def _gave_up(self, e: BaseException, attempts: int, t0: float) -> Label:
        """The invalid label of a request that got no answer (retries exhausted, or rejected)."""
        what = (f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: " if _retryable(e)
                else "rejected by the server: ")
        log.warning("judge request failed: %s%s", what, self._describe(e))
        return Label.invalid(what + self._describe(e), attempts=attempts, latency=time.monotonic() - t0)

    def _answer(self, resp: bytes, bound: int, attempts: int, latency: float) -> Label:
        """The label of a paid answer: its verdict, or INVALID where the body is not a chat completion."""
        c = self.cfg
        try:
            data = json.loads(resp)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return self._not_an_answer("the server answered with something that is not a chat completion (not JSON)",
                                       resp, bound - c.max_tokens, c.max_tokens, attempts, latency)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        t_in = usage.get("prompt_tokens")
        t_in = int(t_in) if isinstance(t_in, (int, float)) else bound - c.max_tokens
        t_out = usage.get("completion_tokens")
        t_out = int(t_out) if isinstance(t_out, (int, float)) else c.max_tokens
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            return self._not_an_answer("the server answered with no choices", resp, t_in, t_out, attempts, latency)
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = message.get("content")
        text = text if isinstance(text, str) else None
        finish = choice.get("finish_reason")
        finish = finish if isinstance(finish, str) else None
        verdict = self.template.parse(text, finish_reason=finish)  # cut off at max_tokens: invalid
        p_a = None
        logprobs = choice.get("logprobs")
        if c.mode == "logprobs" and isinstance(logprobs, dict):
            p_a = parsing.p_a_from_logprobs(logprobs.get("content"), verdict.outcome)
        return Label(outcome=verdict.outcome, reason=verdict.reason, p_a=p_a, raw=text, tokens_in=t_in,
                     tokens_out=t_out, cost=self._price(t_in, t_out), latency=latency, attempts=attempts,
                     finish_reason=finish)

    def _not_an_answer(self, why: str, resp: bytes, t_in: int, t_out: int, attempts: int, latency: float) -> Label:
        """A paid body that holds no answer: INVALID, kept (cut short) but never parsed again (reparse)."""
        return Label.invalid(why, raw=resp.decode("utf-8", "replace")[:2000], tokens_in=t_in, tokens_out=t_out,
                             cost=self._price(t_in, t_out), latency=latency, attempts=attempts,
                             finish_reason=parsing.NOT_AN_ANSWER)
