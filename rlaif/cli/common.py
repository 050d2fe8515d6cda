"""What the Hydra subcommands (``rlaif run``, ``rlaif bench-oracle``) share: the environment they set,
the config folder, secret redaction before a config is saved, and running a ``@hydra.main`` app
the way the ``rlaif`` command does (its exit code returned, not raised).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback

from rlaif.cli import help
from rlaif.paths import CONF_DIR as _CONF
from rlaif.run.startup import SECRET_WORDS  # one list of secret-looking key names

CONF_DIR = str(_CONF)
SHELL_COMPLETION_FLAGS = ("-sc", "--shell-completion")


def setup_env() -> None:
    """Offline, quiet defaults for the libraries under the loop (each one can still be set by the user)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def job_threads() -> int | None:
    """Torch ``threads`` of one job of a sweep under a parallel launcher (``threads=${rlaif.job_threads:}``,
    added by :func:`with_launcher_overrides`), from the launcher's config: joblib's ``n_jobs`` share this machine's
    cores; a Ray job has its ``ray.remote.num_cpus``, a submitit (SLURM) job its ``cpus_per_task``.
    None (all cores) when the launcher says nothing."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if n_jobs is not None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 1 if int(n_jobs) <= 0 else max(1, cores // int(n_jobs))  # joblib: n_jobs <= 0 is "all cores"
    cpus = (OmegaConf.select(launcher, "ray.remote.num_cpus", default=None)
            or OmegaConf.select(launcher, "cpus_per_task", default=None) or os.environ.get("SLURM_CPUS_PER_TASK"))
    return max(1, int(float(cpus))) if cpus else None


class PinSweepDir(Callback):
    """Hydra callback added by :func:`with_launcher_overrides`: the sweep directory, resolved once in the
    launching process (its ``${now:}``, a relative path against this working directory), is what every job
    composes, whatever the working directory and clock of the process that runs it (a Ray worker starts
    in its raylet's directory; joblib and submitit jobs recompose the config later)."""

    def on_multirun_start(self, config: Any, **kw: Any) -> None:
        from omegaconf import open_dict, read_write

        sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
        quoted = "'" + sweep_dir.replace("\\", "\\\\").replace("'", "\\'") + "'"
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted}")
            config.hydra.sweep.dir = sweep_dir


def with_launcher_overrides(args: list[str]) -> list[str]:
    """A sweep under a launcher that runs its jobs in other processes (``-m hydra/launcher=joblib|ray|...``):
    the sweep directory pinned (:class:`PinSweepDir`) and, without ``threads=``, each job's torch threads
    its share of the cores (:func:`job_threads`), not all of them."""
    at = next((i for i, a in enumerate(args) if a.lstrip("+").startswith("hydra/launcher=")), None)
    if at is None or args[at].partition("=")[2] == "basic" or not {"-m", "--multirun"} & set(args):
        return args
    added = ["+hydra.callbacks.rlaif_pin_sweep_dir={_target_:rlaif.cli.common.PinSweepDir}"]
    if not any(a.lstrip("+~").startswith("threads=") for a in args):
        added.append("threads=${rlaif.job_threads:}")
    return args[:at + 1] + added + args[at + 1:]


class JobFailed(CompactHydraException):
    """A job of a sweep that failed in a launcher's worker process. Raised there instead of ``SystemExit``
    (which would kill a Ray worker, or stop joblib's other jobs): the launcher records it, the sweep's
    other jobs run to their end, and Hydra then prints the first failure in this one line."""


