"""Start-up checks of ``rlaif run``: everything a user can get wrong is refused in one line, before any
label is bought and before anything is written into the run directory.

- :func:`check_config` (called by :func:`rlaif.run.build.validate`): unknown keys that ``+key=...``
  added to a typed group, secrets in the config, out-of-range values, a ``trainer.report_to``
  package that is not installed, the modes each group's dataclass checks itself (``__post_init__``);
  then :func:`rlaif.tasks.check_prompt_file`, :func:`check_context`: a prompt file that is missing, a directory
  or not UTF-8, prompts that cannot fit the policy's context;
- :class:`StartupChecks`: a Hydra callback that runs before Hydra creates the output directory or
  writes anything (secrets in the overrides, an output directory that cannot be created);
- :func:`open_run_dir`: the run directory is checked (exists for ``resume=``, writable, not in use,
  a resume's config unchanged) and locked *before* ``config.json`` / ``config.yaml`` / ``.hydra/``
  are written, so a refused start leaves the run's record as it was.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from rlaif.errors import RlaifError
from rlaif.registry import ConfigError
from rlaif.tasks import TaskError

# keys whose values are secrets (rlaif.cli.common.redact drops them from saved configs); *_env keys name an
# environment variable instead and are allowed
SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization", "bearer")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "gsk_", "xai-", "aiza", "ghp_", "gho_", "ghs_", "github_pat_",
                 "glpat-", "r8_", "pplx-", "nvapi-", "bearer ", "key-")
# trainer.report_to: transformers' integration name -> the package(s) it needs (any one of them)
REPORTERS = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",),
             "comet_ml": ("comet_ml",), "azure_ml": ("azureml",), "neptune": ("neptune",),
             "codecarbon": ("codecarbon",), "clearml": ("clearml",), "dagshub": ("dagshub",),
             "flyte": ("flytekit",), "dvclive": ("dvclive",), "swanlab": ("swanlab",), "trackio": ("trackio",),
             "kubeflow": ("kubeflow",)}
RUN_LOCK = ".rlaif-run.lock"


class RunDirError(RlaifError, RuntimeError):
    """The run directory cannot be used (read-only, full, in use)."""


def _dir_error(e: OSError, path: Any) -> RunDirError:
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunDirError(f"the run directory {path} has no space left ({why}): free some space first"
                           + (" (every label bought so far is kept; resume=RUN_DIR continues)"
                              if (Path(path) / "ledger.sqlite").exists() else ""))
    return RunDirError(f"cannot write to the run directory {path} ({why}): make it writable or choose another "
                       "one (hydra.run.dir=...)")


# -- secrets ----------------------------------------------------------------------------------------
def looks_like_secret(value: Any) -> bool:
    """A value that looks like an API key or token (never printed by the checks that use this)."""
    s = str(value).strip()
    if len(s) >= 8 and s.lower().startswith(_KEY_PREFIXES):
        return True
    lower, upper, digit = (any(f(c) for c in s) for f in (str.islower, str.isupper, str.isdigit))
    return len(s) >= 20 and lower and digit and (upper or len(s) >= 32)


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in SECRET_WORDS) and not k.endswith("_env")


def check_secret_value(key: str, value: Any) -> None:
    """Refuse ``key=value`` when it would put a secret into the run's record. The value is never echoed."""
    from rlaif.labels.shared_store import is_pg_url, redact_url, url_password

    last = key.rsplit(".", 1)[-1].lstrip("+~")
    if value in (None, "") or isinstance(value, (dict, list)):
        return
    if is_pg_url(str(value).strip()) and url_password(str(value).strip()):
        raise ConfigError(
            f"{key.lstrip('+~')}={redact_url(str(value).strip())}: a password in a PostgreSQL URL would be saved with "
            f"the run; it was not. Give the URL without it and export PGPASSWORD (or use ~/.pgpass)")
    if last.lower().endswith("_env"):
        s = str(value).strip()
        if not _ENV_NAME.fullmatch(s) or looks_like_secret(s):
            raise ConfigError(
                f"{key} must name an environment variable (e.g. OPENAI_API_KEY), but the value given looks like a "
                f"key itself; it was not saved. Export the key in a variable and pass {key}=THAT_VARIABLE")
    elif _is_secret_key(last):
        raise ConfigError(
            f"{key}: secrets are not accepted as config values (the config is saved with the run); export it in "
            f"an environment variable and name that variable with {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}"
            f"api_key_env=VARIABLE")


