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


def test_a_decoding_already_decoded_under_another_name_is_reused_not_decoded_again(monkeypatch):
    import torch

    from benchmarks.evaluation import generation
    from lit_modules.core.decoding import DecodingConfig
    from lit_modules.core.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=32, context=24, n_layer=1, n_head=2, d_model=16))
    prompts = torch.randint(0, 32, (6, 4), generator=torch.Generator().manual_seed(0))
    calls = []
    real = generation.generate
    monkeypatch.setattr(generation, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    decoded: generation.Decoded = {}
    sample = DecodingConfig(name="sample", strategy="sample")
    first = generation.decode_all(model, prompts, {"sample": sample}, 8, 4, False, 3, decoded)["sample"]
    assert len(calls) == 2  # two batches of at most 4 prompts
    again = generation.decode_all(
        model, prompts, {"T1": DecodingConfig(name="T1", strategy="sample")}, 8, 4, False, 3, decoded
    )
    assert len(calls) == 2 and torch.equal(again["T1"], first)
    # other settings, another seed or other prompts are decoded
    hot = DecodingConfig(name="T2", strategy="sample", temperature=2.0)
    generation.decode_all(model, prompts, {"T2": hot}, 8, 4, False, 3, decoded)
    generation.decode_all(model, prompts, {"T1": sample}, 8, 4, False, 4, decoded)
    generation.decode_all(model, prompts.flip(0), {"T1": sample}, 8, 4, False, 3, decoded)
    assert len(calls) == 8
    fresh = generation.decode_all(model, prompts, {"T1": sample}, 8, 4, False, 3)["T1"]
    assert torch.equal(fresh, first)  # what reuse returns is what decoding again gives
