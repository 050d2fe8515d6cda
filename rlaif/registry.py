"""Build a swappable part from its Hydra config node, validating it first.

Every swappable part (generator, acquisition, oracle) is a class with a ``Config`` dataclass.
Its config node names the class with ``_target_``; the remaining keys are merged into that
dataclass, so a misspelt key or a wrong type fails at start-up with a message naming the group
and the key -- before any model is loaded or any label is paid for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlaif.errors import RlaifError


class ConfigError(RlaifError, ValueError):
    """A configuration problem, reported before any work starts."""


def validate(node: Any, schema: type, where: str) -> Any:
    """Merge ``node`` (dict or DictConfig) into dataclass ``schema``; return the dataclass instance."""
    if dataclasses.is_dataclass(node):
        return node
    if node is None:
        node = {}
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    node = {k: v for k, v in dict(node).items() if k != "_target_"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        raise ConfigError(f"invalid config for {where}: {msg}" + (f" (key: {where}.{key})" if key else "")) from None


def resolve_class(node: Any, where: str) -> type:
    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        raise ConfigError(f"config for {where} has no _target_ naming its implementation")
    try:
        return get_class(target)
    except Exception as e:  # noqa: BLE001 -- hydra raises several kinds
        raise ConfigError(f"{where}._target_: cannot import {target!r}: {e}") from None


def build(node: Any, where: str, **deps: Any) -> Any:
    """Instantiate the class named by ``node._target_`` as ``cls(validated_cfg, **deps)``."""
    cls = resolve_class(node, where)
    schema = getattr(cls, "Config", None)
    if schema is None:
        raise ConfigError(f"{where}: {cls.__name__} declares no Config dataclass")
    cfg = validate(node, schema, where)
    return cls(cfg, **deps)


def check(node: Any, where: str) -> Any:
    """Validate without instantiating (used to fail fast at start-up)."""
    cls = resolve_class(node, where)
    return validate(node, cls.Config, where)
