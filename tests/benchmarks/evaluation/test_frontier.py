"""The sampled quality-diversity frontier: every point of eval.frontier's preset on every run, its T = 1 point the
plain sampling decoding's continuations, a one-line error for an unknown preset."""

from __future__ import annotations

import pytest

from benchmarks.evaluation.frontier import FRONTIERS, frontier_decodings


def test_every_point_of_the_preset_is_sampled_and_its_t1_point_is_plain_sampling(tmp_path, run_tiny):
    metrics = run_tiny(["eval.frontier=default"], tmp_path)["metrics"]
    names = frontier_decodings("default")
    assert len(names) == sum(len(v) for v in FRONTIERS["default"].values()) == 14
    for name in names:
        assert {f"frontier/{name}/{m}" for m in ("true_nll", "distinct_4", "self_bleu_4")} <= set(metrics)
    # the same prompts and generator seed as eval.decodings' plain sampling: the same continuations
    assert metrics["frontier/T1/true_nll"] == pytest.approx(metrics["gt/sample/sample_nll"], rel=1e-9)
    assert metrics["frontier/T1/self_bleu_4"] == pytest.approx(metrics["gen/sample/self_bleu_4"], rel=1e-9)
    # the two halves of the prompts, kept apart for the report's split test: their mean is the whole
    halves = (metrics["frontier/T1/true_nll_a"] + metrics["frontier/T1/true_nll_b"]) / 2
    assert halves == pytest.approx(metrics["frontier/T1/true_nll"], rel=1e-9)
    assert {"frontier/T1/self_bleu_4_a", "frontier/T1/self_bleu_4_b"} <= set(metrics)
    # colder sampling: continuations more probable under the true source
    assert metrics["frontier/T0.5/true_nll"] < metrics["frontier/T1/true_nll"] < metrics["frontier/T1.5/true_nll"]
    off = run_tiny(["eval.frontier=off"], tmp_path / "off")["metrics"]
    assert not any(k.startswith("frontier/") for k in off)


def test_frontier_presets_are_valid_decodings_and_an_unknown_one_is_one_line(tmp_path, cli_error):
    for preset in FRONTIERS:
        frontier_decodings(preset)  # each point checks its own threshold's range
    assert len(frontier_decodings("full")) == 11 + 7 * 4
    line = cli_error(["eval.frontier=fast"], tmp_path)
    assert "eval.frontier='fast'" in line and "off, default, full" in line
