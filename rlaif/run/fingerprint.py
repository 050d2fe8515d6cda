"""The config fingerprint: the part of a run's config that decides its labels, checked on resume.

A run records it when it starts, in its run state (``state/state.json``) and in its ledger's meta;
a resume whose config differs in it is refused (:func:`refuse_changed`), naming each changed key:
the resumed run would not be the run that was started.

Everything that decides which pairs are acquired (seed, task, policy, generator, acquisition,
trainer -- it shapes the next round's policy --, ``budget.labels_per_round``) or how they are
judged (the oracle's config and its ``identity()``) is in. A key is out when its dataclass field
says so, ``metadata={"fingerprint": False}`` (limits, concurrency, timeouts, prices, evaluation,
paths; :data:`rlaif.config.KEEP`). A node's dataclass is its ``_target_``'s ``Config``, else the
declared type of its field, from :class:`rlaif.config.RunConfig` down (:func:`rlaif.config.schema_of`).

Fingerprints recorded before every key had a schema lack the keys their config did not spell out:
such a key counts as its dataclass default (the value the run used), and a key recorded then that
is out now is not compared.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rlaif.config import RunConfig, field_types, schema_of
from rlaif.errors import RlaifError

# top-level nodes without a dataclass that never change labels: Hydra's own settings
UNTYPED_KEEP = ("hydra",)
_UNSET = "<unset>"


class ConfigChangedError(RlaifError, RuntimeError):
    """A resume whose label-changing config differs from the one the run (or its ledger) started with."""


class Fingerprint(dict):
    """``{dotted.key: value}`` of the label-changing keys, with what the comparison needs besides:
    ``defaults`` (each key's dataclass default, where it has one) and ``kept`` (the keys left out)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.defaults: dict[str, Any] = {}
        self.kept: set[str] = set()


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except ImportError:  # pragma: no cover
        pass
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return _plain(dataclasses.asdict(cfg))
    if isinstance(cfg, dict):
        return {str(k): _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _json(obj: Any) -> Any:
    """What a fingerprint is stored as (JSON; anything else as its str)."""
    return json.loads(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        if not d and prefix:
            out[prefix] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return _json(_plain(f.default))
    if f.default_factory is not dataclasses.MISSING:
        return _json(_plain(f.default_factory()))
    return _UNSET


def _walk(node: dict, schema: type | None, prefix: str, out: Fingerprint) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema is not None else {}
    types = field_types(schema)
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        f = fields.get(k)
        if (f is not None and f.metadata.get("fingerprint") is False) or (not prefix and k in UNTYPED_KEEP):
            out.kept.update(_flatten(v, key))
        elif isinstance(v, dict) and v:
            _walk(v, schema_of(v, types.get(k)), key, out)
        else:
            out[key] = v
            if f is not None:
                out.defaults[key] = _default(f)


def label_fingerprint(cfg: Any, oracle: Any = None, schema: type = RunConfig) -> Fingerprint:
    """The label-changing part of a run config (``schema``: its dataclass), as a flat
    ``{dotted.key: value}`` dict; with ``oracle``, its :meth:`identity` too (``oracle_identity.*``)."""
    out = Fingerprint()
    plain = _plain(cfg)
    if isinstance(plain, dict):
        _walk(plain, schema, "", out)
    else:
        out.update(_flatten(plain))
    if oracle is not None:
        out.update(_flatten(_plain(oracle.identity()), "oracle_identity"))
    stored = Fingerprint(_json(dict(out)))
    stored.defaults, stored.kept = out.defaults, out.kept
    return stored


def diff_fingerprints(old: dict, new: dict) -> list[str]:
    """Human-readable differences, one ``key: old -> new`` per changed key. A key missing from
    ``old`` counts as ``new``'s default for it; a key of ``old`` that ``new`` leaves out is skipped."""
    defaults, kept = getattr(new, "defaults", {}), getattr(new, "kept", set())
    new = _json(dict(new))
    out = []
    for k in sorted((set(old) - set(kept)) | set(new)):
        a, b = old.get(k, defaults.get(k, _UNSET)), new.get(k, _UNSET)
        if a != b:
            out.append(f"{k}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return out


def refuse_changed(what: Any, old: dict, new: dict) -> None:
    """Raise :class:`ConfigChangedError` when ``new`` differs from ``old``, the fingerprint ``what``
    (a run directory, a ledger) was started with."""
    diffs = diff_fingerprints(old, new)
    if diffs:
        raise ConfigChangedError(
            f"refusing to resume {what}: its label-changing config differs from this one:\n  "
            + "\n  ".join(diffs) +
            "\nThese settings change which pairs are acquired or how they are judged, so the resumed run "
            "would not be the run that was started. Revert the overrides, or start a new run (labels "
            "already paid for are reused free through the shared cache, ledger_cache=...).")
