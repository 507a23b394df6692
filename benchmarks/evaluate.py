"""Evaluation of a trained backbone: teacher-forced metrics, ground truth, generation.

Teacher-forced (``tf/``) metrics use the full softmax whatever the training objective; ground
truth (``gt/``) needs a source with exact conditionals (the synthetic data); generation
(``gen/<decoding>/``) continues held-out prompts with each decoding strategy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch

from benchmarks.metrics import generation_metrics
from lit_modules.decoding import DecodingConfig, generate
from lit_modules.model import GPT


def autocast_context(model: GPT, bf16: bool) -> contextlib.AbstractContextManager:
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


def _batches(blocks: torch.Tensor, batch_size: int, max_batches: int | None) -> Iterator[torch.Tensor]:
    for i, start in enumerate(range(0, blocks.shape[0], batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield blocks[start : start + batch_size]


@torch.no_grad()
def teacher_forced(
    model: GPT, blocks: torch.Tensor, batch_size: int, bf16: bool, max_batches: int | None = None, source=None
) -> dict[str, float]:
    """tf/nll, tf/ppl, tf/entropy, tf/acc over test blocks (N, T+1); gt/ with a known source."""
    model.eval()
    device = next(model.parameters()).device
    sums = {"nll": 0.0, "entropy": 0.0, "acc": 0.0, "gt_entropy": 0.0, "forward_kl": 0.0, "reverse_kl": 0.0}
    count = 0
    for batch in _batches(blocks, batch_size, max_batches):
        batch = batch.to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with autocast_context(model, bf16):
            logits = model(inputs)
        logp = logits.float().log_softmax(-1)  # (B, T, V)
        sums["nll"] += -logp.gather(-1, targets[..., None]).sum().item()
        sums["entropy"] += -(logp.exp() * logp).sum().item()
        sums["acc"] += (logp.argmax(-1) == targets).sum().item()
        if source is not None:
            true_logp = source.log_conditionals(batch.cpu())[:, 1:].to(device)  # P(x_{t+1} | x_<=t)
            p_true = true_logp.exp()
            sums["gt_entropy"] += -(p_true * true_logp).sum().item()
            sums["forward_kl"] += (p_true * (true_logp - logp)).sum().item()
            sums["reverse_kl"] += (logp.exp() * (logp - true_logp)).sum().item()
        count += targets.numel()
    nll = sums["nll"] / count
    out = {"tf/nll": nll, "tf/ppl": math.exp(nll), "tf/entropy": sums["entropy"] / count, "tf/acc": sums["acc"] / count}
    if source is not None:
        out["gt/entropy_rate"] = sums["gt_entropy"] / count
        out["gt/forward_kl"] = sums["forward_kl"] / count
        out["gt/reverse_kl"] = sums["reverse_kl"] / count
    return out


@torch.no_grad()
def generate_all(
    model: GPT,
    prompts: torch.Tensor,
    cont_len: int,
    decodings: dict[str, DecodingConfig],
    batch_size: int,
    bf16: bool,
    seed: int,
    decode: Callable[[list[int]], str],
) -> tuple[dict[str, float], list[dict]]:
    """Continue every prompt with every decoding -> (gen/ metrics, sample records)."""
    device = next(model.parameters()).device
    metrics: dict[str, float] = {}
    records: list[dict] = []
    for name, cfg in decodings.items():
        generator = torch.Generator(device=device).manual_seed(seed)
        outs = []
        for batch in _batches(prompts, batch_size, None):
            with autocast_context(model, bf16):
                outs.append(generate(model, batch.to(device), cont_len, cfg, generator).cpu())
        conts = torch.cat(outs)
        for key, value in generation_metrics(conts).items():
            metrics[f"gen/{name}/{key}"] = value
        for prompt, cont in zip(prompts.tolist(), conts.tolist(), strict=True):
            records.append({"decoding": name, "prompt": prompt, "continuation": cont, "text": decode(cont)})
    return metrics, records