def check_secrets(node: Any, prefix: str = "") -> None:
    """Walk a (plain) config and refuse secrets in it (see :func:`check_secret_value`)."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, (dict, list)):
                check_secrets(v, key)
            else:
                check_secret_value(key, v)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_secrets(v, f"{prefix}[{i}]")


def check_overrides(overrides: list[str]) -> None:
    """The command line's ``key=value`` overrides (sweeps ``key=a,b`` too), before Hydra writes any of them."""
    for ov in overrides:
        if ov.startswith("-") or "=" not in ov:
            continue
        key, _, value = ov.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or not value:
            continue
        for v in value.split(","):
            check_secret_value(key, v.strip().strip("'\""))


def redact_override(ov: str) -> str:
    from rlaif.labels.shared_store import redact_url

    key, eq, value = ov.partition("=")
    if eq and (_is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1]) or looks_like_secret(value)):
        return f"{key}=<redacted>"
    return redact_url(ov)  # a password in a PostgreSQL URL


def check_ledger_cache(value: Any) -> None:
    """``ledger_cache=postgresql://...``: a URL that cannot work, or psycopg missing, refused now (the server
    itself is reached when the run's labeler is built, before any label is bought)."""
    from rlaif.labels.ledger import LedgerError
    from rlaif.labels.shared_store import check_pg_url, is_pg_url

    if value in (None, ""):
        return
    if is_pg_url(str(value).strip()):
        try:
            check_pg_url(str(value).strip())
        except LedgerError as e:
            raise ConfigError(str(e)) from None
    elif "://" in str(value):
        raise ConfigError(f"ledger_cache: unsupported URL scheme {str(value).split('://', 1)[0]!r}; give a SQLite "
                          "file path or a postgresql://USER@HOST:PORT/DATABASE URL")


# -- typed groups, ranges ---------------------------------------------------------------------------
def check_unknown_keys(cfg: Any) -> None:
    """``+trainer.betta=0.1`` adds a key Hydra does not check in a typed (dataclass) node: refuse it."""
    from omegaconf import DictConfig, OmegaConf

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, DictConfig):
            return
        typ = OmegaConf.get_type(node)
        if typ is None or not dataclasses.is_dataclass(typ) or "_target_" in node:
            return  # a swappable group (_target_): its class's Config is checked by the registry
        fields = {f.name for f in dataclasses.fields(typ)}
        for k in node.keys():
            key = f"{where}.{k}" if where else str(k)
            if k not in fields:
                import difflib

                near = difflib.get_close_matches(str(k), sorted(fields), n=1)
                raise ConfigError(f"unknown config key {key}" + (f" (did you mean {where + '.' if where else ''}"
                                                                  f"{near[0]}?)" if near else ""))
            walk(node._get_node(k), key)

    if isinstance(cfg, DictConfig):
        walk(cfg, "")


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def check_ranges(cfg: Any) -> None:
    beta = cfg.trainer.beta
    if beta is None or not beta > 0:
        raise ConfigError(f"trainer.beta must be positive (the DPO temperature), got {beta}")
    prompts = cfg.eval.prompts
    if prompts is None or prompts < 1:
        raise ConfigError(f"eval.prompts must be at least 1 (held-out prompts evaluated each round), got {prompts}")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{where}.{k}"
                if k == "concurrency" and isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                    raise ConfigError(f"{key} must be at least 1 (requests in flight at once), got {v}")
                walk(v, key)

    walk(_plain(cfg.oracle), "oracle")
    check_report_to(cfg.trainer.report_to)


