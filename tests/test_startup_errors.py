"""Start-up errors: refused in one line (exit 2) before any label is bought, and before anything is
written into the run directory; no secret is ever written; a full or read-only run directory too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import helpers
from helpers import cfg, free_port, rlaif_popen, tiny

RUN = tiny("oracle=simulated", "task.train_prompts=64", "task.eval_prompts=4", "eval.prompts=4", "eval.bootstrap=50",
           "trainer.batch_size=4", "trainer.micro_batch_size=4", "threads=1", "task.gold=null",
           "budget.labels_per_round=8")
KEY = "sk-proj-AbCdEf0123456789GhIjKlMnOpQrStUv"


def rlaif(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``rlaif run`` of :data:`RUN` with ``args``, Hydra's short errors."""
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    args = tuple(a for a in args if not a.startswith("-"))
    return helpers.rlaif("run", *flags, *RUN, *args, timeout=timeout, full_error=False)


def refused(r: subprocess.CompletedProcess, *words: str, lines: int = 1) -> str:
    """Exit 2 with one ``rlaif: error:`` line naming ``words``, no traceback (a changed config on resume
    lists each changed key on a line of its own: ``lines``)."""
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    err = r.stderr.splitlines()
    at = [i for i, x in enumerate(err) if x.startswith("rlaif: error:")]
    assert len(at) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    text = "\n".join(err[at[0]:at[0] + lines])
    assert at[0] + lines == len(err), r.stderr[-3000:]  # nothing after it
    for w in words:
        assert w in text, text
    return text


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name in ("config.json", "config.yaml", "hydra.yaml", "overrides.yaml")}


def holds(d: Path, secret: str) -> list[str]:
    return [str(p) for p in d.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()] if d.exists() else []


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A finished tiny run: 8 labels in one round."""
    run = tmp_path_factory.mktemp("done") / "run"
    r = rlaif("budget.labels=8", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / ".hydra" / "overrides.yaml").exists()  # written after the checks, by rlaif
    return run


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("*.lock"))
    return to


# -- 13: resume= a path that does not exist ----------------------------------------------------------
def test_resume_of_a_path_that_does_not_exist_says_so(tmp_path):
    r = rlaif(f"resume={tmp_path}/no_such_run")
    refused(r, "resume=", "no_such_run", "no such directory")


# -- 12: check first, write after ---------------------------------------------------------------------
def test_a_refused_resume_leaves_the_runs_record_as_it_was(done_run, tmp_path):
    before = snapshot(done_run)
    assert set(before) >= {"config.json", "config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"}
    # a label-changing override, by resume= and by a second run on the same directory
    refused(rlaif(f"resume={done_run}", "seed=3"), "refusing to resume", "seed: 0 -> 3")
    refused(rlaif("seed=3", f"hydra.run.dir={done_run}"), "refusing to resume", "seed: 0 -> 3", lines=3)
    assert snapshot(done_run) == before
    assert '"seed": 0' in (done_run / "config.json").read_text()


def test_a_run_directory_in_use_is_refused_before_its_record_is_touched(done_run, tmp_path):
    from rlaif.labels.ledger import Ledger
    from rlaif.run.startup import _lock

    run = copy_run(done_run, tmp_path / "run")
    before = snapshot(run)
    # another process holds the run's ledger (an older rlaif, `rlaif reparse`): budget.labels may
    # change on resume, so only the lock can refuse this start
    ledger = Ledger(run / "ledger.sqlite")
    try:
        refused(rlaif("budget.labels=16", f"hydra.run.dir={run}"), "in use")
    finally:
        ledger.close()
    assert snapshot(run) == before
    held = _lock(run)  # another `rlaif run` on it
    try:
        refused(rlaif("budget.labels=16", f"resume={run}"), "in use", "pid")
    finally:
        held.release()
    assert snapshot(run) == before


# -- 11: an empty ledger on resume ---------------------------------------------------------------------
def test_resume_with_an_empty_ledger_is_refused(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "run")
    (run / "ledger.sqlite").write_bytes(b"")
    for f in run.glob("ledger.sqlite-*"):
        f.unlink()
    line = refused(rlaif(f"resume={run}", "budget.labels=16"), "ledger", "empty")
    assert "8 labels" in line
    assert not (run / "state" / "round_0002.pairs.jsonl").exists()  # nothing acquired, nothing bought


# -- 16: secrets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("override", [f"oracle.api_key_env={KEY}", f"+oracle.api_key={KEY}"])
def test_a_secret_on_the_command_line_is_refused_before_anything_is_written(override, tmp_path):
    run = tmp_path / "run"
    r = rlaif("oracle=openai", "oracle.free=true", override, f"hydra.run.dir={run}")
    line = refused(r, "oracle.api_key")
    assert KEY not in r.stderr + r.stdout and KEY[:12] not in line
    assert holds(tmp_path, KEY) == [] and holds(tmp_path, KEY[8:20]) == []
    assert not (run / ".hydra").exists() and not (run / "config.json").exists()
    # a sweep: nothing written either (Hydra's multirun.yaml holds the overrides)
    r = rlaif("-m", "oracle=openai", override, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep")
    refused(r, "oracle.api_key")
    assert holds(tmp_path, KEY) == []


def test_what_looks_like_a_key():
    from rlaif.registry import ConfigError
    from rlaif.run.startup import check_secret_value, looks_like_secret

    for v in (KEY, "sk-abc12345", "hf_AbCdEfGhIjKlMnOpQrStUvWx", "AIzaSyA1b2C3d4E5f6G7h8", "xai-0123456789abcdefgh",
              "a1B2c3D4e5F6g7H8i9J0k1L2"):
        assert looks_like_secret(v), v
        with pytest.raises(ConfigError) as e:
            check_secret_value("oracle.api_key_env", v)
        assert v not in str(e.value) and v[:10] not in str(e.value)
    for v in ("OPENAI_API_KEY", "MY_JUDGE_KEY_2", "together_api_key", "ANTHROPIC_API_KEY_FOR_PROJECT_X"):
        assert not looks_like_secret(v), v
        check_secret_value("oracle.api_key_env", v)
    with pytest.raises(ConfigError, match="not a|looks like"):
        check_secret_value("oracle.api_key_env", "my key")  # not a variable name either


# -- 14: clear lines instead of tracebacks -----------------------------------------------------------
def test_prompt_file_errors_name_the_right_thing(tmp_path):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps({"prompt": "caf\u00e9 au lait"}, ensure_ascii=False).encode("latin-1") + b"\n")
    refused(rlaif("task=jsonl", f"task.path={latin}", f"hydra.run.dir={tmp_path}/r1"), "not UTF-8", "line 1")
    assert not (tmp_path / "r1" / "ledger.sqlite").exists()
    from rlaif.loop import validate
    from rlaif.tasks import TaskError

    with pytest.raises(TaskError, match="needs the prompt file: add task.path") as e:
        validate(cfg("policy=tiny", "task=jsonl"))
    assert "None" not in str(e.value)
    with pytest.raises(TaskError, match="is a directory"):
        validate(cfg("policy=tiny", "task=jsonl", f"task.path={tmp_path}"))


def test_prompts_longer_than_the_context_are_refused_before_any_spend(tmp_path):
    # the tiny policy's context is 128 tokens: task=jsonl allows 256-token prompts + 64 new tokens
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": " ".join(["word"] * 150) + f" {i}"}) + "\n" for i in range(8)))
    r = rlaif("task=jsonl", f"task.path={long}", "budget.labels=8", f"hydra.run.dir={tmp_path}/run")
    refused(r, "task.max_prompt_tokens=256", "task.max_new_tokens=8", "context of 128 tokens",
            "task.max_prompt_tokens=120 or less")
    assert not (tmp_path / "run" / "ledger.sqlite").exists()


@pytest.mark.parametrize("backend", ["aiohttp", "lean", "httpx"])
def test_a_refused_connection_is_not_reported_as_a_timeout(backend):
    from rlaif.oracle.base import OracleError
    from rlaif.oracle.openai import OpenAIConfig, OpenAIOracle

    o = OpenAIOracle(OpenAIConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="judge", free=True,
                                  http_backend=backend))
    with pytest.raises(OracleError, match="cannot reach the judge endpoint .*connection refused") as e:
        asyncio.run(o.setup())
    assert "timeout" not in str(e.value)


# -- a read-only or full run directory ---------------------------------------------------------------
@contextlib.contextmanager
def mounted(path: Path, *opts: str):
    """A tmpfs (or a bind mount) at ``path``; skips where this user cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *opts, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(d: Path):
    if os.geteuid() != 0:
        mode = d.stat().st_mode
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(mode)
        return
    view = d.parent / (d.name + "-ro")
    with mounted(view, "--bind", str(d)):
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield view


