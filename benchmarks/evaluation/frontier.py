"""The quality-diversity frontier of generated text (Caccia et al. 2020, "Language GANs Falling Short"): the
evaluation's prompts continued at several temperatures and at several thresholds of each truncation decoding,
every point with its quality and its diversity (``frontier/<point>/<metric>``).

Quality: on the synthetic source the continuations' NLL under the true source (``true_nll``, nats a token, lower
better); on real text their NLL under the model itself (``model_nll``), and MAUVE against the human continuations
where the mauve extra is on (``mauve``). Diversity: distinct-4 (higher more diverse) and self-BLEU-4 (lower more
diverse). The NLL and self-BLEU-4 of the first and the second half of the prompts are kept too (``_a``, ``_b``):
the report draws MLE's frontier from one half and places every run's points with the other, so that the noise of
the points that make the frontier does not count in a point's favour or against it.
Lowering the temperature or truncating harder buys quality with diversity; an objective helps only if
its points lie beyond MLE's whole frontier (the report's test), not merely elsewhere on it.
"""

from __future__ import annotations

import torch

from benchmarks.evaluation.generation import Decoded, decode_all
from benchmarks.evaluation.metrics import distinct_n, self_bleu
from benchmarks.evaluation.teacher_forced import EVAL_ROWS, autocast_context, batches
from lit_modules.core.decoding import DecodingConfig
from lit_modules.core.head import log_softmax_nll_
from lit_modules.core.model import GPT

# eval.frontier: the decodings of each preset, {knob of DecodingConfig: values}; "temperature" samples the full
# distribution at each T (all of them in the default eval.temperatures, whose exact KLs then sit beside them)
FRONTIERS: dict[str, dict[str, tuple[float, ...]]] = {
    "off": {},
    "default": {
        "temperature": (0.5, 0.7, 0.9, 1.0, 1.25, 1.5),
        "top_p": (0.8, 0.95),
        "min_p": (0.05, 0.2),
        "eta": (0.002, 0.02),
        "top_nsigma": (1.0, 2.0),
    },
    "full": {
        "temperature": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0),
        "top_k": (5, 10, 20, 50),
        "top_p": (0.5, 0.7, 0.85, 0.95),
        "typical_p": (0.3, 0.5, 0.7, 0.9),
        "min_p": (0.02, 0.05, 0.1, 0.2),
        "epsilon": (3e-4, 1e-3, 3e-3, 1e-2),
        "eta": (3e-4, 2e-3, 1e-2, 4e-2),
        "top_nsigma": (0.5, 1.0, 1.5, 2.0),
    },
}
SHORT = {"temperature": "T"}  # a point's name: T0.7, top_p0.8, min_p0.05, ...


def point_name(knob: str, value: float) -> str:
    return f"{SHORT.get(knob, knob)}{value:g}"


def frontier_decodings(preset: str) -> dict[str, DecodingConfig]:
    """Every point of a preset of ``FRONTIERS`` as a sampling decoding, by point name."""
    return {
        point_name(knob, value): DecodingConfig(name=point_name(knob, value), strategy="sample", **{knob: value})
        for knob, values in FRONTIERS[preset].items()
        for value in values
    }


def _nll_of_targets(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return log_softmax_nll_(z, targets)[1]


@torch.no_grad()
def continuation_nll(
    model: GPT, prompts: torch.Tensor, conts: torch.Tensor, batch_size: int, bf16: bool, source=None
) -> torch.Tensor:
    """Each continuation's mean NLL a token (N,) under the true source where it is known, else under the model."""
    seqs = torch.cat([prompts, conts], dim=1)
    P, out = prompts.shape[1], []
    device = next(model.parameters()).device
    for batch in batches(seqs, batch_size):
        targets = batch[:, P:]
        if source is not None:
            out.append(-source.target_log_probs(batch)[:, P:].mean(-1))
        else:
            with autocast_context(model, bf16):
                h = model.hidden(batch[:, :-1].to(device))[:, P - 1 :]
                nll = model.map_logits(h, _nll_of_targets, targets.to(device), rows=EVAL_ROWS)
            out.append(nll.double().mean(-1).cpu())
    return torch.cat(out)


def frontier_metrics(
    model: GPT,
    prompts: torch.Tensor,
    preset: str,
    cont_len: int,
    batch_size: int,
    bf16: bool,
    seed: int,
    source=None,
    human: torch.Tensor | None = None,
    decode=None,
    decoded: Decoded | None = None,
) -> dict[str, float]:
    """frontier/<point>/<metric> of every point of eval.frontier's preset: the prompts (N, P) continued by
    ``cont_len`` tokens, each point's draws from a generator seeded ``seed``; MAUVE against ``human``
    continuations (N, cont_len) when given (their text by ``decode``); ``decoded``: as ``decode_all``."""
    decodings = frontier_decodings(preset)
    if not decodings:
        return {}
    outputs = decode_all(model, prompts, decodings, cont_len, batch_size, bf16, seed, decoded)
    human_features = None
    if human is not None:  # the mauve extra: imported only where MAUVE is on
        from benchmarks.evaluation.mauve import features, mauve_score

        human_features = features([decode(row) for row in human.tolist()])
    out = {}
    quality = "true_nll" if source is not None else "model_nll"
    half = prompts.shape[0] // 2
    for name, conts in outputs.items():
        nll = continuation_nll(model, prompts, conts, batch_size, bf16, source)
        values = {quality: nll.mean().item(), "distinct_4": distinct_n(conts, 4), "self_bleu_4": self_bleu(conts)}
        for suffix, rows in (("a", slice(0, half)), ("b", slice(half, None))):  # the report's split halves
            values[f"{quality}_{suffix}"] = nll[rows].mean().item()
            values[f"self_bleu_4_{suffix}"] = self_bleu(conts[rows])
        if human_features is not None:
            values["mauve"] = mauve_score(features([decode(row) for row in conts.tolist()]), human_features)[0]
        out |= {f"frontier/{name}/{key}": value for key, value in values.items()}
    return out
