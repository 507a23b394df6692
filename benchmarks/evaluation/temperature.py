"""A model's predictions at other temperatures, exactly: p_T ∝ p^(1/T) for every T of ``eval.temperatures``, from
the logits the teacher-forced pass already computes (``temp/<T>/<metric>``), and temperature scaling (Guo et al.
2017, "On Calibration of Modern Neural Networks"): one T per run fitted on the validation split's NLL, applied to
the test split (``ts/<metric>``).

Both answer the objection of Caccia et al. (2020, "Language GANs Falling Short"): an objective that moves entropy
may only have moved the model's temperature; comparing it with MLE at the temperature of equal entropy, or after
each run's own fitted temperature, separates the two.

Per token, with log p the model's log-probabilities, m = max log p, d = log p − m (≤ 0, its largest entry 0),
e = exp(d/T) and Z = Σ e: log p_T = d/T − log Z, so
NLL_T = log Z − d_y/T, H_T = log Z − (e·d)/(T Z), confidence_T = max p_T = 1/Z, Brier_T = (e·e)/Z² − 2 p_T(y) + 1,
KL(P‖p_T) = Σ P log P − (P·d)/T + log Z, KL(p_T‖P) = −H_T − (e·log P)/Z:
one exp and three dot products per temperature over a chunk already in the cache."""

from __future__ import annotations

import math

import torch

from lit_modules.core.configs import require

DEFAULT_TEMPERATURES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0)
TEMPERED_COLUMNS = ("nll", "entropy", "brier", "confidence")
TEMPERED_TRUTH_COLUMNS = ("forward_kl", "reverse_kl")


def check_temperatures(key: str, temperatures) -> list[float]:
    """A non-empty list of positive finite numbers, or a one-line error naming the value."""
    ok = (
        isinstance(temperatures, (list, tuple))
        and len(temperatures) > 0
        and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0 for t in temperatures
        )
    )
    require(key, temperatures, ok, "use a non-empty list of positive finite temperatures, e.g. [0.5,1.0,2.0]")
    return [float(t) for t in temperatures]


def temperature_name(t: float) -> str:
    """The metric-key form of a temperature: 0.5 -> '0.5', 1.0 -> '1', 1.25 -> '1.25'."""
    return f"{t:g}"


def tempered_stats(
    logp: torch.Tensor,
    nll: torch.Tensor,
    temperatures: tuple[float, ...],
    true_logp: torch.Tensor | None = None,
    true_dot_logp: torch.Tensor | None = None,
    neg_true_entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per token, at every temperature, from log p (r, V) fp32 (unchanged), the NLL at T = 1 (r,), and where the
    truth is known log P (r, V), P·log p (r,) and Σ P log P (r,) -> (r, len(temperatures) · k): for each T in
    order the columns of ``TEMPERED_COLUMNS`` (and ``TEMPERED_TRUTH_COLUMNS``)."""
    top = logp.max(-1).values
    d = logp - top[:, None]  # (r, V), ≤ 0
    d_y = -nll - top
    truth = true_logp is not None
    if truth:
        true_dot_d = true_dot_logp - top  # P·d = P·log p − m (P sums to 1)
    columns = []
    for t in temperatures:
        e = torch.mul(d, 1.0 / t).exp_()  # (r, V)
        z = e.sum(-1)
        log_z = z.log()
        entropy = log_z - torch.linalg.vecdot(e, d) / (t * z)
        nll_t = log_z - d_y / t
        brier = torch.linalg.vecdot(e, e) / z.square() - 2 * (-nll_t).exp() + 1
        columns += [nll_t, entropy, brier, z.reciprocal()]
        if truth:
            forward_kl = neg_true_entropy - true_dot_d / t + log_z
            reverse_kl = -entropy - torch.linalg.vecdot(e, true_logp) / z
            columns += [forward_kl, reverse_kl]
    return torch.stack(columns, dim=-1)