def check_report_to(report_to: Any) -> None:
    """Every ``trainer.report_to`` integration is known and its package importable (else training would
    fail after round 1's labels were bought)."""
    names = [report_to] if report_to is None or isinstance(report_to, str) else list(report_to)
    for name in names:
        if name in (None, "none", "all", ""):
            continue
        if name not in REPORTERS:
            raise ConfigError(f"trainer.report_to: unknown integration {name!r}; one of: none, all, "
                              f"{', '.join(sorted(REPORTERS))}")
        if not any(importlib.util.find_spec(m) is not None for m in REPORTERS[name]):
            raise ConfigError(f"trainer.report_to={name}: the package {REPORTERS[name][0]!r} is not installed "
                              f"(pip install {REPORTERS[name][0]}), or set trainer.report_to=none")


def check_schemas(cfg: Any) -> None:
    """Build each typed group's dataclass once: its ``__post_init__`` checks the modes (``trainer.mode``)."""
    from omegaconf import DictConfig, OmegaConf

    for key in cfg if isinstance(cfg, DictConfig) else ():
        node = cfg._get_node(key)
        typ = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if typ is not None and dataclasses.is_dataclass(typ) and "_target_" not in node:
            OmegaConf.to_object(node)


def check_config(cfg: Any) -> None:
    """Cheap checks of the whole config (no model loaded, nothing written)."""
    check_unknown_keys(cfg)
    check_secrets(_plain(cfg))
    check_ledger_cache(cfg.get("ledger_cache") if hasattr(cfg, "get") else None)
    check_ranges(cfg)
    check_schemas(cfg)


# -- prompts, context -------------------------------------------------------------------------------
def model_context(name_or_path: str) -> int | None:
    """The policy's context length in tokens, from its config.json (None when unknown)."""
    from rlaif.assets import resolve_model

    d = Path(resolve_model(name_or_path))
    try:
        c = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for k in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"):
        v = c.get(k)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_context(cfg: Any) -> None:
    """The longest prompt (task.max_prompt_tokens) plus the completion (task.max_new_tokens) fit the
    policy's context (and generator.max_model_len, if set)."""
    ctx = model_context(cfg.policy.name_or_path)
    limit = cfg.generator.get("max_model_len") if hasattr(cfg.generator, "get") else None
    where = f"the policy's context of {ctx} tokens ({cfg.policy.name_or_path})"
    if limit and (ctx is None or limit < ctx):
        ctx, where = limit, f"generator.max_model_len={limit}"
    if ctx is None:
        return
    need = cfg.task.max_prompt_tokens + cfg.task.max_new_tokens
    if need > ctx:
        room = ctx - cfg.task.max_new_tokens
        raise TaskError(f"prompts of up to task.max_prompt_tokens={cfg.task.max_prompt_tokens} tokens + "
                        f"task.max_new_tokens={cfg.task.max_new_tokens} exceed {where}: "
                        + (f"set task.max_prompt_tokens={room} or less (longer prompts are skipped)"
                           if room >= 1 else "lower task.max_new_tokens"))


