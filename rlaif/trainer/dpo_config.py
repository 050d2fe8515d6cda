"""Configuration of the DPO learner (TRL's DPOTrainer underneath)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlaif.registry import ConfigError


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
    report_to: str = field(default="none", metadata={"help": "TRL report_to: none | wandb | tensorboard"})

    def __post_init__(self) -> None:
        if self.mode not in ("reset", "continue"):
            raise ConfigError(f"trainer.mode must be 'reset' or 'continue', got {self.mode!r}")
