"""What a run writes to TensorBoard beyond Lightning's own scalars: final metrics, samples, the entropy
histogram, one HPARAMS row per run and a custom-scalars layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from objectives.base import objective_knobs

if TYPE_CHECKING:
    from benchmarks.runner.config import Plan


def log_evaluation(logger, evaluation: dict, metrics: dict, step: int) -> None:
    """Final metrics as scalars, a few samples per decoding in the text tab, the entropy histogram."""
    if logger is None:
        return
    writer = logger.experiment
    for key, value in metrics.items():
        writer.add_scalar(f"final/{key}", value, step)
    writer.add_histogram("tf/entropy_per_token", evaluation["entropies"], step)
    for record in evaluation["samples"]:
        if record["prompt_index"] < 4:  # the first 4 prompts of every decoding, prompt and continuation
            text = f"**prompt:** {record['prompt_text']}\n\n**{record['decoding']}:** {record['text']}"
            writer.add_text(f"samples/{record['decoding']}/prompt_{record['prompt_index']}", text, step)
    writer.flush()


HPARAM_METRICS = (
    "tf/",
    "gt/entropy_rate",
    "gt/forward_kl",
    "gt/reverse_kl",
    "seq_rep_4",
    "distinct_4",
    "self_bleu_4",
    "sample_nll",
    "val/nll",
)


def log_hparams(logger, plan: Plan, metrics: dict) -> None:
    """One row per run in TensorBoard's HPARAMS tab: the knobs and the final key metrics."""
    if logger is None:
        return
    knobs = {f"objective.{k}": v for k, v in objective_knobs(plan.cfg.objective).items()}
    params = {
        "objective": plan.objective_name,
        **knobs,
        "seed": plan.seed,
        "model.d_model": plan.model.d_model,
        "model.n_layer": plan.model.n_layer,
        "optim.lr": plan.optim.lr,
        "trainer.max_steps": plan.trainer.max_steps,
    }
    params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    key_metrics = {
        f"hp/{k}": v for k, v in metrics.items() if k.startswith(HPARAM_METRICS) or k.endswith(HPARAM_METRICS)
    }
    logger.log_hyperparams(params, key_metrics)
    logger.experiment.add_custom_scalars(CUSTOM_SCALARS)
    logger.experiment.flush()


# TensorBoard's custom-scalars tab: each key metric in one chart, every run a line.
CUSTOM_SCALARS = {
    "objbench": {
        "validation NLL": ["Multiline", ["val/nll"]],
        "training loss": ["Multiline", ["train/loss"]],
        "final teacher-forced": ["Multiline", [r"final/tf/(nll|entropy|ece)"]],
        "final ground truth": ["Multiline", [r"final/gt/(forward_kl|reverse_kl|entropy_rate)"]],
        "final greedy / top-p repetition": ["Multiline", [r"final/gen/(greedy|top_p)/seq_rep_4"]],
    }
}
