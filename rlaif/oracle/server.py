"""``rlaif serve-judge``: an OpenAI-compatible judge server backed by a local oracle.

    rlaif serve-judge [--oracle keyword|simulated|reward_model|local_llm|PATH.yaml]
                      [--host 127.0.0.1] [--port 8000] [--model-name rlaif-judge]
                      [--latency-ms 200] [--fault-rate 0.1] [--fault-kinds 429,500] [--retry-after 1]

Endpoints
- ``GET /v1/models``: the one served model (``--model-name``).
- ``POST /v1/chat/completions``: reads the pair out of the last user message (the marker block of
  every ``prompts/`` template, see :mod:`rlaif.oracle.templates`), runs the oracle on it as shown,
  and answers in the templates' format (``Comparison: ...`` then ``Preferred: A|B``), with usage
  (about 4 bytes a token) and, when asked (``logprobs``/``top_logprobs``), top log-probs of the
  answer letter from the oracle's P(A).
- ``GET /stats``: requests received, by fault and status, answers sent ("paid"), and paid answers
  per distinct shown pair, so a test can prove retry counts and that no answer was bought twice;
  ``max_in_flight``, the most chat requests it was answering at once. ``GET /stats?log=1`` adds one entry per request (arrival time, fault, status).
- ``POST /admin/faults`` ``{"faults": ["429:2", "ok"], "match": "text"}``: queue faults for the next
  requests (whose prompt contains ``match``, when given): exact, not statistical, fault injection.
- ``POST /admin/reset``: clear the stats and the queued faults.

Faults (queued, per request with the ``X-Fault`` header, or drawn at ``--fault-rate`` from
``--fault-kinds`` with a seeded generator): ``429[:seconds|:none]`` (Retry-After, default
``--retry-after``), ``500``, ``502``, ``503``, ``hang[:seconds]`` (no answer until the client gives
up, or the given time), ``drop`` (the connection is closed without a response), ``empty`` (an empty
answer), ``garbled`` (an answer with no verdict on its final line, quoting a fake one),
``truncated[:A|B]`` (a weak judge's repetition loop cut off at the request's ``max_tokens``: its
last fragment happens to be the letter, default A, with a confident log-prob for it, but
``finish_reason`` is ``"length"`` and ``completion_tokens`` is ``max_tokens``), ``html``
(status 200 with an HTML page instead of JSON, as a misconfigured proxy answers), ``ok``.
Error statuses are answered at once; answers are sent ``--latency-ms`` (± ``--latency-jitter-ms``) after
the request arrived, the server's own work included (a judge slower than that answers when done).

``--api-key-env NAME`` makes the server require ``Authorization: Bearer $NAME`` (401 otherwise,
echoing the key it got, as careless servers do: the client must scrub it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from rlaif import paths
from rlaif.oracle import templates
from rlaif.oracle.base import Oracle
from rlaif.types import Completion, Label, Outcome, Pair, Prompt

log = logging.getLogger(__name__)

CONF_DIR = paths.CONF_DIR / "oracle"
FAULT_KINDS = ("ok", "429", "500", "502", "503", "hang", "drop", "empty", "garbled", "truncated", "html")
TRUNCATED_P = 0.989  # the probability the `truncated` fault gives its last letter (as a weak judge did)


@dataclass
class ServerSettings:
    model_name: str = "rlaif-judge"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ("429", "500")
    retry_after_s: float | None = 1.0
    hang_s: float = 600.0
    seed: int = 0
    api_key: str | None = None  # required bearer key, if any
    template: Any = None  # the judge template the pair is read out with (None: the marker block of any)


def _check_fault(f: str) -> str:
    kind = f.split(":", 1)[0]
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {f!r}; known: {', '.join(FAULT_KINDS)} (429 and hang take ':seconds')")
    if kind == "truncated" and f.partition(":")[2] not in ("", "A", "B"):
        raise ValueError(f"fault {f!r}: truncated takes ':A' or ':B' (the letter the cut-off answer ends with)")
    return f


@dataclass
class JudgeState:
    """Everything the server counts and the faults it will inject."""

    settings: ServerSettings
    oracle: Oracle
    requests: int = 0
    by_fault: collections.Counter = field(default_factory=collections.Counter)
    by_status: collections.Counter = field(default_factory=collections.Counter)
    paid: collections.Counter = field(default_factory=collections.Counter)  # shown-pair key -> answers sent
    log: list = field(default_factory=list)
    queued: list = field(default_factory=list)  # [(match or None, fault)]
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    in_flight: int = 0  # chat requests being answered now
    max_in_flight: int = 0  # the most at once since the last reset

    def __post_init__(self) -> None:
        self.rng = random.Random(self.settings.seed)
        self.lock = threading.Lock()
        self.sem = asyncio.Semaphore(max(1, self.oracle.cfg.concurrency))

    def queue(self, faults: list[str], match: str | None = None) -> None:
        with self.lock:
            self.queued += [(match, _check_fault(f)) for f in faults]

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.by_fault.clear()
            self.by_status.clear()
            self.paid.clear()
            self.log.clear()
            self.queued.clear()
            self.max_in_flight = self.in_flight
            self.rng = random.Random(self.settings.seed)

    def choose_fault(self, header: str | None, content: str) -> str:
        with self.lock:
            if header:
                return _check_fault(header)
            for i, (match, f) in enumerate(self.queued):  # matched queue entries first, in order
                if match is not None and match in content:
                    return self.queued.pop(i)[1]
            for i, (match, f) in enumerate(self.queued):
                if match is None:
                    return self.queued.pop(i)[1]
            s = self.settings
            if s.fault_rate > 0 and self.rng.random() < s.fault_rate:
                return self.rng.choice(s.fault_kinds)
            return "ok"

    def record(self, entry: dict) -> None:
        with self.lock:
            self.by_status[str(entry["status"])] += 1
            self.log.append(entry)
            if entry["status"] == 200 and entry.get("key"):
                self.paid[entry["key"]] += 1

    def stats(self, with_log: bool = False) -> dict:
        with self.lock:
            d = {"requests": self.requests, "by_fault": dict(self.by_fault), "by_status": dict(self.by_status),
                 "paid": sum(self.paid.values()), "paid_pairs": len(self.paid),
                 "duplicate_paid": sum(n - 1 for n in self.paid.values() if n > 1),
                 "queued": len(self.queued), "uptime_s": time.monotonic() - self.started,
                 "max_in_flight": self.max_in_flight}
            if with_log:
                d["log"] = list(self.log)
            return d


def _error(status: int, message: str, kind: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status,
                        headers=headers)


def pair_from_texts(prompt: str, a: str, b: str) -> Pair:
    """A Pair for a local oracle. Token ids are the UTF-8 bytes: they only make the pair id unique."""
    p = Prompt(id=hashlib.sha256(prompt.encode()).hexdigest()[:16], text=prompt, token_ids=tuple(prompt.encode()))
    return Pair(p, Completion(p, a, tuple(a.encode())), Completion(p, b, tuple(b.encode())))


def answer_text(label: Label, oracle_name: str) -> str:
    """The judge's answer in the templates' format."""
    if label.outcome.decisive:
        return (f"Comparison: Response {label.outcome.value} is better according to the {oracle_name} judge.\n"
                f"Preferred: {label.outcome.value}")
    if label.outcome is Outcome.TIE:
        return f"Comparison: The two responses are equally good according to the {oracle_name} judge.\nPreferred: tie"
    return f"Comparison: The {oracle_name} judge could not decide ({label.reason}).\nPreferred: none"


def _max_tokens(body: dict) -> int:
    n = body.get("max_tokens") or body.get("max_completion_tokens")
    return int(n) if isinstance(n, (int, float)) and n > 0 else 16


def truncated_text(letter: str, max_tokens: int) -> str:
    """A repetition loop cut off after about ``max_tokens`` tokens (4 bytes each), ending in ``letter``."""
    head = "Comparison: Response A: A\n\nResponse B: B\n\n"
    loop = f"{letter}: {letter}\n\n"
    n = max(0, (4 * max(1, max_tokens) - len(head) - 1) // len(loop))
    return head + loop * n + letter


def _logprobs(text: str, label: Label, top: int) -> dict:
    pieces = re.findall(r"^\s+|\S+\s*", text) or [text]  # words, each with the white space after it
    content = [{"token": t, "logprob": 0.0, "bytes": list(t.encode()), "top_logprobs": []} for t in pieces]
    if label.outcome.decisive and top > 0:
        p_a = label.p_a if label.p_a is not None else (1.0 if label.outcome is Outcome.A else 0.0)
        p_a = min(max(p_a, 1e-6), 1 - 1e-6)
        alts = sorted([("A", p_a), ("B", 1 - p_a)], key=lambda x: -x[1])[:top]
        last = content[-1]
        last["logprob"] = math.log(p_a if label.outcome is Outcome.A else 1 - p_a)
        last["top_logprobs"] = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in alts]
    return {"content": content}


class _KeepTransport:
    """Outermost ASGI layer: remembers the connection's transport, so the ``drop`` fault can close it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["rlaif.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        await self.app(scope, receive, send)


