"""The policy being trained, and its frozen reference.

With LoRA (the CPU default) the reference is the base model with the adapter disabled, so one
copy of the weights serves both. Without LoRA a frozen copy is kept, and a half-precision
``dtype`` keeps float32 master weights and runs the model under autocast in that dtype: AdamW's
updates at full fine-tuning learning rates (1e-6) are far below a bfloat16 weight's resolution
and would round away, leaving almost every weight unchanged. ``reset()`` returns the
policy to the reference weights (the paper resets every round); ``save_merged()`` writes plain
HF weights (LoRA merged in) for the vLLM engine to reload.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from rlaif.assets import hub_id, resolve_model

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HALF = (torch.bfloat16, torch.float16)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _linear_names(model) -> list[str]:
    """Leaf names of the linear layers inside the transformer blocks (what 'all-linear' means)."""
    from transformers.pytorch_utils import Conv1D

    out = set()
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, Conv1D)) and "lm_head" not in name and "score" not in name:
            out.add(name.split(".")[-1])
    return sorted(out)


class Policy:
    def __init__(self, policy_cfg, trainer_cfg, seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg, self.tcfg, self.seed = policy_cfg, trainer_cfg, seed
        self.model_dir = resolve_model(policy_cfg.name_or_path)
        explicit = policy_cfg.get("hub_id") if hasattr(policy_cfg, "get") else getattr(policy_cfg, "hub_id", None)
        self.hub_id = hub_id(policy_cfg.name_or_path, explicit)  # what a saved adapter names as its base
        self.device = pick_device(policy_cfg.device)
        dtype = _DTYPES.get(policy_cfg.dtype, "auto") if policy_cfg.dtype != "auto" else "auto"
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lora = bool(trainer_cfg.lora)
        # full fine-tuning in half precision: float32 master weights, autocast in the asked dtype
        self.autocast_dtype = dtype if not self.lora and dtype in _HALF else None
        load_dtype = torch.float32 if self.autocast_dtype is not None else dtype
        base = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=load_dtype)
        if not self.lora and base.dtype in _HALF:  # dtype=auto on a half-precision checkpoint
            self.autocast_dtype = base.dtype
            base = base.float()
        if self.autocast_dtype is not None:
            log.info("full fine-tuning: float32 master weights, %s autocast", str(self.autocast_dtype).split(".")[-1])
        self.base = base.to(self.device)
        self.base.config.pad_token_id = self.tokenizer.pad_token_id
        self.version = 0  # bumped whenever weights change
        self._ref = None
        self._ref_state = None
        if not self.lora:
            self._ref = copy.deepcopy(self.base).eval().requires_grad_(False)
        self.model = self.base
        self.reset(round_=0)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the model computes in (the autocast dtype over float32 master weights, if any)."""
        return self.autocast_dtype or self.base.dtype

    def autocast(self):
        """Autocast to the compute dtype where the weights are float32 masters (else a no-op)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def reset(self, round_: int = 0) -> None:
        """Back to the reference weights with a freshly initialised adapter (LoRA B = 0)."""
        if self.lora:
            from peft import LoraConfig, PeftModel, get_peft_model

            if isinstance(self.model, PeftModel):
                self.base = self.model.unload()
            torch.manual_seed(self.seed * 1000 + round_)
            extra = {}
            top = self.tcfg.lora_top_layers
            if top:
                n_layers = int(getattr(self.base.config, "num_hidden_layers", 0) or self.base.config.n_layer)
                extra["layers_to_transform"] = list(range(max(0, n_layers - top), n_layers))
            targets = list(self.tcfg.lora_target_modules) if self.tcfg.lora_target_modules else (
                _linear_names(self.base) if top else "all-linear")
            lcfg = LoraConfig(r=self.tcfg.lora_r, lora_alpha=self.tcfg.lora_alpha,
                              lora_dropout=self.tcfg.lora_dropout, bias="none", task_type="CAUSAL_LM",
                              target_modules=targets, **extra)
            self.model = get_peft_model(self.base, lcfg)
        else:
            self.base.load_state_dict(self._ref.state_dict())
            self.model = self.base
        self.version += 1

    @torch.no_grad()
    def is_reference(self) -> bool:
        """True when the current weights are exactly the reference's (LoRA: every B is zero, so
        the adapter adds nothing; full fine-tuning: every tensor equal). Then every implicit reward
        is exactly 0 by definition, whatever two backends would compute for it."""
        if self.lora:
            return all(not p.any() for n, p in self.model.named_parameters() if "lora_B" in n)
        ref = self._ref.state_dict()
        return all(torch.equal(t, ref[k]) for k, t in self.base.state_dict().items())

    @contextmanager
    def reference(self):
        """The frozen reference model (eval mode, no grad)."""
        if self.lora:
            was_training = self.model.training
            self.model.eval()
            try:
                with self.model.disable_adapter():
                    yield self.model
            finally:
                self.model.train(was_training)
        else:
            with self.autocast():
                yield self._ref

    @contextmanager
    def current(self):
        """The current policy in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.autocast():
                yield self.model
        finally:
            self.model.train(was_training)

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain HF weights of the current policy (LoRA merged), without touching the live model."""
        if not self.lora:
            return {k: v.detach() for k, v in self.base.state_dict().items()}
        from peft.tuners.lora import LoraLayer

        sd = {}
        base = self.model.get_base_model()
        lora_layers = {n: m for n, m in base.named_modules() if isinstance(m, LoraLayer)}
        for name, t in base.state_dict().items():
            if "lora_" in name:
                continue
            clean = name.replace(".base_layer.", ".")
            sd[clean] = t.detach()
        with torch.no_grad():
            for n, m in lora_layers.items():
                delta = m.get_delta_weight("default")
                key = f"{n}.weight"
                sd[key] = (sd[key].float() + delta.float()).to(sd[key].dtype)
        return sd

    def save_merged(self, out_dir: str | Path) -> Path:
        """Write the current policy as a normal HF model directory (for vLLM weight reload)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = self.merged_state_dict()
        target = self.model.get_base_model() if self.lora else self.base
        target.save_pretrained(out, state_dict=sd)
        self.tokenizer.save_pretrained(out)
        return out

    def load_trained(self, path: str | Path) -> None:
        """Restore what ``save_trained`` wrote (used when resuming a run)."""
        path = Path(path)
        if self.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.model, load_file(str(path / "adapter_model.safetensors")))
        else:
            from transformers import AutoModelForCausalLM

            self.base.load_state_dict(AutoModelForCausalLM.from_pretrained(path).state_dict())
        self.version += 1

    def save_trained(self, out_dir: str | Path) -> Path:
        """Save what was trained: the adapter (LoRA) or the full model, naming the base model by its hub
        id where it has one (not this machine's cache path). A run's final ``model/`` (beside the run's
        ``metrics.jsonl``) gets its model card: arm, judge, labels, win-rates, the command."""
        out = Path(out_dir)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.hub_id:
            portable(out, self.hub_id, str(self.model_dir))
        if out.name == "model" and (out.parent / "metrics.jsonl").exists():
            write_model_card(out, out.parent, self.hub_id or str(self.model_dir), lora=self.lora)
        return out


