"""The comparison suite: a multirun over objectives survives a failing job, skips finished jobs,
and report.py turns the runs into a report, a CSV and plots; bad report input is one line."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, TINY_SYNTHETIC

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
def test_report_has_every_row_the_csv_and_the_plots(suite_dir):
    out, _ = suite_dir
    strict = subprocess.run([*REPORT, str(out), "--strict"], capture_output=True, text=True, cwd=ROOT)
    assert strict.returncode == 1 and (out / "report.md").is_file()  # make bench: a failed job fails the command
    assert strict.stderr.strip() == (
        "error: 2 job(s) failed: entropy_penalty seed 1, entropy_penalty seed 2 (see their failed.json)"
    )
    proc = subprocess.run([*REPORT, str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
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
        "validation_nll.png",
    ]
    assert all((out / "plots" / p).stat().st_size > 5000 for p in pngs)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_results_hold_the_validation_history(suite_dir):
    out, _ = suite_dir
    results = json.loads((out / "mle" / "seed_1" / "results.json").read_text())
    steps = [step for step, _ in results["history"]["val/nll"]]
    assert steps == [2, 3]  # every 2 steps, and the final weights (step 3) once more
    assert results["metrics"]["val/nll"] == results["history"]["val/nll"][-1][1]


def fake_run(root, objective, seed, nll, max_steps=450, metrics=None, **config):
    """A results.json as run.py writes it, with only what the report reads."""
    folder = root / objective / f"seed_{seed}"
    folder.mkdir(parents=True)
    cfg = {
        "seed": seed,
        "objective": {"_target_": f"objectives.{objective}.X"},
        "data": {"seed": seed, "block_size": 128},
        "model": {"d_model": 128},
        "optim": {"lr": 0.003},
        "eval": {"decodings": []},
        "trainer": {"max_steps": max_steps, "precision": "auto", "gradient_clip_val": 1.0},
        **config,
    }
    results = {
        "objective": objective,
        "config": cfg,
        "metrics": {"tf/nll": nll, "tf/ppl": 2.718**nll, **(metrics or {})},
        "timing": {"steps": max_steps, "train_tokens": 1000, "train_s": 1.0, "eval_s": 1.0},
        "history": {"val/nll": [[max_steps, nll]]},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_report_compares_on_common_seeds_and_names_missing_jobs(tmp_path):
    for seed, nll in ((1, 3.50), (2, 3.52), (3, 3.51)):
        fake_run(tmp_path, "mle", seed, nll)
    for seed, nll in ((1, 3.60), (2, 3.63)):  # seed 3 of nce never ran
        fake_run(tmp_path, "nce", seed, nll)
    proc = subprocess.run([*REPORT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert (
        "**Not every job finished**: compared on the common seeds only (1, 2); missing: nce seed 3 (absent)." in report
    )
    assert "| mle | 3.510 ± 0.127 |" in report  # seeds 1 and 2 only: mean 3.51, t(1) · 0.01 = 0.127
    assert "| nce | +0.105 ± 0.064 † |" in report  # paired: differences 0.10 and 0.11; t(1) = 21, p = 0.03


def test_report_refuses_runs_of_different_budgets(tmp_path):
    fake_run(tmp_path / "a", "mle", 1, 3.5, max_steps=500)
    fake_run(tmp_path / "b", "mle", 2, 3.4, max_steps=600)
    proc = subprocess.run([*REPORT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(
        f"error: {tmp_path / 'a' / 'mle' / 'seed_1'} and {tmp_path / 'b' / 'mle' / 'seed_2'} "
        "were run with different configs (trainer.max_steps: 500 vs 600)"
    )
    assert not (tmp_path / "report.md").exists()


def test_report_refuses_a_metric_that_is_not_a_number(tmp_path):
    fake_run(tmp_path, "mle", 1, 3.5)
    path = tmp_path / "mle" / "seed_1" / "results.json"
    path.write_text(path.read_text().replace('"tf/nll": 3.5', '"tf/nll": "high"'))
    proc = subprocess.run([*REPORT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"error: {path} is not a valid results file (metric 'tf/nll' is 'high', not a number); "
        "delete it or rerun that job"
    )


def test_one_seed_pairs_initial_weights_and_batches_across_objectives():
    import torch
    from conftest import compose

    from benchmarks.run import build
    from lit_modules.data import StepBatches

    def first(objective, seed):
        datamodule, system = build(compose([*TINY, *TINY_SYNTHETIC, f"objective={objective}", f"seed={seed}"]))
        datamodule.setup("fit")
        rows = next(iter(StepBatches(datamodule.blocks["train"].shape[0], datamodule.batch_size, datamodule.seed)))
        return system.model.state_dict(), datamodule.blocks["train"][rows]

    (mle, mle_batch), (ls, ls_batch), (other, other_batch) = first("mle", 7), first("nce", 7), first("mle", 8)
    assert mle.keys() == ls.keys() and all(torch.equal(mle[k], ls[k]) for k in mle)
    assert torch.equal(mle_batch, ls_batch)
    assert not torch.equal(mle["wte.weight"], other["wte.weight"]) and not torch.equal(mle_batch, other_batch)


@pytest.mark.parametrize("seeds", ["[]", "[1,1]", "[a,b]", "[-3]", "7"])
def test_bad_suite_seeds_are_one_line(seeds, tmp_path):
    from benchmarks.run import with_suite_seeds
    from lit_modules.util import ConfigError

    with pytest.raises(ConfigError, match=r"^suite.seeds=.* is not allowed; use a non-empty list of distinct integers"):
        with_suite_seeds(["-m", "objective=mle", "suite=default", f"suite.seeds={seeds}"])


@pytest.mark.slow
def test_bad_suite_seeds_stop_the_sweep_before_any_job(tmp_path):
    proc = sweep(tmp_path / "s", "mle", seeds="[2,2]")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: suite.seeds=[2, 2] is not allowed; use a non-empty list of distinct integers in [0, 2^32), "
        "e.g. suite.seeds=[1,2,3]"
    )
    assert not (tmp_path / "s").exists()


def test_readme_blocks_are_filled_by_name(tmp_path):
    """--readme-block NAME fills <!-- NAME:begin --> ... <!-- NAME:end --> and leaves other blocks alone; a
    README without the block is a one-line ValueError (the CLI prints it)."""
    from benchmarks.report import update_readme

    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- suite-tables:begin -->\nold\n<!-- suite-tables:end -->\n<!-- text:begin -->\nx\n<!-- text:end -->\n"
    )
    update_readme(readme, "new\n", "text")
    assert readme.read_text() == (
        "a\n<!-- suite-tables:begin -->\nold\n<!-- suite-tables:end -->\n<!-- text:begin -->\nnew\n<!-- text:end -->\n"
    )
    with pytest.raises(ValueError, match="has no <!-- other:begin --> ... <!-- other:end --> block"):
        update_readme(readme, "new\n", "other")


def test_report_shows_mauve_highest_bold_and_plots_it_against_distinct_4(tmp_path, capsys):
    """Real-text runs carry gen/<d>/mauve: a MAUVE column in the generation tables (bold = highest, where its
    interval clears the runner-up's), its Δ from MLE, and the quality-diversity plot on MAUVE."""
    from benchmarks.report import main

    for seed in (1, 2, 3):
        for objective, mauve in (("mle", 0.70), ("mixce", 0.85)):
            metrics = {
                "gen/greedy/distinct_4": 0.05 + 0.01 * seed,
                "gen/sample/distinct_4": 0.96 + 0.001 * seed,
                "gen/greedy/mauve": 0.01 * seed,
                "gen/sample/mauve": mauve + 0.005 * seed,
                "gen/human/distinct_4": 0.958,
            }
            fake_run(tmp_path, objective, seed, 5.2, metrics=metrics, eval={"decodings": ["greedy", "sample"]})
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| objective | decoding | distinct-4 | MAUVE |" in report
    assert "| mixce | sample | 0.962 ± 0.002 | **0.860 ± 0.012** |" in report
    assert "| mixce | sample | +0.000 ± 0.000 | +0.150 ± 0.000 † |" in report
    assert (tmp_path / "plots" / "quality_vs_diversity.png").stat().st_size > 10_000


def test_forward_vs_reverse_kl_plot_has_every_objective_with_its_interval(tmp_path, monkeypatch):
    """One point per objective at its mean (forward KL, reverse KL) over seeds, with 95% error bars both
    ways, and MLE's two KLs as dashed lines."""
    import benchmarks.plots as plots
    from benchmarks.report import build, collect

    kls = {"mle": (0.30, 0.20), "label_smoothing": (0.25, 0.35), "tailr": (0.50, 0.10)}
    for seed in (1, 2, 3):
        for objective, (forward, reverse) in kls.items():
            metrics = {"gt/forward_kl": forward + 0.01 * seed, "gt/reverse_kl": reverse - 0.01 * seed}
            fake_run(tmp_path, objective, seed, 5.0, metrics=metrics)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    rows = [row for row in build(collect(tmp_path)).rows.values() if row.runs]
    assert plots.forward_vs_reverse_kl(rows, tmp_path / "kl.png") == tmp_path / "kl.png"
    ax = figures[0].axes[0]
    points = sorted(
        tuple(round(float(v), 4) for v in c.get_offsets()[0])
        for c in ax.collections
        if type(c).__name__ == "PathCollection"
    )
    assert points == [(0.27, 0.33), (0.32, 0.18), (0.52, 0.08)]
    error_bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert len(error_bars) == 2 * len(kls)  # x and y bars for every objective
    half = error_bars[0].get_segments()[0]
    assert abs(half[1] - half[0]).max() > 0.02  # a t-interval over 3 seeds of spread 0.01 is wider than ±0.01
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert (
        sorted(round(float(line.get_xdata()[0]), 4) for line in dashed if line.get_xdata()[0] == line.get_xdata()[1])[0]
        == 0.32
    )
