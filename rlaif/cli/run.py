"""``rlaif run``: the Hydra app around :func:`rlaif.loop.run`.

Hydra's output directory is the run directory (``resume=RUN_DIR`` continues an earlier one).
Configuration errors are reported in one line naming the key, before any work starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from rlaif.paths import CONF_DIR as _CONF

CONF_DIR = str(_CONF)
from rlaif.run.startup import SECRET_WORDS  # one list of secret-looking key names


def _setup_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")


def redact(obj):
    """Drop any literal secret from a config before it is saved (keys are read from the env)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if any(w in str(k).lower() for w in SECRET_WORDS) and not str(k).endswith("_env")
                    and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _print_summary(s: dict) -> None:
    from rlaif.run.evaluation import winrate_text

    spend, ev = s["spend"], s.get("eval_spend") or {}
    print("\n" + "=" * 72)
    print(f"rlaif run finished: arm={s['arm']} oracle={s['oracle']} policy={s['policy']} seed={s['seed']}")
    print(f"  rounds {s['rounds']}, labels {s['labels']} ({s['decisive_labels']} decisive), stopped by: {s['stopped_by']}")
    print(f"  spend on training labels: ${spend['dollars']:.4f}, {spend['tokens']} judge tokens")
    print(f"  spend on evaluation:      ${ev.get('dollars', 0.0):.4f}, {ev.get('tokens', 0)} judge tokens "
          f"({ev.get('judgements', 0)} judgements)")
    print(f"  gold win-rate vs reference:   {winrate_text(s, 'gold_winrate')}")
    print(f"  oracle win-rate vs reference: {winrate_text(s, 'oracle_winrate')}")
    if s.get("gold_reward") is not None:
        print(f"  mean gold reward {s['gold_reward']:.3f} (reference {s.get('reference_gold_reward', float('nan')):.3f})")
    if s.get("generations_per_label") is not None:
        print(f"  acquisition: {s['generations_per_label']:.1f} generations/label, "
              f"{s['acquisition_seconds_per_label']:.2f} s/label")
    print(f"  wall time {s['wall_seconds'] / 60:.1f} min")
    print(f"  run directory: {s['run_dir']}")
    print("=" * 72)


def main(argv: list[str] | None = None) -> int | None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rlaif.config import register

    _setup_env()
    register()
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the vLLM engine processes are shut down
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
    def app(cfg) -> float | None:
        from rlaif.errors import user_error_message
        from rlaif.loop import run, validate
        from rlaif.run.state import atomic_write_text
        from rlaif.run.startup import open_run_dir, write_hydra_record

        logging.getLogger("httpx").setLevel(logging.WARNING)
        held = None
        try:
            # check first, write after: a refused start leaves the run's config.json, config.yaml and
            # .hydra/ as they were (Hydra's own .hydra/ writing is off: hydra.output_subdir=null)
            validate(cfg)
            hydra_cfg = HydraConfig.get()
            held = open_run_dir(cfg, hydra_cfg.runtime.output_dir)  # exists, writable, not in use, config unchanged
            run_dir = held.path
            plain = redact(OmegaConf.to_container(cfg, resolve=True))
            atomic_write_text(run_dir / "config.json", json.dumps(plain, indent=2, default=str))
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(plain)))
            if hydra_cfg.output_subdir is None:
                write_hydra_record(hydra_cfg, plain)
            summary = run(cfg, run_dir)
        except Exception as e:  # one clear line for the errors users cause; full trace otherwise
            msg = user_error_message(e, held.path if held is not None else None)
            if msg is None:
                raise
            print(f"rlaif: error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            if held is not None:
                held.release()
        _print_summary(summary)
        return summary.get("gold_winrate")

    try:
        app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (2 if e.code else 0)
    return 0
