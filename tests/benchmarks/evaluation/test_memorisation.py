"""Canaries (data.canaries) and their evaluation (mem/): what is inserted where, exposure by both estimators against
direct computations, extraction, and the one-line errors of bad canary settings."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks.evaluation.memorisation import (
    canary_metrics,
    exposure_extrapolated,
    exposure_interpolated,
    log_perplexities,
)
from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import build
from lit_modules.core.canaries import CanaryConfig, plant

SMALL = "data.canaries={counts:[1,4],per_count:2,length:12,prefix_len:4,references:64}"
# sha256 of the debug=tiny train split's bytes before canaries existed: a run without them reads the same data
TINY_TRAIN_SHA256 = "20119325e67cc7476a6bab9a4b6a177d8c2f5e3ef25c8fb7fc872dfbc04a4183"


def tiny_data(*overrides: str):
    datamodule, _ = build(plan(compose(["debug=tiny", *overrides]), "mle"))
    datamodule.setup("fit")
    return datamodule


def test_without_canaries_the_train_split_is_unchanged_and_with_them_only_its_chosen_rows_change():
    plain, planted = tiny_data(), tiny_data(SMALL)
    assert hashlib.sha256(plain.blocks["train"].numpy().tobytes()).hexdigest() == TINY_TRAIN_SHA256
    assert plain.canaries is None
    canaries = planted.canaries
    assert canaries.tokens.shape == (4, 12) and canaries.counts.tolist() == [1, 1, 4, 4]
    for split in ("val", "test"):
        assert torch.equal(planted.blocks[split], plain.blocks[split])
    changed = (planted.blocks["train"] != plain.blocks["train"]).any(1).nonzero().flatten()
    assert set(changed.tolist()) <= set(canaries.rows.tolist()) and len(set(canaries.rows.tolist())) == 10
    rows = planted.blocks["train"]
    assert torch.equal(rows[canaries.rows, 12:], plain.blocks["train"][canaries.rows, 12:])  # only their start
    for tokens, count in zip(canaries.tokens, canaries.counts, strict=True):
        at_start = (rows[:, :12] == tokens).all(1).sum().item()
        assert at_start == count  # inserted exactly count times, each at a row's start
        for split in ("val", "test"):  # never in held-out data
            windows = planted.blocks[split].unfold(1, 12, 1)
            assert not (windows == tokens).all(-1).any()


def test_planting_is_a_function_of_the_seed_and_refuses_more_insertions_than_rows():
    train = torch.zeros(40, 17, dtype=torch.long)
    cfg = CanaryConfig(counts=[1, 2], per_count=3, length=6, prefix_len=2, references=16)
    alphabet = torch.arange(5, 50)
    a, first = plant(train, cfg, alphabet, seed=3)
    b, again = plant(train, cfg, alphabet, seed=3)
    _, other = plant(train, cfg, alphabet, seed=4)
    assert torch.equal(a, b) and torch.equal(first.tokens, again.tokens) and torch.equal(first.rows, again.rows)
    assert not torch.equal(first.tokens, other.tokens)
    assert first.tokens.min() >= 5 and first.references.shape == (16, 6)
    assert math.isclose(first.space_bits, 6 * math.log2(45))
    with pytest.raises(Exception, match="9 insertions .* the train split has 8"):
        plant(train[:8], cfg, alphabet, seed=3)


def test_exposure_estimators_match_their_definitions():
    references = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0])
    # interpolation: log2 R - log2(1 + references below); below all of them: log2 8 = 3 bits
    got = exposure_interpolated(np.array([0.5, 2.5, 9.0]), references)
    assert np.allclose(got, [3.0, 3.0 - math.log2(3), 3.0 - math.log2(9)])
    # extrapolation: a skew-normal fitted to normal references; two standard deviations below the mean
    rng = np.random.default_rng(0)
    normal = rng.normal(40.0, 2.0, 20_000)
    got = exposure_extrapolated(np.array([36.0, 40.0, -1e6]), normal, most=60.0)
    assert abs(got[0] + math.log2(stats.norm.cdf(-2.0))) < 0.15
    assert abs(got[1] - 1.0) < 0.1 and got[2] == 60.0  # the median: one bit; far below: capped


def test_log_perplexity_and_metrics_against_a_direct_computation(model):
    sequences = torch.randint(0, model.cfg.vocab_size, (6, 10))
    got = log_perplexities(model, sequences, batch_size=4, bf16=False)
    with torch.no_grad():
        logp = model(sequences[:, :-1]).double().log_softmax(-1)
    direct = -logp.gather(-1, sequences[:, 1:, None]).squeeze(-1).sum(-1)
    assert torch.allclose(got, direct, atol=1e-4)
    cfg = CanaryConfig(counts=[1, 2], per_count=2, length=10, prefix_len=3, references=32)
    _, canaries = plant(torch.zeros(8, 12, dtype=torch.long), cfg, torch.arange(model.cfg.vocab_size), seed=0)
    metrics = canary_metrics(model, canaries, batch_size=4, bf16=False)
    canary_lp = log_perplexities(model, canaries.tokens, 4, False).numpy()
    reference_lp = log_perplexities(model, canaries.references, 4, False).numpy()
    rank = exposure_interpolated(canary_lp, reference_lp)
    assert math.isclose(metrics["mem/exposure_rank_x2"], rank[2:].mean())
    assert math.isclose(metrics["mem/exposure_rank"], rank.mean())
    assert {k for k in metrics if k.startswith("mem/extracted")} == {f"mem/extracted{s}" for s in ("_x1", "_x2", "")}


def test_a_model_that_learned_a_canary_extracts_it(model):
    cfg = CanaryConfig(counts=[1], per_count=1, length=8, prefix_len=3, references=16)
    _, canaries = plant(torch.zeros(2, 9, dtype=torch.long), cfg, torch.arange(model.cfg.vocab_size), seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # fit the one canary
        logits = model(canaries.tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), canaries.tokens[:, 1:].flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    metrics = canary_metrics(model, canaries, batch_size=4, bf16=False)
    assert metrics["mem/extracted_x1"] == 1.0 and metrics["mem/exposure_rank_x1"] == 4.0  # log2 16: above all


def test_a_run_with_canaries_reports_them(tmp_path, run_tiny):
    metrics = run_tiny([SMALL], tmp_path)["metrics"]
    for count in (1, 4):
        assert 0.0 <= metrics[f"mem/extracted_x{count}"] <= 1.0
        assert 0.0 <= metrics[f"mem/exposure_rank_x{count}"] <= math.log2(64)
        assert metrics[f"mem/exposure_x{count}"] >= 0.0


@pytest.mark.parametrize(
    "setting, names",
    [
        ("{counts:[0,2]}", "data.canaries.counts="),
        ("{counts:[1.5]}", "data.canaries.counts="),
        ("{counts:[]}", "data.canaries.counts="),
        ("{per_count:0}", "data.canaries.per_count=0"),
        ("{length:98}", "data.canaries.length=98"),  # the tiny blocks hold 97 tokens
        ("{length:8,prefix_len:8}", "data.canaries.prefix_len=8"),
        ("{colour:1}", "data.canaries.colour"),
        ("{per_count:5}", "315 insertions"),  # more rows than the tiny train split's 257
    ],
)
def test_bad_canaries_are_one_line(tmp_path, cli_error, setting, names):
    assert names in cli_error([f"data.canaries={setting}"], tmp_path)
