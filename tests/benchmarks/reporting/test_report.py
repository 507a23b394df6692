"""report.py on runs of known values: intervals on the common seeds, paired differences and Holm's marks,
refused inputs (other budgets, a metric that is not a number), the README blocks, the MAUVE column."""

import json

import pytest

from benchmarks.report import main
from benchmarks.reporting.report import build, update_readme
from benchmarks.reporting.runs import collect, common_seeds, group
from lit_modules.core.errors import DataError


def test_report_compares_on_common_seeds_and_names_missing_jobs(tmp_path, fake_run, report_cli):
    for seed, nll in ((1, 3.50), (2, 3.52), (3, 3.51)):
        fake_run(tmp_path, "mle", seed, nll)
    for seed, nll in ((1, 3.60), (2, 3.63)):  # seed 3 of nce never ran
        fake_run(tmp_path, "nce", seed, nll)
    code, stderr = report_cli(str(tmp_path))
    assert code == 0, stderr
    report = (tmp_path / "report.md").read_text()
    assert (
        "**Not every job finished**: compared on the common seeds only (1, 2); missing: nce seed 3 (absent)." in report
    )
    assert "| mle | 3.510 ± 0.127 |" in report  # seeds 1 and 2 only: mean 3.51, t(1) · 0.01 = 0.127
    assert "| nce | +0.105 ± 0.064 † |" in report  # paired: differences 0.10 and 0.11; t(1) = 21, p = 0.03


def test_report_refuses_runs_of_different_budgets(tmp_path, fake_run, report_cli):
    fake_run(tmp_path / "a", "mle", 1, 3.5, max_steps=500)
    fake_run(tmp_path / "b", "mle", 2, 3.4, max_steps=600)
    code, stderr = report_cli(str(tmp_path))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(
        f"error: {tmp_path / 'a' / 'mle' / 'seed_1'} and {tmp_path / 'b' / 'mle' / 'seed_2'} "
        "were run with different configs (trainer.max_steps: 500 vs 600)"
    )
    assert not (tmp_path / "report.md").exists()


def test_report_refuses_a_metric_that_is_not_a_number(tmp_path, fake_run, report_cli):
    fake_run(tmp_path, "mle", 1, 3.5)
    path = tmp_path / "mle" / "seed_1" / "results.json"
    path.write_text(path.read_text().replace('"tf/nll": 3.5', '"tf/nll": "high"'))
    code, stderr = report_cli(str(tmp_path))
    assert code == 2
    assert (
        stderr.strip() == f"error: {path} is not a valid results file (metric 'tf/nll' is 'high', not a number); "
        "delete it or rerun that job"
    )


def test_report_bad_input_is_one_line(tmp_path, report_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stderr = report_cli(str(empty))
    assert code == 2 and stderr.strip() == f"error: {empty} holds no runs (no results.json or failed.json below it)"
    corrupt = tmp_path / "corrupt" / "mle"
    corrupt.mkdir(parents=True)
    (corrupt / "results.json").write_text('{"objective": "mle", "metrics": {"tf/ppl": 3')
    code, stderr = report_cli(str(tmp_path / "corrupt"))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"error: {corrupt / 'results.json'} is not a valid results file")
    code, stderr = report_cli(str(tmp_path / "nope"))
    assert code == 2 and "is not a directory of runs" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "empty"]  # nothing written


def test_readme_blocks_are_filled_by_name(tmp_path):
    """Every block of the file whose name is given is filled, others are left alone; a file with none of the
    names is a one-line DataError (the CLI prints it), and is left as it was."""
    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- s-tables:begin -->\nold\n<!-- s-tables:end -->\n<!-- text:begin -->\nx\n<!-- text:end -->\n"
    )
    update_readme(readme, {"s-tables": "new\n", "s-headline": "short\n"})
    assert readme.read_text() == (
        "a\n<!-- s-tables:begin -->\nnew\n<!-- s-tables:end -->\n<!-- text:begin -->\nx\n<!-- text:end -->\n"
    )
    with pytest.raises(DataError, match="has no <!-- other:begin --> ... <!-- other:end --> block"):
        update_readme(readme, {"other": "new\n"})


