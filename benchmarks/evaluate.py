"""Evaluation of a trained backbone: teacher-forced metrics, ground truth, generation.

- ``tf/``: full-softmax metrics on the test split, whatever the training objective;
- ``gt/``: exact divergences from the source (synthetic data only, where the truth is known);
- ``gen/<decoding>/`` and ``gen/human/``: text metrics of continuations of held-out prompts,
  ``gt/<decoding>/sample_nll`` their NLL under the true source.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torchmetrics
from omegaconf import DictConfig

from benchmarks.metrics import NgramIndex, copy_share, generation_metrics, in_previous_targets, per_continuation
from lit_modules.decoding import DecodingConfig, generate
from lit_modules.model import GPT

REP_WINDOW = 128
ECE_BINS = 15


TF_METRICS = (
    "nll",
    "ppl",
    "entropy",
    "ece",
    "ece_equal_mass",
    "rms_ce",
    "mce",
    "brier",
    "acc",
    f"rep_{REP_WINDOW}",
    f"wrep_{REP_WINDOW}",
    "uniq",
)
GT_METRICS = ("entropy_rate", "forward_kl", "reverse_kl")
GEN_METRICS = (
    *(f"seq_rep_{n}" for n in range(1, 5)),
    "uniq_seq",
    *(f"{name}_{n}" for name in ("distinct", "unique_ngram_share", "hapax_share") for n in range(1, 5)),
    "zipf",
    "self_bleu_4",
    "rep_rate",
    "loop_rate",
    "entropy",
    "copy_rate_8",
)


def metric_names(decodings: list[str], synthetic: bool) -> list[str]:
    """Every metric name a run reports (after training: val/nll, val/ppl)."""
    names = ["val/nll", "val/ppl", *(f"tf/{m}" for m in TF_METRICS)]
    for d in [*decodings, "human"]:
        names += [f"gen/{d}/{m}" for m in GEN_METRICS]
        if synthetic:
            names.append(f"gt/{d}/sample_nll")
    if synthetic:
        names += [f"gt/{m}" for m in GT_METRICS]
    return names


def autocast_context(model: GPT, bf16: bool) -> contextlib.AbstractContextManager:
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


@torch.no_grad()
def teacher_forced(
    model: GPT, blocks: torch.Tensor, batch_size: int, bf16: bool, max_batches: int | None = None, source=None
) -> TeacherForced:
    """tf/ metrics over test blocks (N, T+1); gt/ ones too when ``source`` gives exact conditionals."""
    model.eval()
    device = next(model.parameters()).device
    sums = dict.fromkeys(
        ("nll", "entropy", "brier", "acc", "rep", "wrep", "abs_log_z", "gt_entropy", "forward_kl", "reverse_kl"),
        0.0,
    )
    count = 0
    predicted_ids, entropies, confidences, correct = [], [], [], []
    truth = true_log_conditionals(source, blocks, batch_size, max_batches) if source is not None else None
    for i, batch in enumerate(batches(blocks, batch_size, max_batches)):
        batch = batch.to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with autocast_context(model, bf16):
            logits = model(inputs)
        logits = logits.float()
        sums["abs_log_z"] += logits.logsumexp(-1).abs().sum().item()  # |log Σ_v exp z_t(v)|: 0 = self-normalised
        logp = logits.log_softmax(-1)  # (B, T, V)
        probs = logp.exp()
        entropy = -(probs * logp).sum(-1)  # (B, T)
        top_p, argmax = probs.max(-1)
        hit = argmax == targets
        repeat = in_previous_targets(argmax, targets, REP_WINDOW)
        target_logp = logp.gather(-1, targets[..., None]).squeeze(-1)  # (B, T)
        sums["nll"] += -target_logp.sum().item()
        # Brier (1950): Σ_v (p_v − 1[v = y])² = Σ_v p_v² − 2 p_y + 1
        sums["brier"] += ((probs * probs).sum(-1) - 2 * target_logp.exp() + 1).sum().item()
        sums["entropy"] += entropy.sum().item()
        sums["acc"] += hit.sum().item()
        sums["rep"] += repeat.sum().item()
        sums["wrep"] += (repeat & ~hit).sum().item()
        predicted_ids.append(argmax.unique())
        entropies.append(entropy.flatten().cpu())
        confidences.append(top_p.flatten().cpu())
        correct.append(hit.flatten().cpu())
        if source is not None:
            true_logp = truth[i][:, 1:].to(device)  # P(x_{t+1} | x_<=t)
            p_true = true_logp.exp()
            sums["gt_entropy"] += -(p_true * true_logp).sum().item()
            sums["forward_kl"] += (p_true * (true_logp - logp)).sum().item()
            sums["reverse_kl"] += (probs * (logp - true_logp)).sum().item()
        count += targets.numel()
    nll = sums["nll"] / count
    confidence, correct = torch.cat(confidences), torch.cat(correct)
    metrics = {
        "tf/nll": nll,
        "tf/ppl": math.exp(nll),
        "tf/entropy": sums["entropy"] / count,
        **calibration_errors(confidence, correct),
        "tf/brier": sums["brier"] / count,
        "tf/acc": sums["acc"] / count,
        f"tf/rep_{REP_WINDOW}": sums["rep"] / count,
        f"tf/wrep_{REP_WINDOW}": sums["wrep"] / count,
        "tf/uniq": float(torch.cat(predicted_ids).unique().numel()),
        "tf/abs_log_z": sums["abs_log_z"] / count,
    }
    if source is not None:
        metrics["gt/entropy_rate"] = sums["gt_entropy"] / count
        metrics["gt/forward_kl"] = sums["forward_kl"] / count
        metrics["gt/reverse_kl"] = sums["reverse_kl"] / count
    return TeacherForced(metrics, torch.cat(entropies), reliability_bins(confidence, correct))


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


_TRUTH_CACHE: dict[tuple, list[torch.Tensor]] = {}  # one entry: the test split's exact conditionals
TRUTH_CACHE_BYTES = 2 << 30  # larger tables are recomputed at every call


def true_log_conditionals(source, blocks: torch.Tensor, batch_size: int, max_batches: int | None) -> list[torch.Tensor]:
    """The source's log P(x_t = · | x_<t) of every test batch, (b, T+1, V) each, computed in the same batches
    as ``teacher_forced`` reads them. They depend on the test split only, not on the model, so a process that
    evaluates many runs on one split (a suite) computes them once: a default suite job's evaluation took 4.5
    instead of 5.7 s on this project's CPU, the metrics the same to the bit. Kept for the last split asked for
    (0.5 GB for the default one), up to 2 GiB."""
    key = (source.fingerprint(), blocks.shape, hash(blocks.numpy().tobytes()), batch_size, max_batches)
    if key not in _TRUTH_CACHE:
        truth = [source.log_conditionals(batch.cpu()) for batch in batches(blocks, batch_size, max_batches)]
        _TRUTH_CACHE.clear()
        if sum(t.numel() * t.element_size() for t in truth) > TRUTH_CACHE_BYTES:
            return truth
        _TRUTH_CACHE[key] = truth
    return _TRUTH_CACHE[key]


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (for reliability diagrams)."""
    index = (confidence * n_bins).long().clamp_max(n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    conf = torch.bincount(index, weights=confidence.double(), minlength=n_bins) / count.clamp_min(1)
    acc = torch.bincount(index, weights=correct.double(), minlength=n_bins) / count.clamp_min(1)
    return {"confidence": conf.tolist(), "accuracy": acc.tolist(), "count": count.tolist()}


@torch.no_grad()
def continuation_stats(
    model: GPT, prompts: torch.Tensor, conts: torch.Tensor, batch_size: int, bf16: bool, source=None
) -> dict[str, torch.Tensor]:
    """Per continuation (N,): the model's mean predictive entropy along it, and its NLL under the source."""
    device = next(model.parameters()).device
    P = prompts.shape[1]
    seqs = torch.cat([prompts, conts], dim=1)
    entropy, sample_nll = [], []
    for batch in batches(seqs, batch_size):
        with autocast_context(model, bf16):
            logits = model(batch[:, :-1].to(device))[:, P - 1 :]  # predictions of the continuation
        logp = logits.float().log_softmax(-1)
        entropy.append(-(logp.exp() * logp).sum(-1).mean(-1).cpu())
        if source is not None:
            true_logp = source.log_conditionals(batch)[:, P:]  # (b, C, V)
            sample_nll.append(-true_logp.gather(-1, batch[:, P:, None]).squeeze(-1).double().mean(-1))
    out = {"entropy": torch.cat(entropy)}
    if source is not None:
        out["sample_nll"] = torch.cat(sample_nll)
    return out


@dataclass
class Generations:
    metrics: dict[str, float]
    records: list[dict]  # one per (decoding, prompt)


@torch.no_grad()
def generate_all(
    model: GPT,
    test_blocks: torch.Tensor,
    decodings: dict[str, DecodingConfig],
    prefix_len: int,
    cont_len: int,
    batch_size: int,
    bf16: bool,
    seed: int,
    decode: Callable[[list[int]], str],
    source=None,
    train_index: NgramIndex | None = None,
    mauve: bool = False,
) -> Generations:
    """Continue the first ``prefix_len`` tokens of held-out sequences with every decoding (and report the
    real continuations as ``human``) -> gen/ (and gt/.../sample_nll) metrics and sample records; with
    ``mauve``, gen/<decoding>/mauve (and mauve_sd over k-means seeds) against the human continuations."""
    device = next(model.parameters()).device
    prompts = test_blocks[:, :prefix_len]
    human = test_blocks[:, prefix_len : prefix_len + cont_len]
    metrics: dict[str, float] = {}
    records: list[dict] = []
    outputs = {}
    for name, cfg in decodings.items():
        generator = torch.Generator(device=device).manual_seed(seed)
        parts = []
        for batch in batches(prompts, batch_size):
            with autocast_context(model, bf16):
                parts.append(generate(model, batch.to(device), cont_len, cfg, generator).cpu())
        outputs[name] = torch.cat(parts)
    outputs["human"] = human
    for name, conts in outputs.items():
        for key, value in generation_metrics(conts).items():
            metrics[f"gen/{name}/{key}"] = value
        stats = continuation_stats(model, prompts, conts, batch_size, bf16, source)
        if train_index is not None:
            stats[f"copy_rate_{train_index.n}"] = copy_share(conts, train_index)
        for key, values in stats.items():  # per-continuation values, saved with each sample
            prefix = "gt" if key == "sample_nll" else "gen"
            metrics[f"{prefix}/{name}/{key}"] = values.double().mean().item()
        # per-continuation values under their metric names: the report's intervals resample prompts
        per_row = {f"gen/{name}/{key}": values for key, values in per_continuation(conts).items()}
        per_row.update({f"{'gt' if key == 'sample_nll' else 'gen'}/{name}/{key}": v for key, v in stats.items()})
        for row, (prompt, cont) in enumerate(zip(prompts.tolist(), conts.tolist(), strict=True)):
            record = {
                "decoding": name,
                "prompt_index": row,
                "prompt": prompt,
                "prompt_text": decode(prompt),
                "continuation": cont,
                "text": decode(cont),
            }
            record.update({key: values[row].item() for key, values in stats.items()})
            record["metrics"] = {key: values[row].item() for key, values in per_row.items()}
            records.append(record)
    if mauve:
        from benchmarks.mauve_metric import features, mauve_score

        texts = {name: [r["text"] for r in records if r["decoding"] == name] for name in outputs}
        human_features = features(texts.pop("human"))
        for name, generated in texts.items():
            mean, sd = mauve_score(features(generated), human_features)
            metrics[f"gen/{name}/mauve"], metrics[f"gen/{name}/mauve_sd"] = mean, sd
    return Generations(metrics, records)


def use_mauve(setting, synthetic: bool) -> bool:
    """eval.mauve: true (the extra must be installed), false, or auto: on for real text when the extra is
    installed; off on the synthetic source, whose id strings an English sentence encoder cannot read."""
    from benchmarks import mauve_metric as mauve

    if setting is True:
        mauve.require()
        return True
    if setting is False:
        return False
    if synthetic:
        return False
    if not mauve.installed():
        print(f"MAUVE: skipped, the mauve extra is not installed ({mauve.INSTALL})")
        return False
    return True


def evaluate_run(model, datamodule, decodings: dict, cfg: DictConfig, bf16: bool) -> dict:
    """tf/, gt/ and gen/ metrics of a trained model on the test split; samples; reliability bins."""
    source = getattr(datamodule, "source", None)  # exact conditionals: synthetic data only
    test = datamodule.blocks["test"]
    tf = teacher_forced(model, test, cfg.eval.batch_size, bf16, cfg.eval.max_batches, source)
    generations = generate_all(
        model,
        datamodule.prompt_blocks(cfg.eval.num_prompts, cfg.eval.prefix_len + cfg.eval.cont_len),
        decodings,
        cfg.eval.prefix_len,
        cfg.eval.cont_len,
        cfg.eval.batch_size,
        bf16,
        cfg.seed,
        datamodule.decode,
        source,
        NgramIndex(datamodule.blocks["train"], 8),
        mauve=use_mauve(cfg.eval.mauve, synthetic=source is not None),
    )
    return {
        "metrics": {**tf.metrics, **generations.metrics},
        "samples": generations.records,
        "entropies": tf.entropies,
        "reliability": tf.reliability,
    }
