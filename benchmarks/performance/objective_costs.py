"""The objective-cost table of the performance benchmark: every objective's training step against MLE's, each at the
knobs under which it does its full work (``Objective.full_work_knobs``)."""

from __future__ import annotations

import torch

from benchmarks.performance.harness import Bench, Shape, paired
from lit_modules.core.kernels import page_faults_per_step


def objectives_at_full_work(names: list[str] | None = None) -> dict[str, torch.nn.Module]:
    """Every objective of ``configs/objective/`` as its yaml builds it, with the knobs its class names in
    ``full_work_knobs`` (a pairwise term from step 0, a sequence-level step every step): a cost is that
    of the objective's dearest step, not an average over steps that skip work. A new objective's yaml
    is timed with no change here. ``names``: only these."""
    from benchmarks.runner.config import available, load_option
    from objectives.registry import build_objective, objective_class

    objectives = {}
    for name in names or available("objective"):
        config = load_option("objective", name)
        objectives[name] = build_objective({**config, **objective_class(config["_target_"]).full_work_knobs})
    return objectives


def objective_costs(
    bench: Bench, bf16: bool, pairs: int, steps: int, names: list[str] | None = None
) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """Training-step time of each objective (``objectives_at_full_work``) relative to MLE's at the bench
    shape: the median ratio of ``pairs`` alternating pairs of ``steps``-step windows. A ±5% question needs
    more, shorter pairs than the other figures (MLE against itself wanders by several percent over a few long
    pairs: docs/performance.md). Also returns the objectives whose sequences do not fit the shape's rows (a
    small preset) or that need a synthetic source of a vocabulary it cannot have, each with its one-line reason,
    as run.py would refuse them, and the page faults a step of each objective timed and of MLE (``mle``; none
    where the OS does not count them): a ratio measured while the steps page-fault is the allocator's, not
    the objective's. ``names``: only these objectives."""
    from objectives.base import KnobError
    from objectives.mle import MLE

    costs, skipped, faults = {}, {}, {}
    for name, objective in objectives_at_full_work(names).items():
        try:
            objective.check_fits(bench.shape.objective_length)
            this = bench.train_step(objective, bf16)  # its setup: an oracle needs the synthetic source's vocabulary
        except KnobError as e:
            skipped[name] = str(e)
            continue
        mle = bench.train_step(MLE(), bf16)
        costs[name] = paired(mle, this, bench.warmup, steps, pairs, bench.sync)[2]
        for key, step in (("mle", mle), (name, this)):
            counted = page_faults_per_step(step, steps, bench.sync)
            if counted is not None:
                faults[key] = min(counted, faults.get(key, counted))
    return costs, skipped, faults


def nce_cost_at_large_vocab(preset: dict, device: str, bf16: bool, warmup: int, steps: int, repeats: int) -> float:
    """NCE's step time over MLE's at vocabulary 32768 (NCE scores k + 1 rows of the output embedding, the
    softmax all V): the median ratio of alternating windows."""
    from objectives.mle import MLE

    big = Bench(Shape(**{**preset, "vocab_size": 32768}), device, warmup, steps, repeats)
    nce = objectives_at_full_work()["nce"]  # as configs/objective/nce.yaml builds it
    mle_step, nce_step = big.train_step(MLE(), bf16), big.train_step(nce, bf16)
    return paired(mle_step, nce_step, big.warmup, big.steps, big.repeats, big.sync)[2]
