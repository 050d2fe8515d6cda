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

Which template a judge uses: its own ``template:`` setting (a name under ``prompts/`` or a file
path), else the task's ``rubric``, else ``helpfulness``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.paths import PROMPTS_DIR

DEFAULT = "helpfulness"

M_PROMPT, M_A, M_B, M_END = "<<<PROMPT>>>", "<<<RESPONSE A>>>", "<<<RESPONSE B>>>", "<<<END>>>"
_SLOTS = {"{prompt}": M_PROMPT, "{response_a}": M_A, "{response_b}": M_B}
_PLACEHOLDER = re.compile(r"\{prompt\}|\{response_a\}|\{response_b\}")
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
    name: str
    text: str

    @property
    def hash(self) -> str:
        """Content hash: part of a judge's identity (editing a template re-keys the ledger)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def header(self) -> str:
        """The rubric part before the pair (used to tell templates apart in a rendered prompt)."""
        return self.text.split(M_PROMPT, 1)[0].strip()

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        values = {"{prompt}": escape(prompt), "{response_a}": escape(response_a), "{response_b}": escape(response_b)}
        return _PLACEHOLDER.sub(lambda m: values[m.group(0)], self.text)


def _check(name: str, text: str) -> None:
    for ph, marker in _SLOTS.items():
        if text.count(ph) != 1:
            raise TemplateError(f"judge template {name!r} must contain {ph} exactly once")
        if f"{marker}\n{ph}\n" not in text:
            raise TemplateError(f"judge template {name!r}: {ph} must sit alone on the line after {marker}")
    if f"{{response_b}}\n{M_END}" not in text:
        raise TemplateError(f"judge template {name!r}: {M_END} must follow {{response_b}} on its own line")


@lru_cache(maxsize=64)
def _load_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load(name_or_path: str) -> Template:
    """A template by name (``prompts/<name>.txt``) or by file path."""
    p = Path(name_or_path).expanduser()
    if not (p.suffix and p.exists()):
        p = PROMPTS_DIR / f"{name_or_path}.txt"
    if not p.exists():
        known = sorted(f.stem for f in PROMPTS_DIR.glob("*.txt"))
        raise TemplateError(f"judge template {name_or_path!r} not found (neither a file nor one of "
                            f"{', '.join(known)} in {PROMPTS_DIR})")
    text = _load_file(str(p.resolve()))
    _check(name_or_path, text)
    return Template(name=p.stem, text=text)


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