def test_the_headline_has_every_objective_its_difference_from_mle_and_the_references(tmp_path, fake_run):
    for seed, (mle, nce) in enumerate(((3.50, 3.61), (3.52, 3.62), (3.51, 3.60)), start=1):
        for objective, nll in (("mle", mle), ("nce", nce)):
            repetition = 0.8 if objective == "mle" else 0.5
            metrics = {"tf/entropy": nll + 0.1, "tf/ece": 0.01, "gt/entropy_rate": 3.18,
                       "gen/greedy/seq_rep_4": repetition, "gen/human/seq_rep_4": 0.0}  # fmt: skip
            fake_run(tmp_path, objective, seed, nll, metrics=metrics, eval={"decodings": ["greedy"]})
    headline = build(collect(tmp_path)).headline
    assert "Mean ± half-width of the 95% interval over seeds 1, 2, 3" in headline
    assert "| objective | NLL | entropy | ECE | Δ NLL | greedy seq-rep-4 | Δ greedy seq-rep-4 |" in headline
    nce = "| nce | 3.610 ± 0.025 | 3.710 ± 0.025 | 0.010 ± 0.000 | +0.100 ± 0.025 † | 0.500 ± 0.000 |"
    assert nce + " -0.300 ± 0.000 † |" in headline
    assert "| *source* | 3.180 | 3.180 |" in headline and "| *human text* | – | – | – | – | 0.000 | – |" in headline


def test_report_shows_mauve_highest_bold_and_plots_it_against_distinct_4(tmp_path, capsys, fake_run):
    """Real-text runs carry gen/<d>/mauve: a MAUVE column in the generation tables (bold = highest, where its
    interval clears the runner-up's), its Δ from MLE, and the quality-diversity plot on MAUVE."""
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


