"""``rlaif run``: the Hydra app around :func:`rlaif.loop.run`.

Hydra's output directory is the run directory (``resume=RUN_DIR`` continues an earlier one).
Configuration errors are reported in one line naming the key, before any work starts.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

from rlaif.cli import resume
from rlaif.cli.common import CONF_DIR, launcher_job, run_hydra, setup_env


def print_summary(s: dict) -> None:
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


def start_and_run(cfg) -> dict:
    """Check the config, claim the run directory, save the (redacted) config, run the loop."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rlaif.cli.common import redact
    from rlaif.errors import user_error_message
    from rlaif.loop import run, validate
    from rlaif.run.state import atomic_write_text
    from rlaif.run.startup import open_run_dir, write_hydra_record
    from rlaif.trainer.launch import refuse_distributed_launch

    held = None
    try:
        # check first, write after: a refused start leaves the run's config.json, config.yaml and
        # .hydra/ as they were (Hydra's own .hydra/ writing is off: hydra.output_subdir=null)
        refuse_distributed_launch()  # under accelerate launch / torchrun: trainer.num_processes=N instead
        validate(cfg)
        hydra_cfg = HydraConfig.get()
        held = open_run_dir(cfg, hydra_cfg.runtime.output_dir)  # exists, writable, not in use, config unchanged
        run_dir = held.path
        plain = redact(OmegaConf.to_container(cfg, resolve=True))
        atomic_write_text(run_dir / "config.json", json.dumps(plain, indent=2, default=str))
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(plain)))
        if hydra_cfg.output_subdir is None:
            write_hydra_record(hydra_cfg, plain)
        return run(cfg, run_dir)
    except Exception as e:  # one clear line for the errors users cause; full trace otherwise
        msg = user_error_message(e, held.path if held is not None else None)
        if msg is None:
            raise
        print(f"rlaif: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if held is not None:
            held.release()


def main(argv: list[str] | None = None) -> int:
    import hydra

    from rlaif.config import register

    setup_env()
    register()
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the vLLM engine processes are shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
    @launcher_job  # a failed job of a sweep under joblib/Ray/submitit: reported, the other jobs go on
    def app(cfg) -> float | None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        summary = start_and_run(cfg)
        print_summary(summary)
        return summary.get("gold_winrate")

    args = list(sys.argv[1:] if argv is None else argv)
    try:  # resume=RUN_DIR alone: the run's saved overrides, run in its own directory
        args = resume.rewrite(args)
    except resume.ResumeError as e:
        print(f"rlaif: error: {e}", file=sys.stderr)
        return 2
    return run_hydra(app, "rlaif run", args, "config")
