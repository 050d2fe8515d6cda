"""``reward_model.*`` of a run's config: the per-round reward model (:mod:`rlaif.reward.rounds`).

A leaf module (dataclasses only): :mod:`rlaif.config` imports it without torch or the fitting code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundRMConfig:
    fit_each_round: bool = field(default=False, metadata={
        "help": "after each round's labels, fit the head ensemble of `rlaif fit-rm` on the run's decisive labels so "
                "far (frozen features of the base policy) into RUN_DIR/rm/round-<r>/ with its held-out agreement: "
                "a free judge for oracle=fitted_rm oracle.path=RUN_DIR/rm/round-<r>"})
    k: int = field(default=8, metadata={"help": "heads in the ensemble"})
    hidden: int = field(default=0, metadata={"help": "hidden units per head (0: linear heads)"})
    steps: int = field(default=200, metadata={"help": "full-batch Adam steps per head"})
    layer: int = field(default=-1, metadata={"help": "hidden-state layer of the features (0: embeddings, -1: last)"})
    pooling: str = field(default="mean", metadata={"help": "'mean' over completion tokens or 'last' token"})
    held_out: float = field(default=0.2, metadata={"help": "share of the prompts held out for the agreement"})
    min_labels: int = field(default=8, metadata={
        "help": "fewest decisive labels to fit on (fewer: no model that round)"})

    def __post_init__(self) -> None:  # at start-up, before any label is bought (rlaif.run.startup.check_schemas)
        from rlaif.registry import ConfigError

        if self.pooling not in ("mean", "last"):
            raise ConfigError(f"reward_model.pooling must be 'mean' or 'last', got {self.pooling!r}")
        if not 0.0 <= self.held_out < 1.0:
            raise ConfigError(f"reward_model.held_out must be in [0, 1), got {self.held_out}")
        for key in ("k", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"reward_model.{key} must be at least 1, got {getattr(self, key)}")
