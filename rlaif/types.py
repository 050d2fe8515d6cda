"""The data as it flows through the loop.

prompt -> completion (text, token ids, log-prob) -> pair -> label -> preference row, and the
:class:`Spend` a label costs.

Token ids travel with every completion, from generation to scoring to DPO, so nothing is
ever re-tokenised behind the user's back.

Orientation lives in one place: a :class:`Label` is always in its pair's own (a, b) order, and
:meth:`Label.flipped` / :meth:`Label.oriented` are the only ways to express it for the pair the
other way round (a swapped showing, the reversed pair of a shared request).

:func:`canonical_json` is the one canonical JSON text of the package (content hashes, ledger
columns, run-state seeds and fingerprints).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys (anything JSON cannot write as its ``str``): equal values, equal text."""
    if type(obj) is list and set(map(type, obj)) <= {int}:  # token ids: the same text json.dumps writes, faster
        return "[" + ",".join(map(str, obj)) + "]"
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(canonical_json(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Prompt:
    """A prompt as the policy sees it: its text and the exact token ids fed to the model.

    A chat prompt also keeps its ``messages`` (``(role, content)`` turns, up to the user turn the
    policy answers): ``token_ids`` are then the chat template's rendering and ``text`` the readable
    text the judge sees (the last user message). Plain prompts have none and serialise as before.
    """

    id: str
    text: str
    token_ids: tuple[int, ...]
    messages: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)

    def chat(self) -> list[dict] | None:
        """The messages in the chat format ([{role, content}, ...]); None for a plain prompt."""
        return None if self.messages is None else [{"role": r, "content": c} for r, c in self.messages]

    def to_dict(self) -> dict:
        d = {"id": self.id, "text": self.text, "token_ids": list(self.token_ids)}
        if self.messages is not None:
            d["messages"] = self.chat()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Prompt":
        msgs = d.get("messages")
        return cls(id=d["id"], text=d["text"], token_ids=tuple(d["token_ids"]),
                   messages=None if msgs is None else tuple((m["role"], m["content"]) for m in msgs))


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of a prompt.

    ``logprob`` is log pi(y|x) summed over completion tokens only (prompt tokens excluded),
    under the raw model (no temperature), as given by the generator that sampled it.
    """

    prompt: Prompt
    text: str
    token_ids: tuple[int, ...]
    logprob: float | None = None
    token_logprobs: tuple[float, ...] | None = None
    source: str = "policy"  # "policy" (current weights) or "reference"
    # the policy version (``Policy.version``) whose weights sampled it, where the generator knows it
    # (the vLLM backends); runtime provenance only: not serialised, not part of equality, so saved
    # pairs, ledgers and preferences are the same bytes as without it
    weight_version: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """Identity of (prompt tokens, completion tokens): the cache key for log-probs."""
        return _digest(list(self.prompt.token_ids), list(self.token_ids))

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "logprob": self.logprob,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict, prompt: Prompt) -> "Completion":
        return cls(prompt=prompt, text=d["text"], token_ids=tuple(d["token_ids"]),
                   logprob=d.get("logprob"), source=d.get("source", "policy"))


@dataclass
class Pair:
    """Two completions of one prompt, to be compared by the oracle.

    ``scores`` holds what the acquisition function measured (entropy of the prompt, implicit
    rewards of a and b, certainty...), so the report can characterise acquired data.
    """

    prompt: Prompt
    a: Completion
    b: Completion
    round: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.a.prompt.token_ids != self.prompt.token_ids or self.b.prompt.token_ids != self.prompt.token_ids:
            raise ValueError("both completions of a pair must continue the pair's prompt")

    @functools.cached_property
    def id(self) -> str:
        """Content identity of the pair in the order (a, b) (computed once: the pair is immutable)."""
        return _digest(list(self.prompt.token_ids), list(self.a.token_ids), list(self.b.token_ids))

    @property
    def identical(self) -> bool:
        return self.a.token_ids == self.b.token_ids

    def swapped(self) -> "Pair":
        return Pair(self.prompt, self.b, self.a, self.round, dict(self.scores))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "round": self.round,
            "prompt": self.prompt.to_dict(),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Pair":
        p = Prompt.from_dict(d["prompt"])
        return cls(p, Completion.from_dict(d["a"], p), Completion.from_dict(d["b"], p),
                   d.get("round", 0), dict(d.get("scores", {})))


class Outcome(str, enum.Enum):
    """A judge's verdict on a pair, always expressed in the pair's own (a, b) order."""

    A = "A"
    B = "B"
    TIE = "tie"
    INVALID = "invalid"

    @property
    def decisive(self) -> bool:
        return self in (Outcome.A, Outcome.B)

    def flipped(self) -> "Outcome":
        return {Outcome.A: Outcome.B, Outcome.B: Outcome.A}.get(self, self)


@dataclass
class Label:
    """What an oracle said about one pair, with everything it cost.

    ``outcome`` is in the pair's original order even when the judge was shown it swapped
    (``swapped=True``). An answer that could not be parsed is ``INVALID`` with a ``reason``:
    it is never turned into a side.
    """

    outcome: Outcome
    reason: str | None = None
    p_a: float | None = None  # P(a preferred), where the judge gives a probability
    raw: str | None = None  # the judge's raw output
    swapped: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # US dollars
    latency: float = 0.0  # seconds
    attempts: int = 1
    cached: bool = False  # answered from the ledger at no cost
    judge: str = ""
    # why the judge's answer ended, as its server said ("stop", "length" = cut off at max_tokens, ...);
    # None where unknown or not a generation. Both-orders answers: one per order, comma-separated.
    finish_reason: str | None = None
    # a composite judge's (panel, cascade) answers it was made of, each in this pair's order: the
    # ledger keeps each as its own row with its own cost (this label's cost is their sum)
    parts: tuple["Part", ...] = ()

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        if self.outcome is Outcome.INVALID and not self.reason:
            self.reason = "unspecified"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Label":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "parts"})

    @classmethod
    def invalid(cls, reason: str, **kw: Any) -> "Label":
        return cls(outcome=Outcome.INVALID, reason=reason, **kw)

    def flipped(self) -> "Label":
        """The same answer about the pair the other way round: outcome and P(a) flipped, all else kept
        (its parts flipped too, each with its showing, as they are about the pair they are in)."""
        return replace(self, outcome=Outcome(self.outcome).flipped(), p_a=None if self.p_a is None else 1.0 - self.p_a,
                       parts=tuple(p.flipped() for p in self.parts))

    def oriented(self, swapped: bool) -> "Label":
        """The same answer, expressed for a pair shown with ``swapped`` (outcome stays in pair order).

        A label says what the judge answered for the order it was shown: a pair whose own (a, b) is
        the reverse of this label's pair but that was shown in the same order (so its ``swapped``
        differs) gets the flipped outcome. Returns ``self`` where ``swapped`` already matches.
        """
        if self.swapped == swapped:
            return self
        return replace(self.flipped(), swapped=swapped)


@dataclass(frozen=True)
class Part:
    """One judge's answer inside a composite label: its ``role`` (``member`` of a panel, a cascade's
    ``cheap`` / ``cheap_reversed`` / ``expensive``), the judge's identity hash and its own label
    (outcome in the composite label's pair order; ``swapped``: whether that judge saw b first)."""

    role: str
    identity: str
    label: Label

    def flipped(self) -> "Part":
        return Part(self.role, self.identity, replace(self.label.flipped(), swapped=not self.label.swapped))


@dataclass
class Spend:
    """What a call costs (or may cost, when reserved): labels, dollars, tokens."""

    labels: int = 0
    dollars: float = 0.0
    tokens: int = 0

    def __add__(self, o: "Spend") -> "Spend":
        return Spend(self.labels + o.labels, self.dollars + o.dollars, self.tokens + o.tokens)


def preference_row(pair: Pair, label: Label) -> dict | None:
    """A labelled pair as a row in TRL's preference format (prompt / chosen / rejected).

    One fixed schema for every arm, judge and task, so the rows of any runs concatenate (``datasets``):
    the same keys in the same order every time; ``scores`` (what the arm measured, different per arm)
    as one JSON object in a string; ``p_a`` always a float (NaN where the judge gives no probability);
    ``cost`` a float. A chat task's rows are TRL's conversational format (``prompt`` the messages,
    ``chosen`` / ``rejected`` one assistant message each). Token ids ride along so DPO trains on
    exactly the tokens that were sampled and scored. Ties and invalid labels make no row (None).
    """
    if not label.outcome.decisive:
        return None
    chosen, rejected = (pair.a, pair.b) if label.outcome is Outcome.A else (pair.b, pair.a)
    chat = pair.prompt.chat()
    turn = (lambda c: c.text) if chat is None else (lambda c: [{"role": "assistant", "content": c.text}])
    return {
        "prompt": pair.prompt.text if chat is None else chat,
        "chosen": turn(chosen),
        "rejected": turn(rejected),
        "prompt_input_ids": list(pair.prompt.token_ids),
        "chosen_input_ids": list(chosen.token_ids),
        "rejected_input_ids": list(rejected.token_ids),
        "pair_id": pair.id,
        "prompt_id": pair.prompt.id,
        "round": pair.round,
        "scores": canonical_json(dict(pair.scores)),
        "outcome": label.outcome.value,
        "p_a": float("nan") if label.p_a is None else float(label.p_a),
        "swapped": label.swapped,
        "judge": label.judge,
        "cost": float(label.cost),
        "tokens_in": label.tokens_in,
        "tokens_out": label.tokens_out,
        "cached": label.cached,
    }
