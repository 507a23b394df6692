"""Teacher-forced metrics of a trained model on the test split (``tf/``), and on the synthetic source the
exact divergences from the truth (``gt/``): every token's full-softmax prediction, whatever the objective."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
import torchmetrics

from benchmarks.evaluation.metrics import in_previous_targets
from benchmarks.evaluation.names import REP_WINDOW
from benchmarks.evaluation.temperature import (
    TEMPERED_COLUMNS,
    TEMPERED_TRUTH_COLUMNS,
    temperature_name,
    tempered_stats,
)
from lit_modules.core.head import log_softmax_nll_
from lit_modules.core.model import GPT

ECE_BINS = 15
SUMS = ("nll", "entropy", "brier", "acc", "rep", "wrep", "abs_log_z", "gt_entropy", "forward_kl", "reverse_kl")


def autocast_context(model: GPT, bf16: bool) -> torch.autocast:
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


def batches(blocks: torch.Tensor, batch_size: int, max_batches: int | None = None) -> Iterator[torch.Tensor]:
    for i, start in enumerate(range(0, blocks.shape[0], batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield blocks[start : start + batch_size]


@dataclass
class TeacherForced:
    metrics: dict[str, float]
    entropies: torch.Tensor  # per-token predictive entropy (for the histogram)
    reliability: dict[str, list[float]] = field(default_factory=dict)  # per-bin confidence / accuracy / count


# Buckets of the gold token by its frequency in the train split: the vocabulary sorted by train count, most frequent
# first, cut where the types before it cover 50% and 90% of the train tokens (types never seen are rare).
FREQUENCY_BUCKETS = (("frequent", 0.0), ("middle", 0.5), ("rare", 0.9))  # (name, train mass before its first type)


def frequency_buckets(train_counts: torch.Tensor) -> torch.Tensor:
    """(V,) train-split counts -> (V,) bucket index of every type (``FREQUENCY_BUCKETS``): a type's bucket is the
    last one whose start the share of train tokens of the more frequent types reaches."""
    counts = train_counts.double().flatten()
    order = counts.argsort(descending=True, stable=True)
    before = (counts[order].cumsum(0) - counts[order]) / counts.sum().clamp_min(1.0)
    sorted_bucket = sum((before >= start).long() for _, start in FREQUENCY_BUCKETS[1:])
    return torch.empty_like(order).scatter_(0, order, sorted_bucket)


EVAL_ROWS = 256  # tokens per chunk of the evaluation's logits: each chunk's fp32 passes stay in the cache
STAT_COLUMNS = ("nll", "entropy", "brier", "confidence", "argmax", "abs_log_z")
TRUTH_COLUMNS = ("gt_entropy", "forward_kl", "reverse_kl")


def token_stats(
    z: torch.Tensor, targets: torch.Tensor, true_logp: torch.Tensor | None = None, temperatures: tuple[float, ...] = ()
) -> torch.Tensor:
    """Per token, from fp32 logits z (r, V) (overwritten), targets (r,) and the source's log P(· | x_<=t) (r, V)
    where known -> (r, k): the columns of ``STAT_COLUMNS`` (and ``TRUTH_COLUMNS``), then those of
    ``tempered_stats`` at each of ``temperatures``. Each sum over the vocabulary is one dot product of two rows:
    entropy −Σ p log p, Brier (1950) Σ_v (p_v − 1[v = y])² = Σ p² − 2 p_y + 1, |log Σ_v exp z_v| (0:
    self-normalised), and the exact H(P), KL(P‖Q) = Σ P log P − Σ P log Q and KL(Q‖P) = Σ Q log Q − Σ Q log P of
    the model Q against the source P."""
    first = z[:, 0].clone()
    logp, nll = log_softmax_nll_(z, targets)  # log Q in z's memory
    probs = logp.exp()
    neg_entropy = torch.linalg.vecdot(probs, logp)
    brier = torch.linalg.vecdot(probs, probs) - 2 * (-nll).exp() + 1
    top_logp, argmax = logp.max(-1)
    columns = [nll, -neg_entropy, brier, top_logp.exp(), argmax.float(), (first - logp[:, 0]).abs()]
    if true_logp is not None:
        neg_true_entropy = torch.linalg.vecdot(true_logp.exp(), true_logp)
        cross_entropy = -torch.linalg.vecdot(true_logp.exp(), logp)
        columns += [
            -neg_true_entropy,
            neg_true_entropy + cross_entropy,
            neg_entropy - torch.linalg.vecdot(probs, true_logp),
        ]
    stats = torch.stack(columns, dim=-1)
    if not temperatures:
        return stats
    truth = () if true_logp is None else (true_logp, -cross_entropy, neg_true_entropy)
    return torch.cat([stats, tempered_stats(logp, nll, temperatures, *truth)], dim=-1)


@dataclass
class _Tokens:
    """What the metrics over all tokens need, gathered batch by batch."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    count: int = 0
    predicted_ids: list[torch.Tensor] = field(default_factory=list)
    entropies: list[torch.Tensor] = field(default_factory=list)
    confidences: list[torch.Tensor] = field(default_factory=list)
    correct: list[torch.Tensor] = field(default_factory=list)
    nlls: list[torch.Tensor] = field(default_factory=list)
    buckets: list[torch.Tensor] = field(default_factory=list)  # the gold token's frequency bucket, where known
    with_truth: bool = False
    temperatures: tuple[float, ...] = ()  # token_stats' tempered columns follow, in this order
    tempered_sums: dict[tuple[int, str], float] = field(default_factory=dict)  # (index of T, column): sum
    tempered_confidences: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    tempered_correct: list[torch.Tensor] = field(default_factory=list)  # of the tokens with tempered columns
    tempered_count: int = 0
    fitted: float | None = None  # the last of ``temperatures`` is this run's fitted one (ts/), not the grid's

    def add(self, stats: torch.Tensor, targets: torch.Tensor, bucket_of: torch.Tensor | None = None) -> None:
        """One batch's ``token_stats`` (B, T, k) and targets (B, T); ``bucket_of`` (V,): each type's frequency
        bucket."""
        names = STAT_COLUMNS + (TRUTH_COLUMNS if self.with_truth else ())
        column = dict(zip(names, stats[..., : len(names)].unbind(-1), strict=True))
        argmax = column["argmax"].long()
        hit = argmax == targets
        repeat = in_previous_targets(argmax, targets, REP_WINDOW)
        for name, values in column.items():
            if name in SUMS:
                self.sums[name] += values.double().sum().item()
        self.sums["acc"] += hit.sum().item()
        self.sums["rep"] += repeat.sum().item()
        self.sums["wrep"] += (repeat & ~hit).sum().item()
        if stats.shape[-1] > len(names):
            self.add_tempered(stats[..., len(names) :], hit)
        self.predicted_ids.append(argmax.unique())
        self.entropies.append(column["entropy"].flatten().cpu())
        self.confidences.append(column["confidence"].flatten().cpu())
        self.correct.append(hit.flatten().cpu())
        if bucket_of is not None:
            self.nlls.append(column["nll"].flatten().cpu())
            self.buckets.append(bucket_of[targets.flatten().cpu()])
        self.count += targets.numel()

    def add_tempered(self, stats: torch.Tensor, hit: torch.Tensor) -> None:
        """The columns of ``tempered_stats`` (B, T, k · len(temperatures)); whether each token's argmax is right
        (B, T) (the same at every temperature)."""
        self.tempered_correct.append(hit.flatten().cpu())
        self.tempered_count += hit.numel()
        per_t = TEMPERED_COLUMNS + (TEMPERED_TRUTH_COLUMNS if self.with_truth else ())
        names = [(i, name) for i in range(len(self.temperatures)) for name in per_t]
        for (i, name), values in zip(names, stats.unbind(-1), strict=True):
            if name == "confidence":
                self.tempered_confidences.setdefault(i, []).append(values.flatten().cpu())
            else:
                self.tempered_sums[i, name] = self.tempered_sums.get((i, name), 0.0) + values.double().sum().item()

    def tempered(self, i: int, battery: bool) -> dict[str, float]:
        """The metrics at the i-th temperature: mean NLL, entropy, Brier (and exact KLs); its ECE, or with
        ``battery`` every calibration error of ``calibration_errors``."""
        out = {name: total / self.tempered_count for (j, name), total in self.tempered_sums.items() if j == i}
        confidence, correct = torch.cat(self.tempered_confidences[i]), torch.cat(self.tempered_correct)
        if battery:
            out.update({k.split("/", 1)[1]: v for k, v in calibration_errors(confidence, correct).items()})
        else:
            out["ece"] = torchmetrics.functional.classification.binary_calibration_error(
                confidence.double(), correct.long(), n_bins=ECE_BINS, norm="l1"
            ).item()
        return out

    def metrics(self) -> dict[str, float]:
        sums, count = self.sums, self.count
        confidence, correct = torch.cat(self.confidences), torch.cat(self.correct)
        metrics = {
            "tf/nll": sums["nll"] / count,
            "tf/ppl": math.exp(sums["nll"] / count),
            "tf/entropy": sums["entropy"] / count,
            **calibration_errors(confidence, correct),
            "tf/brier": sums["brier"] / count,
            "tf/acc": sums["acc"] / count,
            f"tf/rep_{REP_WINDOW}": sums["rep"] / count,
            f"tf/wrep_{REP_WINDOW}": sums["wrep"] / count,
            "tf/uniq": float(torch.cat(self.predicted_ids).unique().numel()),
            "tf/abs_log_z": sums["abs_log_z"] / count,
        }
        if self.buckets:
            metrics.update(self.by_frequency(confidence, correct))
        if self.with_truth:
            metrics["gt/entropy_rate"] = sums["gt_entropy"] / count
            metrics["gt/forward_kl"] = sums["forward_kl"] / count
            metrics["gt/reverse_kl"] = sums["reverse_kl"] / count
        if not self.tempered_count:
            return metrics
        grid = self.temperatures[:-1] if self.fitted is not None else self.temperatures
        for i, t in enumerate(grid):
            metrics.update({f"temp/{temperature_name(t)}/{k}": v for k, v in self.tempered(i, False).items()})
        if self.fitted is not None:
            metrics["ts/temperature"] = self.fitted
            metrics.update({f"ts/{k}": v for k, v in self.tempered(len(grid), True).items()})
        return metrics

    def by_frequency(self, confidence: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
        """NLL and top-label ECE of the tokens whose gold token is in each frequency bucket (absent when none is)."""
        nll, bucket = torch.cat(self.nlls).double(), torch.cat(self.buckets)
        binary = torchmetrics.functional.classification.binary_calibration_error
        out = {}
        for index, (name, _) in enumerate(FREQUENCY_BUCKETS):
            mask = bucket == index
            if mask.any():
                out[f"tf/nll_{name}"] = nll[mask].mean().item()
                out[f"tf/ece_{name}"] = binary(
                    confidence[mask].double(), correct[mask].long(), n_bins=ECE_BINS, norm="l1"
                ).item()
        return out


@torch.no_grad()
def teacher_forced(
    model: GPT,
    blocks: torch.Tensor,
    batch_size: int,
    bf16: bool,
    max_batches: int | None = None,
    source=None,
    train_counts: torch.Tensor | None = None,
    temperatures: tuple[float, ...] = (),
    fitted_temperature: float | None = None,
    tempered_batches: int | None = None,
) -> TeacherForced:
    """tf/ metrics over test blocks (N, T+1); gt/ ones too when ``source`` gives exact conditionals; NLL and ECE
    by the gold token's frequency bucket (tf/nll_rare, ...) when ``train_counts`` (V,) gives the train split's;
    the metrics of the tempered predictions at each of ``temperatures`` (temp/<T>/...) and at the run's
    ``fitted_temperature`` (ts/...), over the first ``tempered_batches`` batches (None: all)."""
    model.eval()
    device = next(model.parameters()).device
    fitted = () if fitted_temperature is None else (fitted_temperature,)
    temps = (*temperatures, *fitted)
    tokens = _Tokens(with_truth=source is not None, temperatures=temps, fitted=fitted_temperature)
    stats_fn = partial(token_stats, temperatures=temps) if temps else token_stats
    bucket_of = frequency_buckets(train_counts) if train_counts is not None else None
    truth = true_log_conditionals(source, blocks, batch_size, max_batches) if source is not None else None
    for i, batch in enumerate(batches(blocks, batch_size, max_batches)):
        batch = batch.to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        per_token = (targets,) if truth is None else (targets, truth[i].to(device))  # P(x_{t+1} | x_<=t)
        with autocast_context(model, bf16):
            h = model.hidden(inputs)
            fn = stats_fn if tempered_batches is None or i < tempered_batches else token_stats
            stats = model.map_logits(h, fn, *per_token, rows=EVAL_ROWS)  # the head's fp32 logits
        tokens.add(stats, targets, bucket_of)
    confidence, correct = torch.cat(tokens.confidences), torch.cat(tokens.correct)
    return TeacherForced(
        tokens.metrics(),
        torch.cat(tokens.entropies),
        reliability_bins(confidence, correct),
    )


def calibration_errors(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, float]:
    """Top-label calibration of next-token predictions, from each token's confidence (max probability)
    and whether its argmax was right: with ``n_bins`` equal-width bins, torchmetrics' calibration error
    (Guo et al. 2017; the binary form on (confidence, correct) is the multiclass top-label one) with
    norm l1 (ECE), l2 (RMS calibration error) and max (MCE); and an ECE over equal-mass bins (Nixon et
    al. 2019; Roelofs et al. 2022: less biased when confidences crowd into a few bins)."""
    binary = torchmetrics.functional.classification.binary_calibration_error
    confidence, correct = confidence.double(), correct.long()
    out = {
        f"tf/{name}": binary(confidence, correct, n_bins=n_bins, norm=norm).item()
        for name, norm in (("ece", "l1"), ("rms_ce", "l2"), ("mce", "max"))
    }
    out["tf/ece_equal_mass"] = equal_mass_ece(confidence, correct.double(), n_bins)
    return out


def equal_mass_ece(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n) |accuracy_b − confidence_b| over ``n_bins`` bins of (near) equal count, made by sorting
    the tokens by confidence (bin sizes as ``numpy.array_split``)."""
    order = confidence.argsort(stable=True)
    n = confidence.numel()
    total = 0.0
    for chunk in torch.tensor_split(order, min(n_bins, n)):
        total += abs(correct[chunk].sum().item() - confidence[chunk].sum().item())
    return total / n


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (for reliability diagrams)."""
    index = (confidence * n_bins).long().clamp_max(n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    conf = torch.bincount(index, weights=confidence.double(), minlength=n_bins) / count.clamp_min(1)
    acc = torch.bincount(index, weights=correct.double(), minlength=n_bins) / count.clamp_min(1)
    return {"confidence": conf.tolist(), "accuracy": acc.tolist(), "count": count.tolist()}


_TRUTH_CACHE: dict[tuple, list[torch.Tensor]] = {}  # the splits' exact conditionals, the least recent first
TRUTH_CACHE_BYTES = 2 << 30  # in all; a larger table is recomputed at every call


def true_log_conditionals(source, blocks: torch.Tensor, batch_size: int, max_batches: int | None) -> list[torch.Tensor]:
    """The source's log P(x_{t+1} = · | x_<=t) of every batch of a split, (b, T, V) each, computed in the same
    batches as ``teacher_forced`` reads them. They depend on the split only, not on the model, so a process that
    evaluates many runs on the same splits (a suite: the test split and the shifted ones) computes them once. Kept
    for the splits asked for last, up to 2 GiB in all (0.5 GB for the default test split)."""
    key = (source.fingerprint(), blocks.shape, hash(blocks.numpy().tobytes()), batch_size, max_batches)
    if key in _TRUTH_CACHE:
        _TRUTH_CACHE[key] = _TRUTH_CACHE.pop(key)  # the most recent now
        return _TRUTH_CACHE[key]
    truth = [
        source.log_conditionals(batch.cpu())[:, 1:].contiguous() for batch in batches(blocks, batch_size, max_batches)
    ]
    size = sum(t.numel() * t.element_size() for t in truth)
    if size > TRUTH_CACHE_BYTES:
        return truth
    while _TRUTH_CACHE and size + sum(t.numel() * t.element_size() for v in _TRUTH_CACHE.values() for t in v) > (
        TRUTH_CACHE_BYTES
    ):
        _TRUTH_CACHE.pop(next(iter(_TRUTH_CACHE)))
    _TRUTH_CACHE[key] = truth
    return truth