def test_a_read_only_run_directory_is_one_line(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "run")
    before = snapshot(run)
    with read_only(run) as ro:
        refused(rlaif(f"resume={ro}", "budget.labels=16"), "run directory", "writable")
        refused(rlaif(f"hydra.run.dir={ro}/new"), "writable")
    assert snapshot(run) == before


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush (and fail) at close
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def _train_rows(run: Path) -> list[tuple]:
    db = sqlite3.connect(f"file:{run / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT key, pair_id, outcome FROM labels WHERE purpose='train'").fetchall()
    finally:
        db.close()


def test_a_full_run_directory_is_one_line_and_the_run_resumes_once_space_is_freed(tmp_path):
    with mounted(tmp_path / "mnt", "-t", "tmpfs", "-o", "size=8m", "tmpfs") as mnt:
        # full before the start: refused before anything is bought
        filler = _fill(mnt)
        refused(rlaif("budget.labels=16", f"hydra.run.dir={mnt}/early"), "space")
        assert not (mnt / "early" / "ledger.sqlite").exists()
        filler.unlink()
        # full in the middle of the run
        run = mnt / "run"
        p = rlaif_popen("run", *RUN, "budget.labels=24", f"hydra.run.dir={run}", stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while not (run / "state" / "round_0001.pairs.jsonl").exists():
            assert p.poll() is None and time.time() < deadline, p.communicate()[1][-3000:]
            time.sleep(0.05)
        filler = _fill(mnt)
        out, err = p.communicate(timeout=300)
        refused(subprocess.CompletedProcess(p.args, p.returncode, out, err), "space", f"resume={run}")
        filler.unlink()
        r = rlaif(f"resume={run}", "budget.labels=24")
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["labels"] == 24 and summary["stopped_by"] == "labels"
        rows = _train_rows(run)
        assert len(rows) == 24 == len({k for k, _, _ in rows}) == len({p for _, p, _ in rows})
