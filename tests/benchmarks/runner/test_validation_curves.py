"""eval.val_calibration: every validation also measures entropy and ECE (kept in the history, equal to a direct
computation); eval.at_best: the model of the lowest validation NLL is evaluated too (early stopping's model)."""

from __future__ import annotations

import json

import torch
import torchmetrics

from benchmarks.evaluation.evaluate import evaluate_run
from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import build, evaluate_best

OVERRIDES = ["eval.val_calibration=true", "eval.at_best=true", "trainer.max_steps=4", "trainer.val_check_interval=2"]


def test_validation_entropy_and_ece_are_the_direct_computation(tmp_path, run_tiny):
    results = run_tiny(OVERRIDES, tmp_path)
    history = results["history"]
    assert [s for s, _ in history["val/entropy"]] == [s for s, _ in history["val/ece"]] == [2, 4]
    # the final weights on the validation batch (debug=tiny validates on one), from the full fp32 logits
    p = plan(compose(["debug=tiny", *OVERRIDES]), "mle")
    datamodule, system = build(p)
    datamodule.setup("fit")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    system.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = system.model.hidden(batch[:, :-1])
    logits = (h.float() @ system.model.output_embedding.float().T + system.model.output_bias.float()).double()
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1).mean().item()
    confidence, argmax = logp.exp().max(-1)
    correct = (argmax == batch[:, 1:]).long()
    ece = torchmetrics.functional.classification.binary_calibration_error(
        confidence.flatten(), correct.flatten(), n_bins=15, norm="l1"
    ).item()
    assert abs(history["val/entropy"][-1][1] - entropy) < 1e-4
    assert abs(history["val/ece"][-1][1] - ece) < 1e-4
    # the lowest validation NLL's step and value; its evaluation is the final one's when that is the best
    best_step, best_nll = min(history["val/nll"], key=lambda x: x[1])
    assert results["at_best"]["step"] == best_step and results["at_best"]["val/nll"] == best_nll
    assert (tmp_path / "samples_at_best.jsonl").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["at_best"]["metrics"]["tf/nll"] == results["at_best"]["metrics"]["tf/nll"]


def test_the_best_steps_model_is_evaluated_and_the_final_one_kept(tmp_path):
    p = plan(compose(["debug=tiny", *OVERRIDES]), "mle")
    datamodule, system = build(p)
    datamodule.setup("fit")
    final = {k: v.clone() for k, v in system.model.state_dict().items()}
    earlier = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in final.items()}
    system.val_history = [(2, 5.0), (4, 5.5)]
    system.best = (2, 5.0, earlier)
    at_best = evaluate_best(p, datamodule, system, {"metrics": {}, "samples": []}, bf16=False)
    assert at_best["step"] == 2 and at_best["val/nll"] == 5.0
    assert all(torch.equal(system.model.state_dict()[k], final[k]) for k in final)  # the final weights stay
    system.model.load_state_dict(earlier)
    direct = evaluate_run(system.model, datamodule, p.decodings, p.eval, p.seed, False)["metrics"]
    assert at_best["metrics"]["tf/nll"] == direct["tf/nll"] and at_best["metrics"]["val/nll"] == 5.0