def test_unfinished_stale_and_odd_jobs_count_as_failed(tmp_path, fake_run, report_cli):
    """A job killed mid-training (a checkpoint, no results.json, no failed.json) is unfinished, not absent from
    the count; a failed.json newer than the job's results.json is its outcome; a failed.json holding a JSON list
    is read as a failure, not a traceback; the report tells the unfinished job from the failed ones. --strict
    then exits 1, naming each."""
    import json
    import os

    for seed in (1, 2):
        fake_run(tmp_path, "mle", seed, 3.5 + seed / 100)
    killed = tmp_path / "nce" / "seed_1"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "last.ckpt").write_bytes(b"")
    (killed / ".hydra").mkdir()
    (killed / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (killed / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      objective: nce\n")
    fake_run(tmp_path, "nce", 2, 3.6)
    stale = tmp_path / "nce" / "seed_2"
    (stale / "failed.json").write_text(json.dumps({"objective": "nce", "error": "boom", "config": {"seed": 2}}))
    os.utime(stale / "results.json", (1, 1))  # the results are older than the rerun that failed
    odd = tmp_path / "tailr" / "seed_1"
    odd.mkdir(parents=True)
    (odd / "failed.json").write_text("[1, 2]")
    runs = collect(tmp_path)
    failed = sorted((r.objective, r.data["error"]) for r in runs if r.failed)
    assert failed == [
        ("nce", "boom"),
        ("nce", "unfinished: a checkpoint but no results.json (killed, or still running)"),
        ("tailr", "failed (failed.json holds no JSON object)"),
    ]
    code, stderr = report_cli(str(tmp_path), "--strict")
    assert code == 1, stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: 2 job(s) failed: nce seed 2, tailr seed -1 (see their failed.json); "
        "1 job(s) unfinished (killed, or still running): nce seed 1"
    )
    report = (tmp_path / "report.md").read_text()
    assert "2 runs, 2 failed, 1 unfinished, from" in report
    assert "nce seed 1 (unfinished)" in report and "nce seed 2 (failed)" in report


def test_report_into_a_read_only_directory_is_one_line(tmp_path, fake_run, read_only_dir, report_cli):
    """--out on a read-only disk: one line and exit 2 before any work (was: an OSError from the plot writer)."""
    fake_run(tmp_path / "runs", "mle", 1, 3.5)
    code, stderr = report_cli(str(tmp_path / "runs"), "--out", str(read_only_dir / "report"))
    assert code == 2, stderr
    target = read_only_dir / "report"
    assert stderr.strip().splitlines() == [
        f"error: --out: cannot make '{target}': {read_only_dir} is read-only or not writable by this user"
    ]


def test_the_report_says_whether_each_objective_is_used_as_its_papers_use_it(tmp_path, fake_run):
    targets = {"mle": "objectives.mle.MLE", "gold": "objectives.gold.GOLD", "nce": "objectives.nce.NCE"}
    for regime, start_step in (("scratch", 200), ("finetune", 0)):
        for seed in (1, 2):
            for objective, target in targets.items():
                fake_run(tmp_path / regime, objective, seed, 3.5 + seed / 100)
                path = tmp_path / regime / objective / f"seed_{seed}" / "results.json"
                results = json.loads(path.read_text())
                results["config"]["objective"] = {"_target_": target}
                if objective == "gold":
                    results["config"]["objective"]["start_step"] = start_step
                if regime == "finetune":  # a run that started from trained weights says so in results.json
                    results["init_from"] = {"source": f"base/seed_{seed}", "sha256": "0" * 64, "step": 3000}
                path.write_text(json.dumps(results))
    scratch, finetune = build(collect(tmp_path / "scratch")), build(collect(tmp_path / "finetune"))
    assert "From scratch: every run starts from random weights" in scratch.notes
    start = "Fine-tuning: every run starts from the trained model of its seed (init_from, e.g. base/seed_1, step 3000"
    assert start in finetune.notes
    cells = {
        name: {label: row.as_in_papers for label, row in report.rows.items()}
        for name, report in (("scratch", scratch), ("finetune", finetune))
    }
    assert cells["scratch"] == {"gold": "in part: MLE to step 200, then fine-tunes", "mle": "yes", "nce": "yes"}
    assert cells["finetune"] == {"gold": "yes", "mle": "yes", "nce": "no: from scratch"}
    assert "| as in its papers |" in finetune.body and "| no: from scratch |" in finetune.body


def test_report_at_the_best_validation_step(tmp_path, fake_run, capsys):
    for seed in (1, 2):
        for objective, final, best in (("mle", 4.0, 3.5), ("label_smoothing", 3.8, 3.6)):
            fake_run(tmp_path, objective, seed, final + seed / 100)
            path = tmp_path / objective / f"seed_{seed}" / "results.json"
            results = json.loads(path.read_text())
            results["history"] = {"val/nll": [[100, best], [450, final]], "val/entropy": [[100, 3.6], [450, 2.0]]}
            results["at_best"] = {"step": 100, "val/nll": best, "metrics": {"tf/nll": best + seed / 100}}
            path.write_text(json.dumps(results))
    end, best = build(collect(tmp_path)), build(collect(tmp_path, "best"))
    assert end.rows["mle"].intervals["tf/nll"].mean == pytest.approx(4.015)
    assert best.rows["mle"].intervals["tf/nll"].mean == pytest.approx(3.515)
    assert "At the best validation step" in best.notes and "steps 100-100" in best.notes
    assert "At the best validation step" not in end.notes
    assert best.rows["mle"].data["history"]["val/entropy"] == [[100, 3.6], [450, 2.0]]
    assert main([str(tmp_path), "--at", "best"]) == 0 and (tmp_path / "report_at_best.md").is_file()
    assert (tmp_path / "plots_at_best" / "validation_calibration.png").is_file()
    assert not (tmp_path / "report.md").exists()  # the final models' report is another file
    # a run evaluated only at its end: one line, exit 2
    fake_run(tmp_path, "nce", 1, 3.9)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--at", "best"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "has no evaluation at its best validation step" in error
    assert error.count("\n") == 1


def test_the_frequency_table_shows_each_bucket_and_its_difference_from_mle(tmp_path, fake_run):
    for seed in (1, 2, 3):
        for objective, rare in (("mle", 6.0), ("tailr", 6.5)):
            metrics = {"tf/nll_frequent": 2.0, "tf/nll_rare": rare + seed / 10, "tf/ece_rare": 0.1}
            fake_run(tmp_path, objective, seed, 3.5, metrics=metrics)
    body = build(collect(tmp_path)).body
    assert "### By the gold token's frequency in the train split" in body
    assert "| objective | NLL frequent | NLL rare | ECE rare |" in body
    assert "| tailr | 2.000 ± 0.000 (+0.000 ± 0.000) | 6.700 ± 0.248 (+0.500 ± 0.000 †) |" in body


def test_shifted_tables_are_their_own_holm_family(tmp_path, fake_run):
    for seed in (1, 2, 3):
        for objective, ood in (("mle", 4.0), ("label_smoothing", 3.7)):
            metrics = {"tf/entropy": 3.6, "ood/shift1/nll": ood + seed / 10, "ood/shift1/entropy_rate": 3.3}
            fake_run(tmp_path / "with", objective, seed, 3.5 + seed / 10, metrics=metrics)
            fake_run(tmp_path / "without", objective, seed, 3.5 + seed / 10, metrics={"tf/entropy": 3.6})
    with_ood, without = build(collect(tmp_path / "with")), build(collect(tmp_path / "without"))
    assert "### Out of distribution: the source shifted by ρ = 1" in with_ood.body
    assert "| label_smoothing | 3.900 ± 0.248 (-0.300 ± 0.000 †) |" in with_ood.body
    assert "| *shifted source* | 3.300 |" in with_ood.body
    # the main tables' marks and counts do not move with the shifted table
    assert with_ood.notes == without.notes and "over all 2 cells of the main tables" in with_ood.notes
    assert "Out of distribution" not in without.body


def test_oracles_rows_are_a_holm_family_of_their_own(tmp_path, fake_run):
    """An objective that reads the true source in training (a bound) is tested apart: adding it moves no mark and
    no count of the deployable rows, and its own differences are still marked."""
    oracle = {"_target_": "objectives.oracle_kl.OracleKL", "eta": 0.5}
    for seed in (1, 2, 3):
        for root in ("with", "without"):
            fake_run(tmp_path / root, "mle", seed, 3.5 + seed / 10, metrics={"tf/entropy": 3.6})
            fake_run(tmp_path / root, "label_smoothing", seed, 3.6 + seed / 10, metrics={"tf/entropy": 3.9 + seed})
        metrics = {"tf/entropy": 3.6}
        fake_run(tmp_path / "with", "oracle_kl", seed, 3.4 + seed / 10, metrics=metrics, objective_config=oracle)
    with_oracle, without = build(collect(tmp_path / "with")), build(collect(tmp_path / "without"))
    assert "over all 2 cells of the main tables" in with_oracle.notes and "over all 2 cells" in without.notes
    assert "the oracles' rows (oracle_kl: they read the true source in training" in with_oracle.notes
    assert "(2 cells of the main tables)" in with_oracle.notes and "oracles" not in without.notes
    ls_row = next(line for line in without.body.splitlines() if line.startswith("| label_smoothing |"))
    assert ls_row in with_oracle.body  # the same cells and marks
    assert "| oracle_kl | -0.100 ± 0.000 † |" in with_oracle.body  # its NLL difference, marked in its own family


def test_memorisation_tables_by_insertions_are_their_own_holm_family(tmp_path, fake_run):
    for seed in (1, 2, 3):
        for objective, exposure in (("mle", 20.0), ("label_smoothing", 12.0)):
            metrics = {
                "mem/exposure_x16": exposure + seed,
                "mem/exposure_x2": 1.5,
                "mem/extracted_x16": 0.5,
                "mem/extracted_x2": 0.0,
                "mem/exposure": exposure,  # the mean over counts: not a column
            }
            fake_run(tmp_path / "with", objective, seed, 3.5 + seed / 10, metrics=metrics)
            fake_run(tmp_path / "without", objective, seed, 3.5 + seed / 10)
    with_canaries, without = build(collect(tmp_path / "with")), build(collect(tmp_path / "without"))
    body = with_canaries.body
    assert "### Memorisation: exposure (bits)" in body and "### Memorisation: extracted" in body
    assert "| objective | ×2 | ×16 |" in body  # insertion counts ascending
    assert "| label_smoothing | 1.500 ± 0.000 (+0.000 ± 0.000) | **14.000 ± 2.484** (-8.000 ± 0.000 †) |" in body
    assert with_canaries.notes == without.notes and "Memorisation" not in without.body


def test_another_corpus_gets_its_own_out_of_distribution_table(tmp_path, fake_run):
    for seed in (1, 2, 3):
        for objective, ood in (("mle", 6.0), ("label_smoothing", 5.8)):
            metrics = {"ood/markdown_docs/nll": ood + seed / 10, "ood/markdown_docs/entropy": 5.0}
            fake_run(tmp_path, objective, seed, 3.5 + seed / 10, metrics=metrics)
    body = build(collect(tmp_path)).body
    assert "### Out of distribution: markdown_docs (another corpus)" in body
    assert "| objective | NLL | entropy |" in body and "*shifted source*" not in body
    assert "| label_smoothing | 6.000 ± 0.248 (-0.200 ± 0.000 †) | 5.000 ± 0.000 (+0.000 ± 0.000) |" in body


def test_one_objective_at_several_settings_gets_a_row_each_named_by_what_differs(tmp_path, fake_run):
    for seed in (1, 2):
        fake_run(tmp_path, "mle", seed, 3.5)
        for divergence, nll in (("reverse_kl", 3.6), ("js_divergence", 3.7)):
            config = {"_target_": "objectives.preference.Preference", "beta": 0.1, "divergence": divergence}
            folder = tmp_path / f"preference_{divergence}"
            fake_run(folder, "preference", seed, nll + seed / 10, objective_config=config)
    rows = group(collect(tmp_path))
    assert sorted(rows) == ["mle", "preference (divergence=js_divergence)", "preference (divergence=reverse_kl)"]
    assert set(rows["preference (divergence=reverse_kl)"].runs) == {1, 2}


def test_a_knob_that_names_each_runs_own_seed_is_one_setting_not_one_per_seed(tmp_path, fake_run):
    """selective LM against each seed's own MLE run (objective.reference=runs/x/mle/seed_${seed}, resolved by
    Hydra into the saved config) is one row over seeds; a fixed path holding a seed's digits stays one row too."""
    for seed in (1, 2):
        fake_run(tmp_path / "base", "mle", seed, 3.5)
        for folder, reference in (("own", f"runs/x/mle/seed_{seed}"), ("fixed", "runs/x/mle/seed_1"), ("other", "r7")):
            config = {"_target_": "objectives.selective_lm.SelectiveLM", "ratio": 0.6, "reference": reference}
            fake_run(tmp_path / folder, "selective_lm", seed, 3.6, objective_config=config)
    for folder in ("own", "fixed"):
        rows = group(collect(tmp_path / "base") + collect(tmp_path / folder))
        assert sorted(rows) == ["mle", "selective_lm"] and common_seeds(rows) == ([1, 2], [])
    rows = group(collect(tmp_path / "base") + collect(tmp_path / "own") + collect(tmp_path / "other"))
    assert sorted(rows) == ["mle", "selective_lm (reference=r7)", "selective_lm (reference=runs/x/mle/seed_${seed})"]
    assert all(set(row.runs) == {1, 2} for row in rows.values())
