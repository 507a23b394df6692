"""The comparison suite: a multirun over objectives and seeds survives a failing job, skips finished jobs, and
report.py turns its runs into a report, a CSV and plots; bad report input is one line."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.runner.cli import suite_seed_overrides

ROOT = Path(__file__).resolve().parents[3]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
REPORT = [sys.executable, str(ROOT / "benchmarks" / "report.py")]


def sweep(out, objectives, *extra, seeds="[1,2]"):
    return subprocess.run(
        [
            *RUN,
            "-m",
            f"objective={objectives}",
            "suite=default",
            f"suite.seeds={seeds}",
            "debug=tiny",
            *extra,
            f"hydra.sweep.dir={out}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    # entropy_penalty has no knob eps: that job fails, the others go on
    proc = sweep(out, "entropy_penalty,label_smoothing", "++objective.eps=0.2")
    assert proc.returncode == 1, proc.stderr[-3000:]  # after finishing the other jobs
    assert "error: entropy_penalty: objective.eps is not a knob of entropy_penalty" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 2 job(s) failed (their failed.json says why): ")
    # a second sweep into the same suite directory, two jobs at a time as make bench runs them
    more = sweep(out, "mle", "trainer.val_check_interval=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert more.returncode == 0, more.stderr[-3000:]
    for noise in ("GPU available", "weights_only", "LeafSpec"):  # Lightning's, quieted in the workers too
        assert noise not in more.stdout + more.stderr
    return out, proc


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(suite_dir):
    out, _ = suite_dir
    for seed in (1, 2):
        assert (out / "entropy_penalty" / f"seed_{seed}" / "failed.json").is_file()
        assert not (out / "entropy_penalty" / f"seed_{seed}" / "results.json").exists()
        assert (out / "label_smoothing" / f"seed_{seed}" / "results.json").is_file()


@pytest.mark.slow
def test_seeds_are_an_axis_of_the_suite(suite_dir):
    """Every objective at every seed of suite.seeds, one directory each, each run at its own seed."""
    out, _ = suite_dir
    for objective in ("label_smoothing", "mle"):
        jobs = sorted(p.parent.name for p in (out / objective).glob("seed_*/results.json"))
        assert jobs == ["seed_1", "seed_2"]
        seeds = [json.loads((out / objective / j / "results.json").read_text())["config"]["seed"] for j in jobs]
        assert seeds == [1, 2]
    one, two = (json.loads((out / "mle" / f"seed_{s}" / "results.json").read_text()) for s in (1, 2))
    assert one["metrics"]["val/nll"] != two["metrics"]["val/nll"]  # seed 2 trained; it did not continue seed 1


@pytest.mark.slow
def test_rerun_skips_finished_jobs(suite_dir):
    out, _ = suite_dir
    before = (out / "label_smoothing" / "seed_1" / "results.json").read_text()
    proc = sweep(out, "label_smoothing", "++objective.eps=0.2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "label_smoothing: finished earlier with the same config, skipped" in proc.stdout
    assert (out / "label_smoothing" / "seed_1" / "results.json").read_text() == before


@pytest.mark.slow
def test_report_has_every_row_the_csv_and_the_plots(suite_dir, report_cli):
    out, _ = suite_dir
    strict = subprocess.run([*REPORT, str(out), "--strict"], capture_output=True, text=True, cwd=ROOT)
    assert strict.returncode == 1 and (out / "report.md").is_file()  # make bench: a failed job fails the command
    assert strict.stderr.strip() == (
        "error: 2 job(s) failed: entropy_penalty seed 1, entropy_penalty seed 2 (see their failed.json)"
    )
    (out / "report.md").unlink()
    code, stderr = report_cli(str(out))  # without --strict: the report, and success
    assert code == 0 and (out / "report.md").is_file(), stderr
    report = (out / "report.md").read_text()
    for row in ("| label_smoothing | ", "| mle | ", "| mle | greedy |", "| *human* |", "| *source* |"):
        assert row in report, row
    assert "| entropy_penalty | **failed**: objective.eps is not a knob of entropy_penalty" in report
    assert "Seeds: 1, 2." in report
    assert re.search(r"\| mle \| \d\.\d{3} ± \d\.\d{3} \|", report)  # mean ± half-width over the seeds
    assert re.search(r"\| label_smoothing \| [+-]\d\.\d{3} ± \d\.\d{3}", report.split("Difference from MLE")[1])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["objective"], r["seed"], r["status"]) for r in rows if r["status"] != "summary"} == {
        (objective, seed, "done") for objective in ("label_smoothing", "mle") for seed in ("1", "2")
    } | {("entropy_penalty", "1", "failed"), ("entropy_penalty", "2", "failed")}
    summary = next(
        r for r in rows if r["status"] == "summary" and r["row"] == "label_smoothing" and r["metric"] == "tf/nll"
    )
    assert float(summary["low"]) <= float(summary["mean"]) <= float(summary["high"])
    assert 0 <= float(summary["p_holm"]) <= 1 and float(summary["p_holm"]) >= float(summary["p"])
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == [
        "coverage_vs_quality.png",
        "entropy_vs_nll.png",
        "forward_vs_reverse_kl.png",
        "ppl_vs_repetition.png",
        "quality_vs_diversity.png",
        "reliability.png",
        "temperature_frontier.png",  # debug=tiny samples no frontier: no sampled_frontier.png
        "validation_nll.png",
    ]
    assert all((out / "plots" / p).stat().st_size > 5000 for p in pngs)


@pytest.mark.slow
def test_report_fills_the_readme_block(suite_dir, tmp_path, report_cli):
    out, _ = suite_dir
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- suite-headline:begin -->\n<!-- suite-headline:end -->\n")
    docs = tmp_path / "results.md"
    docs.write_text("# x\n<!-- suite-tables:begin -->\nold table\n<!-- suite-tables:end -->\nafter\n")
    elsewhere = str(tmp_path / "report")  # the suite's own report.md is another test's
    code, stderr = report_cli(str(out), "--out", elsewhere, "--readme", str(readme), "--readme", str(docs))
    assert code == 0, stderr
    text = docs.read_text()
    assert "old table" not in text and "| mle | greedy |" in text
    assert text.endswith("<!-- suite-tables:end -->\nafter\n")
    assert "| label_smoothing |" in readme.read_text() and "| mle | greedy |" not in readme.read_text()
    readme.write_text("# no markers\n")
    code, stderr = report_cli(str(out), "--out", elsewhere, "--readme", str(readme))
    assert code == 2 and "has no <!-- suite-tables:begin -->" in stderr
    assert readme.read_text() == "# no markers\n"


@pytest.mark.slow
def test_results_hold_the_validation_history(suite_dir):
    out, _ = suite_dir
    results = json.loads((out / "mle" / "seed_1" / "results.json").read_text())
    steps = [step for step, _ in results["history"]["val/nll"]]
    assert steps == [2, 3]  # every 2 steps, and the final weights (step 3) once more
    assert results["metrics"]["val/nll"] == results["history"]["val/nll"][-1][1]


@pytest.mark.parametrize("seeds", ["[]", "[1,1]", "[a,b]", "[-3]", "7"])
def test_bad_suite_seeds_are_one_line(seeds, capsys):
    with pytest.raises(SystemExit) as exit_info:
        suite_seed_overrides(["-m", "objective=mle", "suite=default", f"suite.seeds={seeds}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: suite.seeds=")


def test_a_seed_on_the_command_line_takes_the_suites_sweep_place():
    argv = ["-m", "objective=mle", "suite=default", "seed=4,5"]
    assert suite_seed_overrides(argv) == ["-m", "objective=mle", "suite=default", "hydra.sweeper.params.seed=4,5"]
    assert suite_seed_overrides(["-m", "objective=mle", "seed=4"]) == ["-m", "objective=mle", "seed=4"]  # no suite


@pytest.mark.slow
def test_bad_suite_seeds_stop_the_sweep_before_any_job(tmp_path):
    proc = sweep(tmp_path / "s", "mle", seeds="[2,2]")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: suite.seeds=[2, 2] is not allowed; use a non-empty list of distinct integers in [0, 2^32), "
        "e.g. suite.seeds=[1,2,3]"
    )
    assert not (tmp_path / "s").exists()