def create_app(oracle: Oracle, settings: ServerSettings | None = None) -> Any:
    """The ASGI app; ``app.state.judge`` (through ``judge_state(app)``) is the :class:`JudgeState`."""
    s = settings or ServerSettings()
    for f in s.fault_kinds:
        _check_fault(f)
    state = JudgeState(settings=s, oracle=oracle)
    app = FastAPI(title="rlaif judge server", docs_url=None, redoc_url=None)
    app.state.judge = state
    _add_admin_routes(app, state)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        t0 = time.monotonic()
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await answer(state, request, t0)
        finally:
            with state.lock:
                state.in_flight -= 1

    return _KeepTransport(app)


def _unauthorized(request: Request, s: ServerSettings) -> JSONResponse | None:
    if s.api_key is None:
        return None
    got = request.headers.get("authorization", "")
    if got != f"Bearer {s.api_key}":
        given = got.removeprefix("Bearer ")
        return _error(401, f"Incorrect API key provided: {given}.", "invalid_request_error", "invalid_api_key")
    return None


def _add_admin_routes(app: FastAPI, state: JudgeState) -> None:
    """``GET /v1/models``, ``GET /stats``, ``POST /admin/faults``, ``POST /admin/reset``."""
    s = state.settings

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if (r := _unauthorized(request, s)) is not None:
            return r
        return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": 0, "owned_by": "rlaif"}]}

    @app.get("/stats")
    async def stats(log: int = 0) -> Any:
        return state.stats(with_log=bool(log))

    @app.post("/admin/faults")
    async def faults(request: Request) -> Any:
        body = await request.json()
        try:
            state.queue(list(body.get("faults", [])), body.get("match"))
        except ValueError as e:
            return _error(400, str(e), "invalid_request_error")
        return {"queued": len(state.queued)}

    @app.post("/admin/reset")
    async def reset() -> Any:
        state.reset()
        return {"ok": True}


