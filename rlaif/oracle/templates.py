"""Judge prompt templates: files under ``prompts/`` (one per task rubric), rendered for a pair.

Template format (plain text, the whole user message sent to the judge)::

    <rubric: what makes one response better>

    <<<PROMPT>>>
    {prompt}
    <<<RESPONSE A>>>
    {response_a}
    <<<RESPONSE B>>>
    {response_b}
    <<<END>>>

    <answer format: one comparison sentence, then a final line "Preferred: A" or "Preferred: B">

The four marker lines are mandatory and each placeholder sits alone on the line after its marker,
so the pair can always be read back out of a rendered prompt (:func:`extract`; the judge server
uses it). A text that itself contains ``<<<`` has it written as ``<< <`` when rendered, so no
completion can forge a marker and move the boundaries. Placeholders are substituted in one pass,
so a completion containing ``{response_b}`` stays literal text.

Two more kinds, for templates people already have (same content hash into the judge's identity):

- **Jinja2 chat messages**: a ``.yaml`` / ``.yml`` / ``.json`` file holding a list of messages (or
  ``messages:`` with one), each ``{role: system|user|assistant, content: ...}``, the contents Jinja2
  templates with ``{{ prompt }}``, ``{{ response_a }}`` and ``{{ response_b }}`` (the same names as
  above). The answer is read as above (a final ``Preferred: A|B`` line).
- **an alpaca_eval-style annotator folder** (``configs.yaml`` + its prompt file): see
  :mod:`rlaif.oracle.annotator`; its parser reads the answers, its completion settings fill the
  judge's ``model`` / ``max_tokens`` / ``temperature`` where those are left at their defaults.

Which template a judge uses: its own ``template:`` setting (a name under ``prompts/``, a file path or
an annotator folder), else the task's ``rubric``, else ``helpfulness``. A template that lacks a
placeholder is refused at start-up, in one line naming the expected placeholders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.oracle import parsing
from rlaif.oracle.annotator import Annotator, is_annotator_dir, load_annotator
from rlaif.paths import PROMPTS_DIR

DEFAULT = "helpfulness"

M_PROMPT, M_A, M_B, M_END = "<<<PROMPT>>>", "<<<RESPONSE A>>>", "<<<RESPONSE B>>>", "<<<END>>>"
_SLOTS = {"{prompt}": M_PROMPT, "{response_a}": M_A, "{response_b}": M_B}
_PLACEHOLDER = re.compile(r"\{prompt\}|\{response_a\}|\{response_b\}")
CHAT_VARIABLES = ("prompt", "response_a", "response_b")
CHAT_SUFFIXES = (".yaml", ".yml", ".json")
EXPECTED = ("a plain template needs {prompt}, {response_a} and {response_b}, each alone on the line after "
            f"{M_PROMPT} / {M_A} / {M_B}, then {M_END}; a chat template (.yaml/.json messages) uses "
            "{{ prompt }}, {{ response_a }}, {{ response_b }}; an alpaca_eval folder {instruction}, {output_1}, "
            "{output_2}")
_SENTINELS = ("\x00P\x00", "\x00A\x00", "\x00B\x00")
_PAIR = re.compile(re.escape(M_PROMPT) + r"\n(.*?)\n" + re.escape(M_A) + r"\n(.*?)\n" + re.escape(M_B)
                   + r"\n(.*?)\n" + re.escape(M_END), re.S)


class TemplateError(RlaifError, ValueError):
    """A template that is missing, or that the judge server could not read a pair back out of."""


def escape(text: str) -> str:
    """Neutralise marker look-alikes inside a text (``<<<`` -> ``<< <``)."""
    while "<<<" in text:
        text = text.replace("<<<", "<< <")
    return text


@dataclass(frozen=True)
class Template:
    """A judge prompt. ``kind``: ``markers`` (the plain format above; ``text`` is the file), ``chat`` (Jinja2
    messages; ``text`` is the file) or ``alpaca_eval`` (``text``: the annotator's canonical source). The
    content hash of ``text`` is part of the judge's identity."""

    name: str
    text: str
    kind: str = "markers"
    chat: tuple[tuple[str, str], ...] = ()  # (role, content source) of chat / alpaca_eval templates
    parser: str = "verdict"
    parser_kwargs: str = "{}"
    settings: tuple[tuple[str, Any], ...] = ()  # judge config fields it sets (alpaca_eval completions_kwargs)

    @property
    def hash(self) -> str:
        """Content hash: part of a judge's identity (editing a template re-keys the ledger)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def header(self) -> str:
        """The rubric part before the pair (used to tell templates apart in a rendered prompt)."""
        return self.text.split(M_PROMPT, 1)[0].strip() if self.kind == "markers" else ""

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        """The whole prompt as one text (a chat template's messages joined by blank lines)."""
        if self.kind != "markers":
            return "\n\n".join(m["content"] for m in self.messages(prompt, response_a, response_b))
        values = {"{prompt}": escape(prompt), "{response_a}": escape(response_a), "{response_b}": escape(response_b)}
        return _PLACEHOLDER.sub(lambda m: values[m.group(0)], self.text)

    def messages(self, prompt: str, response_a: str, response_b: str) -> list[dict[str, str]]:
        """The chat messages sent to the judge for a pair as shown."""
        if self.kind == "markers":
            return [{"role": "user", "content": self.render(prompt, response_a, response_b)}]
        values = (escape(prompt), escape(response_a), escape(response_b))
        if self.kind == "chat":
            env = _jinja()
            return [{"role": role, "content": env.from_string(src).render(dict(zip(CHAT_VARIABLES, values)))}
                    for role, src in self.chat]
        slots = dict(zip(("{instruction}", "{output_1}", "{output_2}"), values))
        return [{"role": role, "content": _ALPACA.sub(lambda m: slots[m.group(0)], src)} for role, src in self.chat]

    def parse(self, text: str | None, finish_reason: str | None = None) -> parsing.Verdict:
        """The verdict of an answer (in the order shown), with this template's parser."""
        if self.kind == "alpaca_eval":
            return parsing.parse_alpaca_eval(text, self.parser, json.loads(self.parser_kwargs),
                                             finish_reason=finish_reason)
        return parsing.parse_verdict(text, finish_reason=finish_reason)

    def extract_pair(self, content: str) -> tuple[str, str, str]:
        """(prompt, response_a, response_b) read back out of the last user message this template rendered."""
        if self.kind == "markers":
            return extract(content)
        return _reverse(self, content)

    def configure(self, cfg: Any) -> Any:
        """A judge's config with this template's settings in the fields it leaves at their defaults."""
        if not self.settings or not dataclasses.is_dataclass(cfg):
            return cfg
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        fill = {k: v for k, v in self.settings if k in fields and getattr(cfg, k) == fields[k].default}
        return dataclasses.replace(cfg, **fill) if fill else cfg


_ALPACA = re.compile(r"\{instruction\}|\{output_1\}|\{output_2\}")


def _jinja() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def _reverse(template: Template, content: str) -> tuple[str, str, str]:
    """Read the pair out of a rendered user message by matching it against the template rendered with
    sentinels (each placeholder a group; a repeated one must repeat the same text)."""
    users = [m["content"] for m in template.messages(*_SENTINELS) if m["role"] == "user"]
    src = users[-1] if users else ""
    parts = re.split("(" + "|".join(map(re.escape, _SENTINELS)) + ")", src)
    seen, pattern = set(), ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
            continue
        group = "pab"[_SENTINELS.index(part)]
        pattern += f"(?P={group})" if group in seen else f"(?P<{group}>.*?)"
        seen.add(group)
    m = re.fullmatch(pattern, content, re.S) if seen == {"p", "a", "b"} else None
    if m is None:
        raise TemplateError(f"the judge prompt is not one the template {template.name!r} rendered (or its last user "
                            "message lacks a placeholder)")
    return m.group("p"), m.group("a"), m.group("b")


def _check(name: str, text: str) -> None:
    for ph, marker in _SLOTS.items():
        if text.count(ph) != 1:
            raise TemplateError(f"judge template {name!r} {'lacks' if ph not in text else 'repeats'} {ph}: {EXPECTED}")
        if f"{marker}\n{ph}\n" not in text:
            raise TemplateError(f"judge template {name!r}: {ph} must sit alone on the line after {marker}: {EXPECTED}")
    if f"{{response_b}}\n{M_END}" not in text:
        raise TemplateError(f"judge template {name!r}: {M_END} must follow {{response_b}} on its own line: {EXPECTED}")


@lru_cache(maxsize=64)
def _load_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load(name_or_path: str) -> Template:
    """A template by name (``prompts/<name>.txt`` or ``.yaml``), by file path (a plain ``.txt`` or a chat
    ``.yaml``/``.yml``/``.json``), or an alpaca_eval-style annotator folder."""
    p = Path(name_or_path).expanduser()
    if is_annotator_dir(p):
        return _from_annotator(load_annotator(p.resolve()))
    if not (p.suffix and p.is_file()):
        p = next((q for q in (PROMPTS_DIR / f"{name_or_path}{s}" for s in (".txt", *CHAT_SUFFIXES)) if q.exists()),
                 PROMPTS_DIR / f"{name_or_path}.txt")
    if not p.exists():
        known = sorted(f.stem for f in PROMPTS_DIR.glob("*.txt"))
        raise TemplateError(f"judge template {name_or_path!r} not found (neither a file, an annotator folder with "
                            f"configs.yaml, nor one of {', '.join(known)} in {PROMPTS_DIR})")
    text = _load_file(str(p.resolve()))
    if p.suffix.lower() in CHAT_SUFFIXES:
        return Template(name=p.stem, text=text, kind="chat", chat=_chat_messages(name_or_path, text))
    _check(name_or_path, text)
    return Template(name=p.stem, text=text)


def _from_annotator(a: Annotator) -> Template:
    return Template(name=a.name, text=a.source(), kind="alpaca_eval", chat=a.messages, parser=a.parser,
                    parser_kwargs=a.parser_kwargs, settings=a.settings)


def _chat_messages(name: str, text: str) -> tuple[tuple[str, str], ...]:
    """The (role, content) of a Jinja2 chat template file, checked: roles, every variable used, no other."""
    import yaml
    from jinja2 import TemplateSyntaxError, meta

    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise TemplateError(f"chat template {name!r} is not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    msgs = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
            for m in msgs):
        raise TemplateError(f"chat template {name!r}: expected a list of messages (or messages: [...]), each "
                            "{role: system|user|assistant, content: TEXT}")
    used: set[str] = set()
    env = _jinja()
    for m in msgs:
        try:
            used |= meta.find_undeclared_variables(env.parse(m["content"]))
        except TemplateSyntaxError as e:
            raise TemplateError(f"chat template {name!r}: Jinja2 syntax error line {e.lineno}: {e.message}") from None
    missing, unknown = [v for v in CHAT_VARIABLES if v not in used], sorted(used - set(CHAT_VARIABLES))
    if missing or unknown or not any(m["role"] == "user" for m in msgs):
        what = "; ".join(x for x in (missing and f"lacks {', '.join('{{ ' + v + ' }}' for v in missing)}",
                                     unknown and f"uses unknown {', '.join(unknown)}",
                                     not any(m['role'] == 'user' for m in msgs) and "has no user message") if x)
        raise TemplateError(f"chat template {name!r} {what}: {EXPECTED}")
    return tuple((m["role"], m["content"]) for m in msgs)


def choose(template: str | None, task: Any = None) -> Template:
    """The judge's own ``template`` setting, else the task's rubric, else the default."""
    name = template or getattr(task, "rubric", None) or DEFAULT
    return load(name)


def available() -> list[Template]:
    return [load(f.stem) for f in sorted(PROMPTS_DIR.glob("*.txt"))]


def extract(rendered: str) -> tuple[str, str, str]:
    """(prompt, response_a, response_b) read back out of a rendered judge prompt.

    Uses the first marker block; texts come back as rendered (with ``<<<`` escaped).
    """
    m = _PAIR.search(rendered)
    if m is None:
        raise TemplateError("the judge prompt does not contain the pair markers "
                            f"{M_PROMPT} / {M_A} / {M_B} / {M_END}, each on its own line")
    return m.group(1), m.group(2), m.group(3)


def detect(rendered: str) -> str | None:
    """Name of the ``prompts/`` template whose rubric starts this rendered prompt, if any."""
    head = rendered.split(M_PROMPT, 1)[0].strip()
    for t in available():
        if t.header == head:
            return t.name
    return None
