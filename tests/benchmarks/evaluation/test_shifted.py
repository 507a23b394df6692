"""Out-of-distribution evaluation on the synthetic source: the source shifted by each ρ of eval.ood_shifts, with
its exact conditionals; every metric is that of the shifted split's tokens."""

from __future__ import annotations

import torch

from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import build


def test_a_run_is_evaluated_on_each_shifted_source(tmp_path, run_tiny):
    results = run_tiny(["eval.ood_shifts=[0.5,1.0]", "eval.ood_tokens=400"], tmp_path)
    metrics = results["metrics"]
    for split in ("shift0.5", "shift1"):
        for metric in ("nll", "entropy", "ece", "rms_ce", "mce", "brier", "entropy_rate", "forward_kl", "reverse_kl"):
            assert f"ood/{split}/{metric}" in metrics
    # the split's NLL and entropy rate, computed directly: the final model on the shifted blocks
    p = plan(compose(["debug=tiny", "eval.ood_shifts=[0.5,1.0]", "eval.ood_tokens=400"]), "mle")
    datamodule, system = build(p)
    datamodule.setup("fit")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    system.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    blocks, source = datamodule.ood_splits([0.5, 1.0], [], 400)["shift1"]
    assert blocks.shape == (4, 97)  # 400 tokens: 4 whole rows of block_size + 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = system.model.hidden(blocks[:, :-1])
    logits = h.float() @ system.model.output_embedding.float().T + system.model.output_bias.float()
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), blocks[:, 1:].flatten()).item()
    assert abs(metrics["ood/shift1/nll"] - nll) < 1e-3
    truth = source.conditional_entropy(blocks)[:, 1:].mean().item()
    assert abs(metrics["ood/shift1/entropy_rate"] - truth) < 1e-4
    assert metrics["ood/shift1/forward_kl"] > metrics["ood/shift0.5/forward_kl"] > metrics["gt/forward_kl"]


def test_no_shifts_no_shifted_metrics_and_bad_shifts_are_one_line(tmp_path, run_tiny, cli_error):
    assert not any(k.startswith("ood/") for k in run_tiny(["eval.ood_shifts=[]"], tmp_path / "none")["metrics"])
    for i, bad in enumerate(("[0]", "[1.5]", "[-0.2]", "0.5", "[a]")):
        line = cli_error([f"eval.ood_shifts={bad}"], tmp_path / f"bad{i}")
        assert "eval.ood_shifts=" in line and "(0, 1]" in line
    assert "eval.ood_tokens=0" in cli_error(["eval.ood_tokens=0"], tmp_path / "tokens")
    assert "eval.ood_prompts=-1" in cli_error(["eval.ood_prompts=-1"], tmp_path / "prompts")


def test_sampled_continuations_of_shifted_prompts_against_a_direct_computation(tmp_path, run_tiny):
    from benchmarks.evaluation.evaluate import EvalConfig, ood_continuations
    from lit_modules.core.decoding import DecodingConfig, generate

    settings = ["eval.ood_shifts=[1.0]", "eval.ood_tokens=400", "eval.ood_prompts=3", "eval.ood_cont_len=10"]
    metrics = run_tiny(settings, tmp_path)["metrics"]
    assert {"ood/shift1/cont_entropy", "ood/shift1/cont_true_nll", "ood/shift1/cont_seq_rep_4"} <= set(metrics)
    datamodule, system = build(plan(compose(["debug=tiny", *settings]), "mle"))
    datamodule.setup("fit")
    blocks, source = datamodule.ood_splits([1.0], [], 400)["shift1"]
    model = system.model  # random weights: the wiring, not the values, is what is checked here
    got = ood_continuations(model, blocks, source, EvalConfig(prefix_len=8, ood_prompts=3, ood_cont_len=10), False)
    conts = generate(model, blocks[:3, :8], 10, DecodingConfig(strategy="sample"), torch.Generator().manual_seed(0))
    seqs = torch.cat([blocks[:3, :8], conts], 1)
    true_nll = -source.log_conditionals(seqs)[:, 8:].gather(-1, conts[..., None]).double().mean()
    assert abs(got["cont_true_nll"] - true_nll.item()) < 1e-4
    with torch.no_grad():
        logp = model(seqs[:, :-1])[:, 7:].float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1).mean().item()
    assert abs(got["cont_entropy"] - entropy) < 1e-3
    none = run_tiny(["eval.ood_prompts=0"], tmp_path / "none")["metrics"]
    assert not any("/cont_" in key for key in none) and "ood/shift1/nll" in none


def test_the_in_distribution_temperature_is_applied_out_of_distribution_too(tmp_path, run_tiny):
    """ood/<split>/ts_*: the OOD split's NLL, entropy and ECE at the temperature fitted on validation data."""
    metrics = run_tiny(["eval.ood_shifts=[1.0]", "eval.ood_tokens=400"], tmp_path)["metrics"]
    assert {"ood/shift1/ts_nll", "ood/shift1/ts_entropy", "ood/shift1/ts_ece"} <= set(metrics)
    hotter = metrics["ts/temperature"] > 1.0
    assert (metrics["ood/shift1/ts_entropy"] > metrics["ood/shift1/entropy"]) == hotter
    off = run_tiny(["eval.ood_shifts=[1.0]", "eval.ood_tokens=400", "eval.temperature_scaling=false"], tmp_path / "b")
    assert not any("/ts_" in k for k in off["metrics"])