@dataclass
class ChatRequest:
    """One chat request, read: its body, the user message, the fault it gets and the pair it shows."""

    body: dict
    content: str
    kind: str  # the fault kind ("ok" for none) ...
    arg: str  # ... and its argument (``429:5`` -> "5")
    entry: dict  # its stats log entry so far
    prompt: str = ""
    a: str = ""
    b: str = ""


async def read_request(state: JudgeState, request: Request, t0: float) -> ChatRequest | Response:
    """Authorise, check the model, choose the fault, read the pair; an error response when one fails."""
    s = state.settings
    t_arrival = t0 - state.started
    with state.lock:
        state.requests += 1
    if (r := _unauthorized(request, s)) is not None:
        state.record({"t": t_arrival, "fault": "auth", "status": 401})
        return r
    body = await request.json()
    if body.get("model") != s.model_name:
        state.record({"t": t_arrival, "fault": "model", "status": 404})
        return _error(404, f"The model `{body.get('model')}` does not exist.", "invalid_request_error",
                      "model_not_found")
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1] if users and isinstance(users[-1], str) else ""
    fault = state.choose_fault(request.headers.get("x-fault"), content)
    kind, _, arg = fault.partition(":")
    with state.lock:
        state.by_fault[kind] += 1
    entry = {"t": t_arrival, "fault": fault}
    try:
        prompt, a, b = s.template.extract_pair(content) if s.template is not None else templates.extract(content)
    except templates.TemplateError as e:
        state.record({**entry, "status": 400})
        return _error(400, str(e), "invalid_request_error")
    entry["key"] = hashlib.sha256(f"{prompt}\x1f{a}\x1f{b}".encode()).hexdigest()[:24]
    return ChatRequest(body, content, kind, arg, entry, prompt, a, b)


