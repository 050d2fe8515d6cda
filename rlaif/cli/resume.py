"""``rlaif run resume=RUN_DIR``: continue a run from its directory alone.

The command line is rewritten before Hydra composes anything: the run's saved overrides
(``RUN_DIR/.hydra/overrides.yaml``, saved redacted; secrets come back from the environment as at the
first start), then the new ones the user typed, then ``hydra.run.dir=RUN_DIR``, so that Hydra writes
nothing outside the run directory and its log (``RUN_DIR/run.log``) is appended to.

A new override may only change a key that does not change the run's labels (a field whose metadata
says ``{"fingerprint": False}``, :data:`rlaif.config.KEEP`: budgets, evaluation, threads, prices,
concurrency, ...); one that would change them is refused in one line naming the key. An override
that repeats the run's own value (``seed=0`` of a seed-0 run) is accepted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError

MULTIRUN = ("-m", "--multirun")
# Hydra keys a resume may not change: where the run lives, and how many runs there are
HYDRA_FIXED = ("hydra.run.dir", "hydra.sweep.", "hydra.mode", "hydra.job.chdir")


class ResumeError(RlaifError, ValueError):
    """A ``resume=`` command line that cannot continue the run as it was started."""


def _key(ov: str) -> tuple[str, str, str]:
    """``(prefix, key, value)`` of an override ``+key=value`` (prefix ``+``, ``++``, ``~`` or empty)."""
    key, _, value = ov.partition("=")
    bare = key.lstrip("+~")
    return key[: len(key) - len(bare)], bare, value


def resume_dir(args: list[str]) -> str | None:
    """The ``resume=`` value of a command line (None when it does not resume)."""
    for a in args:
        if not a.startswith("-") and "=" in a:
            _, key, value = _key(a)
            if key == "resume" and value.strip("'\"") not in ("", "null", "None"):
                return value.strip("'\"")
    return None


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def is_kept(key: str, saved: dict) -> bool:
    """Whether ``key`` (dotted) may change on resume: a field marked ``{"fingerprint": False}`` on its
    path from :class:`rlaif.config.RunConfig` down, each node's schema its ``_target_``'s ``Config``."""
    from rlaif.config import RunConfig, field_types, schema_of

    if key.startswith("hydra."):
        return not any(key == h or key.startswith(h) for h in HYDRA_FIXED)
    schema: Any = RunConfig
    node: Any = saved
    for k in key.split("."):
        if schema is None or not dataclasses.is_dataclass(schema):
            return False
        f = {f.name: f for f in dataclasses.fields(schema)}.get(k)
        if f is None:
            return False
        if f.metadata.get("fingerprint") is False:
            return True
        node = node.get(k) if isinstance(node, dict) else None
        schema = schema_of(node if isinstance(node, dict) else {}, field_types(schema).get(k))
    return False


def _same_as_saved(ov: str, saved: dict, choices: dict, saved_overrides: list[str]) -> bool:
    """The override repeats what the run already had (its own text, its group choice or its value)."""
    import yaml

    if ov in saved_overrides:
        return True
    prefix, key, value = _key(ov)
    if prefix == "~":
        return False
    if "." not in key and key in choices:
        return str(choices[key]) == value
    node: Any = saved
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    try:
        return yaml.safe_load(value) == node
    except yaml.YAMLError:
        return False


def _saved_value(key: str, saved: dict, choices: dict) -> str:
    if "." not in key and key in choices:
        return str(choices[key])
    node: Any = saved
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return "<unset>"
        node = node[k]
    import json

    return json.dumps(node, default=str)


def _refusal(run_dir: str, ov: str, saved: dict, choices: dict) -> ResumeError:
    prefix, key, value = _key(ov)
    if key.startswith("hydra."):
        return ResumeError(f"refusing to resume {run_dir}: {key} cannot be given with resume= (the run continues "
                           "in its own directory)")
    change = f"{key}: {_saved_value(key, saved, choices)} -> {'<removed>' if prefix == '~' else value}"
    return ResumeError(
        f"refusing to resume {run_dir}: {change} would change its labels ({key} decides which pairs are acquired "
        "or how they are judged); on resume only keys that change no label may be given (budget.labels, "
        "budget.dollars, eval.*, threads, oracle.concurrency, ...): start a new run for this one")


def _check_writable(d: Path) -> None:
    """The run's log is appended to: a read-only run directory is one line now, not Hydra's traceback."""
    from rlaif.run.startup import _dir_error

    try:
        with open(d / "run.log", "a"):
            pass
    except OSError as e:
        raise ResumeError(str(_dir_error(e, d))) from None


def _merge(saved_overrides: list[str], new: list[str]) -> list[str]:
    """The saved overrides with each key the user typed again replaced by the new value (at its place)."""
    out = list(saved_overrides)
    for ov in new:
        prefix, key, value = _key(ov)
        at = next((i for i, s in enumerate(out) if _key(s)[1] == key), None)
        if at is None:
            out.append(ov)
        else:
            old_prefix = _key(out[at])[0]
            out[at] = f"{prefix or old_prefix}{key}={value}" if prefix != "~" else ov
    return out


def _quoted(path: str) -> str:
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rewrite(args: list[str]) -> list[str]:
    """The command line of ``rlaif run ... resume=DIR ...`` as Hydra should see it (see the module doc);
    ``args`` unchanged when it does not resume; only ``hydra.run.dir=DIR`` added when ``DIR`` holds no saved
    overrides (an older run: the start-up check then compares the whole config). Raises :class:`ResumeError`."""
    run_dir = resume_dir(args)
    if run_dir is None:
        return args
    if set(MULTIRUN) & set(args):
        raise ResumeError(f"resume={run_dir} continues one run and cannot be combined with -m (a sweep): resume "
                          "each run directory of the sweep on its own (rlaif run resume=multirun/.../0-random-s0)")
    d = Path(run_dir).expanduser()
    if not d.exists():
        raise ResumeError(f"resume={run_dir}: no such directory")
    if not (d / "state" / "state.json").is_file():
        raise ResumeError(f"resume={run_dir} is not an rlaif run directory (no state/state.json)")
    record = d / ".hydra" / "overrides.yaml"
    if not record.is_file():  # a run too old to have its record: every override typed again, checked at start-up
        _check_writable(d)
        return [a for a in args if _key(a)[1] != "hydra.run.dir"] + [f"hydra.run.dir={_quoted(str(d.resolve()))}"]
    saved_overrides = [str(o) for o in (_load_yaml(record) or []) if not str(o).endswith("=<redacted>")]
    saved = _load_yaml(d / "config.yaml") if (d / "config.yaml").is_file() else {}
    hydra_yaml = d / ".hydra" / "hydra.yaml"
    choices = (_load_yaml(hydra_yaml).get("hydra", {}).get("runtime", {}).get("choices", {})
               if hydra_yaml.is_file() else {})
    flags = [a for a in args if a.startswith("-") or "=" not in a]
    new = [a for a in args if a not in flags]
    for ov in new:
        _, key, value = _key(ov)
        if key == "hydra.run.dir" and Path(value.strip("'\"")).expanduser().resolve() == d.resolve():
            continue
        if key != "resume" and not is_kept(key, saved) and not _same_as_saved(ov, saved, choices, saved_overrides):
            raise _refusal(run_dir, ov, saved, choices)
    _check_writable(d)
    new = [ov for ov in new if _key(ov)[1] != "hydra.run.dir"]
    merged = _merge(saved_overrides, [f"resume={d.resolve()}" if _key(ov)[1] == "resume" else ov for ov in new])
    return flags + merged + [f"hydra.run.dir={_quoted(str(d.resolve()))}"]
