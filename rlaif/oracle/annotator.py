"""An alpaca_eval-style annotator folder as a judge: ``oracle.template=path/to/annotator_dir``.

The folder holds ``configs.yaml``, one annotator by name (alpaca_eval's layout)::

    my_judge:
      prompt_template: "my_judge/prompt.txt"     # relative to the folder's parent (or to the folder)
      fn_completions: "openai_completions"
      completions_kwargs: {model_name: "gpt-4o-mini", max_tokens: 100, temperature: 0}
      fn_completion_parser: "regex_parser"       # or ranking_parser, lmsys_parser
      completion_parser_kwargs:
        outputs_to_match: {1: '(?:^|\\n) ?Output \\(a\\)', 2: '(?:^|\\n) ?Output \\(b\\)'}
      batch_size: 1

and the prompt file, in ChatML (``<|im_start|>system ... <|im_end|>``) or plain text (one user
message), with ``{instruction}``, ``{output_1}``, ``{output_2}``: the task prompt and the two
completions as shown (output_1 is shown first; the parser's preference 1 is A, 2 is B).

What maps: ``completions_kwargs.model_name`` / ``max_tokens`` / ``temperature`` to the judge's
``model`` / ``max_tokens`` / ``temperature`` (where the judge's config leaves them at their
defaults: a value given on the command line wins), the parser and its kwargs. What does not
(another parser, ``batch_size`` above 1, other completion settings, unknown keys) is refused in one
line listing each. Plain data here; :mod:`rlaif.oracle.templates` makes the judge template of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError

CONFIGS = "configs.yaml"
PLACEHOLDERS = ("{instruction}", "{output_1}", "{output_2}")
PARSERS = ("regex_parser", "ranking_parser", "lmsys_parser")
KWARGS = {"model_name": "model", "max_tokens": "max_tokens", "temperature": "temperature"}
COMPLETIONS = ("openai_completions",)  # the judge's own endpoint makes the call (any OpenAI-compatible server)
KNOWN_KEYS = ("prompt_template", "fn_completions", "completions_kwargs", "fn_completion_parser",
              "completion_parser_kwargs", "batch_size")
_CHATML = re.compile(r"<\|im_start\|>(.*?)<\|im_end\|>", re.S)


class AnnotatorError(RlaifError, ValueError):
    """An annotator folder that cannot be used as a judge (what does not map is listed)."""


@dataclass(frozen=True)
class Annotator:
    name: str
    messages: tuple[tuple[str, str], ...]  # (role, content with {instruction} / {output_1} / {output_2})
    parser: str
    parser_kwargs: str  # JSON
    settings: tuple[tuple[str, Any], ...]  # (judge config field, value)

    def source(self) -> str:
        """Everything that changes the judge's answers or their reading, canonical (its hash is the template's)."""
        return json.dumps({"kind": "alpaca_eval", "messages": self.messages, "parser": self.parser,
                           "parser_kwargs": json.loads(self.parser_kwargs), "settings": self.settings},
                          sort_keys=True, default=str)


def is_annotator_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIGS).is_file()


def chatml_messages(text: str) -> list[tuple[str, str]]:
    """ChatML text (``<|im_start|>ROLE\\ncontent<|im_end|>``) as (role, content); plain text: one user message."""
    blocks = _CHATML.findall(text)
    if not blocks:
        return [("user", text.strip())]
    out = []
    for b in blocks:
        role, _, content = b.partition("\n")
        out.append((role.strip(), content.strip()))
    return out


def _entry(folder: Path) -> tuple[str, dict]:
    import yaml

    try:
        configs = yaml.safe_load((folder / CONFIGS).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise AnnotatorError(f"annotator {folder}: cannot read {CONFIGS} ({e})") from None
    if not isinstance(configs, dict) or not configs:
        raise AnnotatorError(f"annotator {folder}: {CONFIGS} holds no annotator (expected NAME: {{prompt_template: ...}})")
    name = folder.name if folder.name in configs else next(iter(configs)) if len(configs) == 1 else None
    if name is None or not isinstance(configs[name], dict):
        raise AnnotatorError(f"annotator {folder}: {CONFIGS} holds {', '.join(map(str, configs))}; name the folder "
                             "after the one to use")
    return str(name), configs[name]


def _unmapped(cfg: dict) -> list[str]:
    """Each setting of the annotator that rlaif's judge cannot honour, as ``key: value (why)``."""
    out = [f"{k} (not an annotator setting rlaif knows)" for k in cfg if k not in KNOWN_KEYS]
    if cfg.get("fn_completions", COMPLETIONS[0]) not in COMPLETIONS:
        out.append(f"fn_completions: {cfg['fn_completions']} (the judge calls its OpenAI-compatible endpoint: "
                   "oracle=openai or oracle=vllm_server with oracle.base_url)")
    kwargs = cfg.get("completions_kwargs") or {}
    out += [f"completions_kwargs.{k}: {v} (only {', '.join(KWARGS)} map)" for k, v in kwargs.items() if k not in KWARGS]
    parser = cfg.get("fn_completion_parser", "regex_parser")
    if parser not in PARSERS:
        out.append(f"fn_completion_parser: {parser} (one of {', '.join(PARSERS)})")
    pk = cfg.get("completion_parser_kwargs") or {}
    allowed = {"regex_parser": ("outputs_to_match",)}.get(parser, ())
    out += [f"completion_parser_kwargs.{k} (not used by {parser})" for k in pk if k not in allowed]
    if parser == "regex_parser" and not {"1", "2"} <= {str(k) for k in (pk.get("outputs_to_match") or {})}:
        out.append("completion_parser_kwargs.outputs_to_match: needs patterns for 1 and 2")
    if int(cfg.get("batch_size", 1) or 1) != 1:
        out.append(f"batch_size: {cfg['batch_size']} (one pair per request)")
    return out


def _prompt_file(folder: Path, cfg: dict) -> Path:
    rel = cfg.get("prompt_template")
    if not rel:
        raise AnnotatorError(f"annotator {folder}: {CONFIGS} has no prompt_template")
    for p in (folder.parent / rel, folder / rel, folder / Path(rel).name):
        if p.is_file():
            return p
    raise AnnotatorError(f"annotator {folder}: prompt_template {rel!r} not found (looked beside {CONFIGS} and in "
                         f"{folder.parent})")


def load_annotator(folder: Path) -> Annotator:
    """The annotator of ``folder`` (see the module doc); :class:`AnnotatorError` naming what does not map."""
    name, cfg = _entry(folder)
    bad = _unmapped(cfg)
    if bad:
        raise AnnotatorError(f"annotator {folder} ({name}): these settings do not map to an rlaif judge: "
                             + "; ".join(bad))
    path = _prompt_file(folder, cfg)
    text = path.read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise AnnotatorError(f"annotator prompt {path}: missing {', '.join(missing)}; an alpaca_eval prompt needs "
                             f"{', '.join(PLACEHOLDERS)} (the task prompt and the two completions)")
    messages = tuple(chatml_messages(text))
    parser = cfg.get("fn_completion_parser", "regex_parser")
    pk = {k: ({str(i): str(p) for i, p in v.items()} if k == "outputs_to_match" else v)
          for k, v in (cfg.get("completion_parser_kwargs") or {}).items()}
    settings = tuple((KWARGS[k], v) for k, v in sorted((cfg.get("completions_kwargs") or {}).items()))
    return Annotator(name=name, messages=messages, parser=parser, parser_kwargs=json.dumps(pk, sort_keys=True),
                     settings=settings)
