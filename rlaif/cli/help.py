"""``--help`` of the Hydra subcommands: Hydra's own help page, with each config field's help text.

Hydra prints ``hydra.help.template`` for ``--help``, after composing the config with the command's
overrides (``rlaif run oracle=openai --help`` shows the openai judge's fields). :func:`register`
stores one template per app in the ``hydra/help`` group; :func:`help_override` selects it. The
template's ``${rlaif_fields:}`` is a resolver that prints the composed config as YAML with every
field's help (its dataclass field's ``metadata["help"]``) as a trailing comment. The dataclass of
a node is the ``Config`` of the class its ``_target_`` names (generator, acquisition, oracle), else
the type of the :class:`~rlaif.config.RunConfig` field of that name (policy, task, budget, ...).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlaif import registry
from rlaif.config import RunConfig

COMMENT_COLUMN = 44

# what each app's help page says above Hydra's lists ($ is Hydra's template syntax: $$ is a dollar)
HEADERS = {
    "config": """\
rlaif run: active preference learning -- generate pairs, pick the informative ones, buy their labels,
train DPO -- under a label, dollar or token budget. The run directory is Hydra's output directory.

usage: rlaif run [-m] [--cfg job] [GROUP=OPTION | KEY=VALUE | +KEY=VALUE ...]
  rlaif run oracle=openai acquisition=hybrid budget.labels=512
  rlaif run -m acquisition=random,certainty,hybrid seed=0,1,2     a sweep (Hydra multirun)
  rlaif run resume=RUN_DIR                                        continue a stopped run
  rlaif run oracle=openai --help                                  this page, for that choice
""",
    "bench_oracle": """\
rlaif bench-oracle: a judge leaderboard (gold agreement, self-consistency, position bias, cost,
latency). Every judge is asked both orders of the same pairs; a comma list sweeps judges (-m is
added for you). pairs=reviews|policy|RUN_DIR picks the pairs; gold=auto|null|ORACLE the gold judge;
out=DIR collects the leaderboard.

usage: rlaif bench-oracle [GROUP=OPTION | KEY=VALUE ...]
  rlaif bench-oracle oracle=simulated,reward_model,local_llm n_pairs=200 out=bench/judges
  rlaif bench-oracle oracle=openai oracle.model=gpt-4o-mini oracle.price_input_per_mtok=0.15 \\
      oracle.price_output_per_mtok=0.6 budget.dollars=2 pairs=RUN_DIR
""",
}

TEMPLATE = """\
$header
== Configuration groups ==
Choose one option of a group with GROUP=OPTION

$APP_CONFIG_GROUPS

== Config ==
Override any field with KEY=VALUE (nested.key=value); after # is the field's help

${rlaif_fields:}
== Flags ==
$FLAGS_HELP
"""


def help_override(config_name: str) -> str:
    """The override that selects this app's help page."""
    return f"hydra/help=rlaif_{config_name}"


def register() -> None:
    """Store the help pages and the ``rlaif_fields`` resolver (idempotent)."""
    OmegaConf.register_new_resolver("rlaif_fields", _fields_resolver, replace=True)
    cs = ConfigStore.instance()
    for name, header in HEADERS.items():
        # the header goes in literally: only ${rlaif_fields:} is an interpolation
        template = TEMPLATE.replace("$header", header.replace("$", "$$"))
        cs.store(group="hydra/help", name=f"rlaif_{name}",
                 node={"app_name": f"rlaif {name}", "header": "", "footer": "", "template": template})


def _fields_resolver(*, _root_: DictConfig) -> str:
    plain = OmegaConf.to_container(_root_, resolve=False)
    plain.pop("hydra", None)
    text = "\n".join(annotated_yaml(plain, RunConfig)) + "\n"
    return text.replace("$", "$$")  # the page goes through string.Template next


def annotated_yaml(node: dict, schema: type | None, indent: int = 0) -> list[str]:
    """``node`` as YAML lines, each field followed by ``# help`` where its dataclass field has one."""
    helps, types = field_help(schema), _field_types(schema)
    pad, lines = " " * indent, []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            lines.append(_comment(f"{pad}{key}:", helps.get(key)))
            lines += annotated_yaml(value, schema_of(value, types.get(key)), indent + 2)
            continue
        first, *rest = OmegaConf.to_yaml({key: value}).rstrip("\n").splitlines()
        if rest and helps.get(key):  # a value over several lines: its help goes on a line above it
            lines.append(f"{pad}# {' '.join(helps[key].split())}")
            lines += [pad + line for line in [first, *rest]]
            continue
        lines.append(_comment(pad + first, helps.get(key)))
        lines += [pad + line for line in rest]
    return lines


def field_help(schema: type | None) -> dict[str, str]:
    """``{field name: help text}`` of a dataclass (fields without help are left out)."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    return {f.name: f.metadata["help"] for f in dataclasses.fields(schema) if f.metadata.get("help")}


def schema_of(node: dict, declared: Any) -> type | None:
    """The dataclass that describes ``node``: its ``_target_``'s ``Config``, else the declared type."""
    if node.get("_target_"):
        try:
            return getattr(registry.resolve_class(node, "help"), "Config", None)
        except registry.ConfigError:
            return None
    return declared if dataclasses.is_dataclass(declared) else None


def _field_types(schema: type | None) -> dict[str, Any]:
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    try:
        return typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 -- a hint that does not resolve: no nested help, nothing else lost
        return {}


def _comment(line: str, help_text: str | None) -> str:
    if not help_text:
        return line
    return f"{line:<{COMMENT_COLUMN}} # {' '.join(help_text.split())}"
