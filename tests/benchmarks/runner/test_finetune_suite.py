"""The fine-tuning suite end to end: one starting MLE run per seed (suite=finetune_base), then every objective
fine-tunes that seed's model (suite=finetune); a seed whose starting run failed fails its dependants with one
line naming it, and the others go on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_modules.core.start_weights import read_start_weights

ROOT = Path(__file__).resolve().parents[3]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def multirun(run_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RUN, "-m", *args, "debug=tiny", f"run_root={run_root}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )


@pytest.mark.slow
def test_every_objective_fine_tunes_its_seeds_starting_model(tmp_path):
    base = multirun(tmp_path, "objective=mle", "suite=finetune_base", "suite.seeds=[1]")
    assert base.returncode == 0, base.stderr[-3000:]
    # seed 2's starting run failed: its fine-tuning jobs fail with one line naming it, seed 1's go on
    failed_base = tmp_path / "finetune_base" / "seed_2"
    failed_base.mkdir(parents=True)
    (failed_base / "failed.json").write_text(json.dumps({"error": "NonFiniteLossError: non-finite loss at step 9"}))
    start = read_start_weights(str(tmp_path / "finetune_base" / "seed_1"))
    started = start.path.stat().st_mtime_ns

    proc = multirun(tmp_path, "objective=mle,gold,preference", "suite=finetune", "suite.seeds=[1,2]")
    assert proc.returncode == 1, proc.stderr[-3000:]
    for objective in ("mle", "gold", "preference"):
        results = json.loads((tmp_path / "finetune" / objective / "seed_1" / "results.json").read_text())
        assert results["init_from"]["sha256"] == start.sha256  # the seed's one starting model, for every objective
        assert results["init_from"]["source"] == str(tmp_path / "finetune_base" / "seed_1")
        assert results["timing"]["steps"] == 3
        error = json.loads((tmp_path / "finetune" / objective / "seed_2" / "failed.json").read_text())["error"]
        assert error.startswith(f"init_from={failed_base}: the starting run failed (NonFiniteLossError"), error
        assert f"error: {objective}: init_from={failed_base}: the starting run failed" in proc.stderr
    gold = json.loads((tmp_path / "finetune" / "gold" / "seed_1" / "results.json").read_text())
    assert gold["config"]["objective"]["start_step"] == 0  # acts from the first step, as in its paper
    # the starting model was trained once, by the first stage: the second stage left it as it was
    assert start.path.stat().st_mtime_ns == started
    assert sorted(p.name for p in (tmp_path / "finetune_base").iterdir() if p.is_dir()) == ["seed_1", "seed_2"]

    # a rerun skips the finished jobs (the failed ones run again, and fail again)
    again = multirun(tmp_path, "objective=mle", "suite=finetune", "suite.seeds=[1]")
    assert again.returncode == 0 and "finished earlier with the same config, skipped" in again.stdout
