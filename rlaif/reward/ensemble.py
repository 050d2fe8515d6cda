"""An ensemble of K small Bradley-Terry reward heads on frozen features.

Each head is linear (``hidden: 0``) or a one-hidden-layer MLP, fitted by full-batch Adam on the
Bradley-Terry loss -log sigmoid(r(chosen) - r(rejected)) with weight decay, on its own bootstrap
resample of the preferences and its own seed: the spread of the heads is the ensemble's epistemic
uncertainty (what ``ensemble_uncertainty`` and ``thompson`` use). Features are standardised with
the training set's mean and std, kept in the state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlaif.reward.base import RewardModel

STATE, META = "ensemble.pt", "rm.json"


@dataclass
class EnsembleConfig:
    k: int = field(default=8, metadata={"help": "heads in the ensemble"})
    hidden: int = field(default=0, metadata={"help": "hidden units per head (0: a linear head)"})
    steps: int = field(default=200, metadata={"help": "full-batch Adam steps per head"})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=1e-2, metadata={"help": "L2 penalty on the head's weights"})
    bootstrap: bool = field(default=True, metadata={"help": "each head on its own bootstrap resample"})
    seed: int = field(default=0, metadata={"help": "seed of the resamples and initialisations"})


def _head(dim: int, hidden: int) -> torch.nn.Module:
    if hidden <= 0:
        return torch.nn.Linear(dim, 1)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


class Ensemble(RewardModel):
    """K heads over standardised features."""

    def __init__(self, cfg: EnsembleConfig, dim: int, mean: np.ndarray, std: np.ndarray) -> None:
        self.cfg, self.dim = cfg, dim
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        self.heads = torch.nn.ModuleList([_head(dim, cfg.hidden) for _ in range(cfg.k)])

    @torch.no_grad()
    def member_rewards(self, feats: np.ndarray) -> np.ndarray:
        x = (torch.as_tensor(np.asarray(feats), dtype=torch.float32) - self.mean) / self.std
        return torch.stack([h(x).squeeze(-1) for h in self.heads]).numpy().astype(float)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, out: str | Path, meta: dict) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"heads": self.heads.state_dict(), "mean": self.mean, "std": self.std}, out / STATE)
        doc = {"ensemble": asdict(self.cfg), "dim": self.dim, **meta}
        (out / META).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> tuple["Ensemble", dict]:
        path = Path(path)
        if not (path / META).exists() or not (path / STATE).exists():
            raise FileNotFoundError(f"{path}: no fitted reward model ({META} + {STATE}); make one with rlaif fit-rm")
        meta = json.loads((path / META).read_text())
        state = torch.load(path / STATE, weights_only=True)
        ens = cls(EnsembleConfig(**meta["ensemble"]), int(meta["dim"]), state["mean"].numpy(), state["std"].numpy())
        ens.heads.load_state_dict(state["heads"])
        return ens, meta


def _fit_head(head: torch.nn.Module, xc: torch.Tensor, xr: torch.Tensor, cfg: EnsembleConfig) -> None:
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = -torch.nn.functional.logsigmoid(head(xc) - head(xr)).mean()
        loss.backward()
        opt.step()


def fit_ensemble(chosen: np.ndarray, rejected: np.ndarray, cfg: EnsembleConfig) -> Ensemble:
    """K heads fitted on (chosen, rejected) feature pairs [N, D] each (deterministic for ``cfg.seed``)."""
    chosen, rejected = np.asarray(chosen, dtype=np.float32), np.asarray(rejected, dtype=np.float32)
    if len(chosen) == 0 or chosen.shape != rejected.shape:
        raise ValueError(f"fit_ensemble needs matching non-empty feature pairs, got {chosen.shape} / {rejected.shape}")
    both = np.concatenate([chosen, rejected])
    mean, std = both.mean(0), both.std(0) + 1e-6
    ens = Ensemble(cfg, chosen.shape[1], mean, std)
    xc = (torch.from_numpy(chosen) - ens.mean) / ens.std
    xr = (torch.from_numpy(rejected) - ens.mean) / ens.std
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        for k, head in enumerate(ens.heads):
            torch.manual_seed(cfg.seed * 1009 + k)
            for p in head.parameters():  # re-initialise under this head's seed
                torch.nn.init.normal_(p, std=0.01)
            idx = rng.integers(0, len(xc), len(xc)) if cfg.bootstrap else np.arange(len(xc))
            _fit_head(head, xc[idx], xr[idx], cfg)
    return ens


def agreement(ens: RewardModel, chosen: np.ndarray, rejected: np.ndarray) -> dict:
    """How often the ensemble's mean reward prefers the labelled side, with a 95% Wilson interval."""
    if len(chosen) == 0:
        return wilson(0, 0)
    return wilson(int((ens.rewards(chosen) > ens.rewards(rejected)).sum()), len(chosen))


def wilson(hits: int, n: int) -> dict:
    """``{"n", "agreement", "ci95"}``: the share ``hits / n`` with its 95% Wilson interval (None when n = 0).
    Every reward model's agreement with the oracle is reported in this form."""
    if n == 0:
        return {"n": 0, "agreement": None, "ci95": None}
    p, z = hits / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"n": n, "agreement": p, "ci95": [float(centre - half), float(centre + half)]}