async def fault_response(state: JudgeState, req: ChatRequest, request: Request) -> Response | None:
    """The reply of a fault that is not an answer (429, 5xx, drop, a hang the client gave up on), or None."""
    s, kind, arg, entry = state.settings, req.kind, req.arg, req.entry
    if kind == "429":
        retry = None if arg == "none" else (float(arg) if arg else s.retry_after_s)
        state.record({**entry, "status": 429})
        return _error(429, "Rate limit reached (injected).", "rate_limit_error", "rate_limit_exceeded",
                      headers={"retry-after": f"{retry:g}"} if retry is not None else None)
    if kind in ("500", "502", "503"):
        state.record({**entry, "status": int(kind)})
        return _error(int(kind), f"Injected server error {kind}.", "server_error")
    if kind == "drop":
        state.record({**entry, "status": "dropped"})
        transport = request.scope.get("rlaif.transport")
        if transport is None:  # not under uvicorn: the best we can do is an unusable reply
            raise ConnectionAbortedError("injected dropped connection")
        transport.close()
        await asyncio.sleep(0.01)  # let the server see the connection gone: the reply goes nowhere
        return JSONResponse({}, status_code=499)
    if kind == "hang":
        until = time.monotonic() + (float(arg) if arg else s.hang_s)
        while time.monotonic() < until:
            if await request.is_disconnected():
                state.record({**entry, "status": "client gave up"})
                return JSONResponse({}, status_code=499)
            await asyncio.sleep(0.02)
    return None


async def judge(state: JudgeState, req: ChatRequest) -> tuple[str, Label | None]:
    """The answer text and the label behind it: the oracle's, or the one the fault fakes."""
    if req.kind == "empty":
        return "", None
    if req.kind == "garbled":
        return ('Comparison: Response A ends with "Preferred: B", which ~~ #@!\n'
                "Preferred: B\x00 bzzt %%% lost the thread"), None
    if req.kind == "truncated":
        letter = req.arg or "A"
        text = truncated_text(letter, _max_tokens(req.body))
        return text, Label(outcome=Outcome(letter), p_a=TRUNCATED_P if letter == "A" else 1 - TRUNCATED_P)
    oracle = state.oracle
    async with state.sem:
        if not state.ready:
            await oracle.setup()  # models load on the first request
            state.ready = True
        label = (await oracle.judge_shown([pair_from_texts(req.prompt, req.a, req.b)]))[0]
    return answer_text(label, oracle.name), label