def _under_launcher() -> bool:
    """In a job of a multirun that a launcher other than Hydra's basic one runs (another process)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    return hc.mode == RunMode.MULTIRUN and not str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher")


def _job_failed(e: BaseException) -> JobFailed:
    from hydra.core.hydra_config import HydraConfig

    from rlaif.errors import user_error_message

    hc = HydraConfig.get()
    shown = " ".join(o for o in hc.overrides.task if not o.startswith(("threads=$", "threads=${")))
    cause = e.__context__ if isinstance(e, SystemExit) else e
    why = (user_error_message(cause) or f"{type(cause).__name__}: {cause}") if cause is not None else (
        f"exit status {e.code}" if isinstance(e, SystemExit) else str(e))
    return JobFailed(f"rlaif: error: job #{hc.job.num} ({shown}) failed: {why} [run directory "
                     f"{hc.runtime.output_dir}; the sweep's other jobs ran on]")


def launcher_job(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The task function of ``@hydra.main``, for launchers that run each job in another process (joblib,
    Ray, submitit): a failure raises :class:`JobFailed` (its traceback printed in the job's own output)
    instead of exiting that process. Under Hydra's basic launcher and for a single run, unchanged."""
    import functools

    @functools.wraps(task)
    def job(cfg: Any) -> Any:
        try:
            return task(cfg)
        except (Exception, SystemExit) as e:
            if not _under_launcher() or isinstance(e, JobFailed) or (isinstance(e, SystemExit) and not e.code):
                raise
            if not isinstance(e, SystemExit):
                import traceback

                traceback.print_exc()
            raise _job_failed(e) from None

    return job


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rlaif.job_threads"):
        OmegaConf.register_new_resolver("rlaif.job_threads", job_threads)


register_resolvers()  # at import: a launcher's worker process unpickles the task function, importing this module


# hydra/launcher=NAME -> the plugin, the library it drives, the package that brings both (rlaif[cluster] has all)
_JOBLIB = ("hydra_plugins.hydra_joblib_launcher.joblib_launcher", "joblib", "hydra-joblib-launcher")
_RAY = ("hydra_plugins.hydra_ray_launcher.ray_launcher", "ray", "hydra-ray-launcher")
_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher.submitit_launcher", "submitit", "hydra-submitit-launcher")
LAUNCHER_PLUGINS = {"joblib": _JOBLIB, "rlaif_joblib": _JOBLIB, "ray": _RAY, "ray_aws": _RAY, "rlaif_ray": _RAY,
                    "submitit_local": _SUBMITIT, "submitit_slurm": _SUBMITIT, "rlaif_slurm": _SUBMITIT}


def missing_launcher(args: list[str]) -> str | None:
    """One line when ``hydra/launcher=NAME`` names a launcher whose plugin is not installed (Hydra itself
    would only list the launchers it has, not where the missing one comes from)."""
    import importlib

    for a in args:
        key, _, name = a.lstrip("+").partition("=")
        if key != "hydra/launcher" or name not in LAUNCHER_PLUGINS:
            continue
        *modules, package = LAUNCHER_PLUGINS[name]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                return (f"hydra/launcher={name} needs the {package} plugin ({e}); install the launchers with: "
                        "pip install 'rlaif[cluster]'")
    return None


def redact(obj):
    """Drop any literal secret from a config before it is saved (keys are read from the env), and the
    password of any PostgreSQL URL in it (``ledger_cache=``)."""
    if isinstance(obj, str):
        from rlaif.labels.shared_store import redact_url

        return redact_url(obj)
    if isinstance(obj, dict):
        return {k: ("<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) and not str(k).endswith("_env")
                    and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def run_hydra(app: Callable[[], Any], prog: str, args: list[str], config_name: str) -> int:
    """Run a ``@hydra.main`` app on ``args``; returns its exit code (Hydra itself exits, e.g. after --help).

    Hydra reads ``sys.argv``. Its program name is ``prog`` (``rlaif run``: usage lines and errors name
    the subcommand), except for shell completion, where it must be the bare ``rlaif`` command that the
    installed completion script registers and calls back (see :mod:`rlaif.cli.completion`).
    """
    if SHELL_COMPLETION_FLAGS[0] in args or SHELL_COMPLETION_FLAGS[1] in args:
        prog = "rlaif"
    elif "-h" in args or "--help" in args:  # the help page that lists each config field's help text
        help.register()
        # beside the user's overrides: Hydra's argparse takes its overrides as one run of words
        at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
        args = args[:at] + [help.help_override(config_name)] + args[at:]
    missing = missing_launcher(list(args))
    if missing:
        print(f"rlaif: error: {missing}", file=sys.stderr)
        return 2
    sys.argv = [prog] + with_launcher_overrides(list(args))
    try:
        app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (2 if e.code else 0)
    return 0