def portable(out: Path, base: str, local: str) -> None:
    """Name ``base`` (a hub id) instead of the local model directory in what ``save_pretrained`` wrote."""
    import json

    cfg = out / "adapter_config.json"
    if cfg.exists():
        d = json.loads(cfg.read_text())
        d["base_model_name_or_path"] = base
        cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    card = out / "README.md"
    if card.exists():
        card.write_text(card.read_text().replace(local, base))


def write_model_card(out: Path, run_dir: Path, base: str, lora: bool = True) -> Path:
    """``out/README.md``: the model card of a run's trained policy (from the run directory's own files)."""
    from rlaif.run.facts import facts

    f = facts(run_dir)
    rows = [("base model", base), ("what", "LoRA adapter (PEFT)" if lora else "full model"),
            ("trained by", "rlaif: active preference learning, TRL DPO"), ("arm", f["arm"]),
            ("judge", f["judge"]), ("judge template hash", f["template_hash"]), ("task", f["task"]),
            ("seed", f["seed"]), ("rounds", f["rounds"]),
            ("labels", f"{f['labels']} bought, {f['decisive']} decisive (preferences)"),
            ("judge spend", f"${(f['dollars'] or 0):.4f}, {f['tokens'] or 0} tokens"),
            ("gold win-rate vs reference", f["gold_winrate"] or "not measured"),
            ("oracle win-rate vs reference", f["oracle_winrate"] or "not measured")]
    load = (f'from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained("{out.name}")'
            if lora else f'from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained("{out.name}")')
    text = (f"---\nbase_model: {base}\nlibrary_name: {'peft' if lora else 'transformers'}\n"
            f"tags: [rlaif, dpo, trl, active-preference-learning]\n---\n\n"
            f"# {base} + DPO on {f['labels']} judged preferences ({f['arm']} arm)\n\n"
            "| | |\n|---|---|\n" + "".join(f"| {k} | {'' if v is None else v} |\n" for k, v in rows)
            + (f"\nWin-rates are against the untrained reference on held-out prompts (evaluated at round "
               f"{f['evaluated_round']}), with 95% bootstrap intervals and n.\n" if f["evaluated_round"] else "")
            + "\n"
            f"## Command\n\n```bash\n{f['command']}\n```\n\n## Load\n\n```python\n{load}\n```\n")
    (out / "README.md").write_text(text)
    return out / "README.md"