# -- the run directory ------------------------------------------------------------------------------
class RunDir:
    """A run directory held by this process (an advisory lock, freed by the kernel even on kill -9)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _lock(run_dir: Path) -> RunDir:
    path = run_dir / RUN_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _dir_error(e, run_dir) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirError(f"the run directory {run_dir} is in use by another rlaif run (pid {holder}); wait for "
                          "it to finish or stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return RunDir(run_dir, fd)


def _ledger_free(run_dir: Path) -> None:
    """Another process (an older rlaif, ``rlaif reparse``) holding the run's ledger: refuse now."""
    from rlaif.labels.ledger import LedgerError

    lockpath = run_dir / "ledger.sqlite.lock"
    if not lockpath.exists():
        return
    fd = os.open(lockpath, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        raise LedgerError(f"{run_dir / 'ledger.sqlite'} is in use by another process (pid {holder}): a run ledger "
                          "is written by one process at a time. Wait for it to finish or stop it first.") from None
    finally:
        os.close(fd)


def _check_writable(run_dir: Path) -> None:
    """Write (and remove) a small probe file: a read-only or full directory fails here, before any spend."""
    probe = run_dir / f".rlaif-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _dir_error(e, run_dir) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def open_run_dir(cfg: Any, hydra_output_dir: str | None) -> RunDir:
    """Check the run directory and take it; nothing is written into it before every check passed.

    ``resume=DIR`` must be an rlaif run directory; otherwise the run directory is Hydra's output
    directory. The caller writes the run's config after this returns (and releases it at the end).
    """
    from omegaconf import OmegaConf

    from rlaif import registry
    from rlaif.run.fingerprint import label_fingerprint
    from rlaif.run.state import RunState, RunStateError

    if cfg.resume:
        run_dir = Path(str(cfg.resume)).expanduser()
        if not run_dir.exists():
            raise RunStateError(f"resume={cfg.resume}: no such directory")
        if not (run_dir / "state" / "state.json").is_file():
            raise RunStateError(f"resume={cfg.resume} is not an rlaif run directory (no state/state.json)")
    else:
        run_dir = Path(hydra_output_dir or ".")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _dir_error(e, run_dir) from None
    held = _lock(run_dir)
    try:
        _ledger_free(run_dir)
        _check_writable(run_dir)
        if (run_dir / "state" / "state.json").is_file():  # a resume: its label-changing config must not change
            plain = OmegaConf.to_container(cfg, resolve=True)
            oracle = registry.build(cfg.oracle, "oracle", task=cfg.task)
            RunState.check_unchanged(run_dir, label_fingerprint(plain, oracle))
    except BaseException:
        held.release()
        raise
    return held


def write_hydra_record(hydra_cfg: Any, task_cfg: dict) -> None:
    """What Hydra writes under ``.hydra/`` (``hydra.output_subdir``, null in conf/config.yaml so that Hydra
    does not), written here after the start-up checks, with secrets redacted."""
    from omegaconf import OmegaConf

    from rlaif.run.state import atomic_write_text

    out = Path(hydra_cfg.runtime.output_dir) / ".hydra"
    overrides = [redact_override(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task)]
    hydra = OmegaConf.to_container(hydra_cfg, resolve=False)
    hydra["overrides"]["task"] = overrides
    job = hydra.get("job") or {}
    if job.get("override_dirname"):
        job["override_dirname"] = ",".join(redact_override(o) for o in str(job["override_dirname"]).split(","))
    for name, obj in (("config.yaml", task_cfg), ("hydra.yaml", {"hydra": hydra}), ("overrides.yaml", overrides)):
        atomic_write_text(out / name, OmegaConf.to_yaml(OmegaConf.create(obj)))


class StartupChecks(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): refuses, before Hydra creates the output
    directory or writes ``multirun.yaml``, overrides that hold a secret and an output directory that
    cannot be created. It raises SystemExit (Hydra's callbacks swallow exceptions, not exits)."""

    @staticmethod
    def _refuse(e: BaseException) -> None:
        import sys

        print(f"rlaif: error: {e}", file=sys.stderr)
        raise SystemExit(2)

    def on_run_start(self, config: Any, **kw: Any) -> None:
        try:
            check_overrides(list(config.hydra.overrides.task))
            out = Path(str(config.hydra.run.dir))
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _dir_error(e, out) from None
        except (ConfigError, RunDirError) as e:
            self._refuse(e)

    def on_multirun_start(self, config: Any, **kw: Any) -> None:
        try:
            check_overrides(list(config.hydra.overrides.task))
        except ConfigError as e:
            self._refuse(e)
