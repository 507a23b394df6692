"""The report's temperature comparison on runs of known curves: MLE itself at another temperature is matched at
that temperature and dominated; a point below MLE's curve is not dominated; the temperature-scaled table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.reporting.report import build
from benchmarks.reporting.runs import collect, group
from benchmarks.reporting.temperature import compare, matched_temperature, verdict

GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0)


def tempered_metrics(true_p: np.ndarray, logq: np.ndarray, t: float) -> dict[str, float]:
    """Exact expected metrics of the model softmax(logq / t) against the truth true_p, (N, V) each."""
    logp = logq / t - np.log(np.exp(logq / t).sum(-1, keepdims=True))
    p = np.exp(logp)
    nll = -(true_p * logp).sum(-1).mean()
    entropy = -(p * logp).sum(-1).mean()
    return {
        "nll": nll,
        "entropy": entropy,
        "ece": abs(entropy - nll) / 3,
        "brier": ((p - true_p) ** 2).sum(-1).mean(),
        "forward_kl": (true_p * (np.log(true_p) - logp)).sum(-1).mean(),
        "reverse_kl": (p * (logp - np.log(true_p))).sum(-1).mean(),
    }


def curve_metrics(true_p, logq, scale: float = 1.0, shift: float = 0.0) -> dict[str, float]:
    """temp/<T>/<metric> at every T of GRID of the model softmax(logq / (scale · T)), KLs lowered by ``shift``."""
    out = {}
    for t in GRID:
        for name, value in tempered_metrics(true_p, logq, scale * t).items():
            out[f"temp/{t:g}/{name}"] = float(value - (shift if name.endswith("_kl") else 0.0))
    return out


@pytest.fixture
def runs(tmp_path, fake_run):
    for seed in (1, 2, 3):
        rng = np.random.default_rng(seed)
        true_p = rng.dirichlet(np.full(20, 0.3), size=200).clip(1e-6)
        true_p /= true_p.sum(-1, keepdims=True)
        logq = np.log(true_p) * 1.2 + 0.3 * rng.normal(size=true_p.shape)  # an over-confident, noisy MLE
        mle = curve_metrics(true_p, logq)
        hot = curve_metrics(true_p, logq, scale=1.25)  # MLE itself at T = 1.25
        better = curve_metrics(true_p, logq, shift=0.05)  # a curve 0.05 nats below MLE's in both KLs
        scaled = {"ts/temperature": 1.2, "ts/nll": 2.0, "ts/ece": 0.01 * seed, "ts/rms_ce": 0.02, "ts/brier": 0.5}
        for name, metrics in (("mle", mle), ("hot_mle", hot), ("better", better)):
            tf = {"tf/entropy": metrics["temp/1/entropy"], "tf/ece": metrics["temp/1/ece"] + 0.02}
            fake_run(tmp_path, name, seed, metrics["temp/1/nll"], metrics={**metrics, **tf, **scaled})
    return tmp_path


def test_mle_at_another_temperature_is_matched_there_and_dominated_and_a_lower_curve_is_not(runs):
    rows = group(collect(runs))
    comparison = compare(rows, [1, 2, 3])
    assert comparison.matched_t["hot_mle"].mean == pytest.approx(1.25, abs=2e-3)
    for metric in ("nll", "brier", "forward_kl", "reverse_kl"):  # at the matched temperature, no difference left
        assert comparison.matched["hot_mle", metric].mean == pytest.approx(0.0, abs=2e-3)
    assert comparison.margin["hot_mle"].mean == pytest.approx(0.0, abs=1e-12)
    assert verdict(comparison.margin["hot_mle"]) == "dominated"
    # 0.05 below MLE's point at T = 1, less below MLE's best temperature (this MLE is over-confident)
    assert -0.05 <= comparison.margin["better"].mean < -0.01
    assert verdict(comparison.margin["better"]) == "not dominated"
    assert comparison.matched_t["better"].mean == pytest.approx(1.0, abs=1e-6)  # the same entropy as MLE


def test_matched_temperature_on_a_known_curve_and_outside_the_grid():
    temps = np.array(GRID)
    entropy = np.log(temps) + 3.0  # entropy = 3 + log T
    assert matched_temperature(temps, entropy, 3.0 + np.log(1.37)) == pytest.approx(1.37, rel=1e-3)
    assert matched_temperature(temps, entropy, 10.0) is None


def test_the_report_prints_the_temperature_tables(runs):
    report = build(collect(runs))
    headline = report.blocks("suite")["suite-temperature-headline"]
    assert "| hot_mle | 1.250 ± 0.00" in headline and "| dominated |" in headline
    body = report.body
    assert "### Against MLE at the temperature of equal entropy" in body
    assert "### Does MLE at some temperature dominate it?" in body
    assert "| hot_mle | +0.000 ± 0.000 | dominated |" in body
    assert "### After temperature scaling" in body
    # ECE as trained (temp/1/ece + 0.02) against MLE's scaled ECE (0.01 · seed)
    assert "| better | 1.200 ± 0.000 |" in body


def test_the_report_draws_mle_temperature_curve_with_every_objective(runs, capsys):
    from benchmarks.reporting.report import write_report

    write_report(runs)
    assert (runs / "plots" / "temperature_frontier.png").stat().st_size > 10_000


def test_the_oracles_rows_move_no_mark_of_the_others(runs):
    """Rows of objectives that read the true source in training (bounds) are Holm-corrected apart: adding them
    leaves every other row's marks as they were."""
    before = compare(group(collect(runs)), [1, 2, 3]).significant
    for copy in ("oracle_kl", "oracle_js", "oracle_kl_eta"):
        for seed in (1, 2, 3):
            shutil.copytree(runs / "better" / f"seed_{seed}", runs / copy / f"seed_{seed}")
            path = runs / copy / f"seed_{seed}" / "results.json"
            results = json.loads(path.read_text())
            results["objective"] = copy
            results["config"]["objective"] = {"_target_": "objectives.oracle_kl.OracleKL", "eta": 0.5}
            path.write_text(json.dumps(results))
    after = compare(group(collect(runs)), [1, 2, 3]).significant
    assert before and {cell for cell in after if not cell[1].startswith("oracle")} == before
    assert {cell[1] for cell in after if cell[1].startswith("oracle")} == {"oracle_kl", "oracle_js", "oracle_kl_eta"}
