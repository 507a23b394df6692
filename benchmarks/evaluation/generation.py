"""Generated continuations of held-out prompts and their metrics: ``gen/<decoding>/`` (and ``gen/human/`` for
the real continuations), ``gt/<decoding>/sample_nll`` (their NLL under the true source), MAUVE on real text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, replace

import torch

from benchmarks.evaluation.metrics import NgramIndex, copy_share, generation_metrics, per_continuation
from benchmarks.evaluation.names import metric_key
from benchmarks.evaluation.teacher_forced import EVAL_ROWS, STAT_COLUMNS, autocast_context, batches, token_stats
from lit_modules.core.decoding import DecodingConfig, generate
from lit_modules.core.model import GPT


@dataclass
class Generations:
    metrics: dict[str, float]
    records: list[dict]  # one per (decoding, prompt)


# decode_all's memo: (settings, length, batch, bf16, seed) -> (prompts, continuations)
Decoded = dict[tuple, tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def decode_all(
    model: GPT,
    prompts: torch.Tensor,
    decodings: dict[str, DecodingConfig],
    cont_len: int,
    batch_size: int,
    bf16: bool,
    seed: int,
    decoded: Decoded | None = None,
) -> dict[str, torch.Tensor]:
    """Continuations (N, cont_len) of prompts (N, P) by every decoding, each from a generator seeded ``seed``.

    ``decoded``: continuations decoded before, reused where a decoding has the same settings under another name
    (the frontier's T = 1 is eval.decodings' ``sample``) and the same prompts; new ones are added to it."""
    device = next(model.parameters()).device
    outputs = {}
    for name, cfg in decodings.items():
        key = (*astuple(replace(cfg, name="")), cont_len, batch_size, bf16, seed)
        if decoded is not None and key in decoded and torch.equal(decoded[key][0], prompts):
            outputs[name] = decoded[key][1]
            continue
        generator = torch.Generator(device=device).manual_seed(seed)
        parts = []
        for batch in batches(prompts, batch_size):
            with autocast_context(model, bf16):
                parts.append(generate(model, batch.to(device), cont_len, cfg, generator).cpu())
        outputs[name] = torch.cat(parts)
        if decoded is not None:
            decoded[key] = (prompts, outputs[name])
    return outputs


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
            h = model.hidden(batch[:, :-1].to(device))[:, P - 1 :]  # predictions of the continuation
            stats = model.map_logits(h, token_stats, batch[:, P:].to(device), rows=EVAL_ROWS)  # the head's fp32 logits
        entropy.append(stats[..., STAT_COLUMNS.index("entropy")].double().mean(-1).cpu())
        if source is not None:
            sample_nll.append(-source.target_log_probs(batch)[:, P:].mean(-1))
    out = {"entropy": torch.cat(entropy)}
    if source is not None:
        out["sample_nll"] = torch.cat(sample_nll)
    return out


def score_continuations(
    model: GPT,
    prompts: torch.Tensor,
    outputs: dict[str, torch.Tensor],
    batch_size: int,
    bf16: bool,
    decode: Callable[[list[int]], str],
    source=None,
    train_index: NgramIndex | None = None,
) -> Generations:
    """The metrics of every decoding's continuations (and the human ones), and a record per continuation with
    its text and its own values (the report's intervals resample prompts)."""
    metrics: dict[str, float] = {}
    records: list[dict] = []
    for name, conts in outputs.items():
        for key, value in generation_metrics(conts).items():
            metrics[metric_key(name, key)] = value
        stats = continuation_stats(model, prompts, conts, batch_size, bf16, source)
        if train_index is not None:
            stats[f"copy_rate_{train_index.n}"] = copy_share(conts, train_index)
        for key, values in stats.items():  # per-continuation values, saved with each sample
            metrics[metric_key(name, key)] = values.double().mean().item()
        per_row = {metric_key(name, key): values for key, values in per_continuation(conts).items()}
        per_row.update({metric_key(name, key): values for key, values in stats.items()})
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
    return Generations(metrics, records)


def add_mauve(generations: Generations) -> None:
    """gen/<decoding>/mauve (and mauve_sd over k-means seeds) of every decoding against the human continuations."""
    from benchmarks.evaluation.mauve import features, mauve_score

    texts: dict[str, list[str]] = {}
    for record in generations.records:
        texts.setdefault(record["decoding"], []).append(record["text"])
    human_features = features(texts.pop("human"))
    for name, generated in texts.items():
        mean, sd = mauve_score(features(generated), human_features)
        generations.metrics[f"gen/{name}/mauve"], generations.metrics[f"gen/{name}/mauve_sd"] = mean, sd


def generate_all(
    model: GPT,
    held_out: torch.Tensor,
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
    decoded: Decoded | None = None,
) -> Generations:
    """Continue the first ``prefix_len`` tokens of held-out windows with every decoding, the rest of each
    window being the human continuation -> gen/ (and gt/.../sample_nll) metrics and sample records; ``decoded``:
    as ``decode_all``."""
    prompts = held_out[:, :prefix_len]
    outputs = decode_all(model, prompts, decodings, cont_len, batch_size, bf16, seed, decoded)
    outputs["human"] = held_out[:, prefix_len : prefix_len + cont_len]
    generations = score_continuations(model, prompts, outputs, batch_size, bf16, decode, source, train_index)
    if mauve:
        add_mauve(generations)
    return generations
