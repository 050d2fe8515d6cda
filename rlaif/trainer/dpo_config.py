"""Configuration of the DPO learner (TRL's DPOTrainer underneath)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rlaif.registry import ConfigError

KEEP = {"fingerprint": False}  # how the work is laid out over processes changes no label (rlaif.config.KEEP)


def accelerate_config_path(path: Optional[str]) -> Path:
    """The accelerate config file of ``trainer.accelerate_config``: as given (absolute, or relative to
    the working directory), else relative to rlaif's configs (``conf/accelerate/fsdp.yaml`` from
    anywhere, an installed wheel's copy included); unset: ``conf/accelerate/ddp.yaml``."""
    from rlaif.paths import CONF_DIR

    if not path:
        return CONF_DIR / "accelerate" / "ddp.yaml"
    given = Path(path).expanduser()
    for candidate in (given, CONF_DIR.parent / given, CONF_DIR / given):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"trainer.accelerate_config: no such file {path!r} (ready ones: "
                      f"conf/accelerate/ddp.yaml, fsdp.yaml, deepspeed_zero3.yaml)")


@dataclass
class DPOConfig:
    beta: float = field(default=0.2, metadata={"help": "DPO temperature; also the beta of the implicit reward"})
    learning_rate: float = field(default=1e-6, metadata={"help": "constant learning rate (paper: 1e-6, full FT)"})
    epochs: float = field(default=50.0, metadata={"help": "epochs over all labelled pairs each round"})
    batch_size: int = field(default=64, metadata={"help": "effective batch size (pairs)"})
    micro_batch_size: int = field(default=16, metadata={"help": "pairs per forward pass"})
    optimizer: str = field(default="adamw_torch", metadata={"help": "TRL/transformers optim name"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    warmup_steps: int = field(default=0, metadata={"help": "learning-rate warm-up steps each round"})
    mode: str = field(default="reset", metadata={
        "help": "reset: re-initialise to the reference weights and optimiser each round and train on "
                "all labels so far (paper); continue: keep training the current weights on new labels"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (peft) instead of all weights"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    lora_top_layers: Optional[int] = field(default=None, metadata={
        "help": "adapt only the top N transformer layers (backward stops there: much faster on CPU); "
                "null = all layers"})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={
        "help": "module names for LoRA (default: all linear layers)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward (saves memory, costs ~1/3 more compute)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "TRL DPO loss (sigmoid: the DPO paper's)"})
    report_to: str = field(default="none", metadata={"help": "TRL report_to: none | wandb | tensorboard. transformers' integrations log each DPO round as "
                "a separate run; logger= gives one tracker run per rlaif run"})
    num_processes: int = field(default=1, metadata={
        "help": "processes (one per GPU) DPO trains on each round; 1: in the rlaif process itself. N > 1: "
                "a child 'accelerate launch' of N ranks (DDP by default) trains on the round's pairs while "
                "acquisition and labelling stay here; the global batch stays batch_size (micro x accumulation "
                "x N), so batch_size must be a multiple of N", **KEEP})
    accelerate_config: Optional[str] = field(default=None, metadata={
        "help": "accelerate config file for num_processes > 1 (null: conf/accelerate/ddp.yaml); ready: "
                "conf/accelerate/fsdp.yaml, conf/accelerate/deepspeed_zero3.yaml", **KEEP})

    def __post_init__(self) -> None:
        if self.mode not in ("reset", "continue"):
            raise ConfigError(f"trainer.mode must be 'reset' or 'continue', got {self.mode!r}")
        if not isinstance(self.num_processes, int) or self.num_processes < 1:
            raise ConfigError(f"trainer.num_processes must be at least 1, got {self.num_processes!r}")
        if self.batch_size % self.num_processes:
            raise ConfigError(f"trainer.batch_size ({self.batch_size}) must be a multiple of trainer.num_processes "
                              f"({self.num_processes}): the global batch is split evenly over the processes")
        if self.num_processes > 1 or self.accelerate_config:
            accelerate_config_path(self.accelerate_config)  # a missing file fails here, before any label is bought
