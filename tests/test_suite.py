"""The comparison suite: a multirun over objectives survives a failing job, skips finished jobs,
and report.py turns the runs into a report, a CSV and plots; bad report input is one line."""

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, TINY_SYNTHETIC

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
REPORT = [sys.executable, str(ROOT / "benchmarks" / "report.py")]


def sweep(out, objectives, *extra):
    return subprocess.run(
        [
            *RUN,
            "-m",
            f"objective={objectives}",
            "suite=default",
            *TINY,
            *TINY_SYNTHETIC,
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
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error: entropy_penalty: objective.eps is not a knob of entropy_penalty" in proc.stderr
    more = sweep(out, "mle", "trainer.val_check_interval=2")  # a second sweep into the same suite directory
    assert more.returncode == 0, more.stderr[-3000:]
    return out, proc


def test_a_failing_job_does_not_stop_the_sweep(suite_dir):
    out, _ = suite_dir
    assert (out / "entropy_penalty" / "failed.json").is_file()
    assert not (out / "entropy_penalty" / "results.json").exists()
    assert (out / "label_smoothing" / "results.json").is_file()


def test_rerun_skips_finished_jobs(suite_dir):
    out, _ = suite_dir
    before = (out / "label_smoothing" / "results.json").read_text()
    proc = sweep(out, "label_smoothing", "++objective.eps=0.2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "label_smoothing: finished earlier with the same config, skipped" in proc.stdout
    assert (out / "label_smoothing" / "results.json").read_text() == before


def test_report_has_every_row_the_csv_and_the_plots(suite_dir):
    out, _ = suite_dir
    proc = subprocess.run([*REPORT, str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    for row in ("| label_smoothing | ", "| mle | ", "| mle | greedy |", "| *human* |", "| *source* |"):
        assert row in report, row
    assert "| entropy_penalty | **failed**: objective.eps is not a knob of entropy_penalty" in report
    assert "**" in report.split("| mle |")[0]  # a best value is marked
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["objective"]: r["status"] for r in rows} == {
        "label_smoothing": "done",
        "mle": "done",
        "entropy_penalty": "failed",
    }
    assert float(next(r for r in rows if r["objective"] == "mle")["tf/ppl"]) > 1
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == [
        "coverage_vs_quality.png",
        "entropy_vs_nll.png",
        "ppl_vs_repetition.png",
        "reliability.png",
        "validation_nll.png",
    ]
    assert all((out / "plots" / p).stat().st_size > 5000 for p in pngs)


def test_report_fills_the_readme_block(suite_dir, tmp_path):
    out, _ = suite_dir
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- suite-tables:begin -->\nold table\n<!-- suite-tables:end -->\nafter\n")
    proc = subprocess.run([*REPORT, str(out), "--readme", str(readme)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "old table" not in text and "| mle | greedy |" in text
    assert text.endswith("<!-- suite-tables:end -->\nafter\n")
    readme.write_text("# no markers\n")
    proc = subprocess.run([*REPORT, str(out), "--readme", str(readme)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "has no <!-- suite-tables:begin -->" in proc.stderr
    assert readme.read_text() == "# no markers\n"


def test_report_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([*REPORT, str(empty)], capture_output=True, text=True, cwd=ROOT)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"error: {empty} holds no runs (no results.json or failed.json below it)"
    )
    corrupt = tmp_path / "corrupt" / "mle"
    corrupt.mkdir(parents=True)
    (corrupt / "results.json").write_text('{"objective": "mle", "metrics": {"tf/ppl": 3')
    proc = subprocess.run([*REPORT, str(tmp_path / "corrupt")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {corrupt / 'results.json'} is not a valid results file")
    assert len(proc.stderr.strip().splitlines()) == 1
    missing = subprocess.run([*REPORT, str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "is not a directory of runs" in missing.stderr


def test_results_hold_the_validation_history(suite_dir):
    out, _ = suite_dir
    results = json.loads((out / "mle" / "results.json").read_text())
    steps = [step for step, _ in results["history"]["val/nll"]]
    assert steps == [2, 3]  # every 2 steps, and the final weights (step 3) once more
    assert results["metrics"]["val/nll"] == results["history"]["val/nll"][-1][1]