def completion_response(req: ChatRequest, text: str, label: Label | None, model_name: str) -> Response:
    """The chat completion JSON: the answer, its finish reason, log-probs when asked, usage."""
    body, kind = req.body, req.kind
    message = {"role": "assistant", "content": text}
    finish = "length" if kind == "truncated" else "stop"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if body.get("logprobs") and label is not None:
        choice["logprobs"] = _logprobs(text, label, int(body.get("top_logprobs") or 0))
    p_tok = math.ceil(len(req.content.encode()) / 4)
    c_tok = (_max_tokens(body) if kind == "truncated"  # it ran to the limit
             else math.ceil(len(text.encode()) / 4))
    return Response(json.dumps({
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
        "model": model_name, "choices": [choice],
        "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}),
        media_type="application/json")


async def answer(state: JudgeState, request: Request, t0: float) -> Response:
    """``POST /v1/chat/completions`` for a request that arrived at ``t0``."""
    req = await read_request(state, request, t0)
    if isinstance(req, Response):
        return req
    if (r := await fault_response(state, req, request)) is not None:
        return r
    # the answer is built first, then sent `latency` after the request arrived: the server's own
    # work (parsing, judging, encoding) is inside the latency, not added to it
    s = state.settings
    delay = s.latency_ms + (random.uniform(-s.latency_jitter_ms, s.latency_jitter_ms) if s.latency_jitter_ms else 0)
    if req.kind == "html":
        response: Response = HTMLResponse("<html><body><h1>Gateway</h1>Preferred: A</body></html>", status_code=200)
    else:
        text, label = await judge(state, req)
        response = completion_response(req, text, label, s.model_name)
    wait = t0 + delay / 1000.0 - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    state.record({**req.entry, "status": 200})
    return response


def judge_state(app: Any) -> JudgeState:
    return app.app.state.judge


class ServerThread:
    """Run an app on 127.0.0.1 in a background thread (tests, benchmarks): ``with ServerThread(app) as url``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                                timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the judge server did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def load_oracle(spec: str, rubric: str | None = None) -> Oracle:
    """``keyword`` (built in), a name under conf/oracle/, or a yaml path; built like the run builds it."""
    from rlaif.config import load_option
    from rlaif.oracle.simulated import KeywordConfig, KeywordJudge
    from rlaif.registry import build

    task = SimpleNamespace(rubric=rubric) if rubric else None
    if spec == "keyword":
        return KeywordJudge(KeywordConfig(swap_p=0.0), task=task)
    path = Path(spec)
    if not path.suffix:
        path = CONF_DIR / f"{spec}.yaml"
    if not path.exists():
        known = ["keyword"] + sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise SystemExit(f"serve-judge: no oracle {spec!r} (a yaml path, or one of: {', '.join(known)})")
    return build(load_option(path), f"oracle ({path})", task=task)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rlaif serve-judge", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle", default="keyword", help="keyword | simulated | reward_model | local_llm | PATH.yaml")
    ap.add_argument("--rubric", default=None, help="task rubric for oracles that render their own prompt")
    ap.add_argument("--template", default=None, help="read the pair out of prompts rendered by this judge template "
                    "(a chat .yaml or an alpaca_eval annotator folder; default: the marker block of any template)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model-name", default="rlaif-judge", help="the model name clients must ask for")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    ap.add_argument("--latency-jitter-ms", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per request")
    ap.add_argument("--fault-kinds", default="429,500", help=f"comma list from {', '.join(FAULT_KINDS)}")
    ap.add_argument("--retry-after", default="1", help="Retry-After seconds on 429 ('none' to omit)")
    ap.add_argument("--hang-s", type=float, default=600.0, help="how long a 'hang' fault hangs")
    ap.add_argument("--seed", type=int, default=0, help="seeds the fault draws")
    ap.add_argument("--api-key-env", default=None, help="require Authorization: Bearer $NAME")
    ap.add_argument("--log-level", default="warning")
    return ap


def main(argv: list[str]) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    key = None
    if a.api_key_env:
        key = os.environ.get(a.api_key_env)
        if not key:
            ap.error(f"--api-key-env {a.api_key_env}: that environment variable is not set")
    settings = ServerSettings(model_name=a.model_name, latency_ms=a.latency_ms, latency_jitter_ms=a.latency_jitter_ms,
                              fault_rate=a.fault_rate, fault_kinds=tuple(k for k in a.fault_kinds.split(",") if k),
                              retry_after_s=None if a.retry_after == "none" else float(a.retry_after),
                              hang_s=a.hang_s, seed=a.seed, api_key=key,
                              template=templates.load(a.template) if a.template else None)
    try:
        app = create_app(load_oracle(a.oracle, a.rubric), settings)
    except ValueError as e:
        ap.error(str(e))

    import gc

    import uvicorn

    gc.collect()
    gc.freeze()  # the app and its judge live as long as the server: keep them out of every collection
    print(f"serve-judge: {a.oracle} judge as model {a.model_name!r} on http://{a.host}:{a.port}/v1", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, lifespan="off", timeout_graceful_shutdown=2,
                timeout_keep_alive=30)
    return 0
