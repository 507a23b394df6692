"""Equal tuning effort (benchmarks/tuned.py): the same budget per objective, the suite at the best knobs."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.runner.equal_tuning import expected_best


def test_expected_best_matches_a_hand_computed_example():
    # three trials 1, 2, 3; the best of 2 draws with replacement: P(min=1) = 5/9, P(2) = 3/9, P(3) = 1/9
    curve = expected_best([3.0, 1.0, 2.0], 3)
    np.testing.assert_allclose(curve[:2], [2.0, 14 / 9])
    assert curve[2] < curve[1] and curve[2] > 1.0  # more trials, a better expected best, never below the best


@pytest.mark.slow
def test_every_objective_gets_the_same_budget_then_the_suite(tmp_path, cli):
    out = tmp_path / "tuned"
    command = [
        "--objectives",
        "mle,label_smoothing",
        "--out",
        str(out),
        "--default-suite",
        str(tmp_path / "none"),
        "tune.n_trials=2",
        "suite.seeds=[1,2]",
        "debug=tiny",
    ]
    proc = cli("tuned", *command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    studies = json.loads((out / "studies.json").read_text())
    assert list(studies) == ["label_smoothing"]  # mle has no knob to tune
    assert studies["label_smoothing"]["trials"] == 2
    eps = studies["label_smoothing"]["params"]["eps"]
    for seed in (1, 2):
        for objective in ("mle", "label_smoothing"):
            results = json.loads((out / "suite" / objective / f"seed_{seed}" / "results.json").read_text())
            assert results["config"]["seed"] == seed
        assert results["config"]["objective"]["eps"] == eps  # the suite ran at the best knobs
    report = (out / "tuned_report.md").read_text()
    assert "| label_smoothing | eps=0.1 | – | eps=" in report and "2 Optuna trials" in report
    assert (out / "expected_best.png").stat().st_size > 5000
    again = cli("tuned", *command)  # rerun: nothing left to do
    assert again.returncode == 0 and json.loads((out / "studies.json").read_text())["label_smoothing"]["trials"] == 2


def test_tuned_writes_under_the_command_lines_run_root():
    """run_root=... moves tuned.py's output and the default-knob suite it compares with, as it moves run.py's."""
    from benchmarks.tuned import output_dirs

    assert output_dirs(None, None, ["tune.n_trials=2"]) == (Path("runs/tuned"), Path("runs/suite"))
    assert output_dirs(None, None, ["run_root=/tmp/x"]) == (Path("/tmp/x/tuned"), Path("/tmp/x/suite"))
    assert output_dirs(Path("o"), Path("s"), ["run_root=/tmp/x"]) == (Path("o"), Path("s"))


@pytest.mark.parametrize("trials", ["0", "-1"])
def test_tuned_refuses_no_trials_in_one_line(trials, tmp_path, capsys):
    """tuned.py tune.n_trials=0 (or -1): one line, as tune.py says it (was: KeyError from optuna.load_study)."""
    from benchmarks.tuned import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--objectives", "label_smoothing", "--out", str(tmp_path / "t"), f"tune.n_trials={trials}", "debug=tiny"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: tune.n_trials={trials} is not allowed; use a positive integer"
    ]
