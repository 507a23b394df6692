"""Every metric's name: ``tf/<m>`` (teacher-forced, test split), ``gt/<m>`` (against the source's truth),
``gen/<decoding>/<m>`` (generated continuations; ``human`` for the real ones) and ``gt/<decoding>/sample_nll``."""

from __future__ import annotations

REP_WINDOW = 128  # tf/rep_128: next-token repetition over the previous 128 targets
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
    "abs_log_z",
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
# per-continuation values measured against the source, not the text: under gt/
AGAINST_THE_SOURCE = ("sample_nll",)


def metric_key(decoding: str, name: str) -> str:
    """The key of a continuation metric: ``gen/<decoding>/<name>``, or ``gt/<decoding>/<name>`` for a value
    measured against the true source (``sample_nll``)."""
    return f"{'gt' if name in AGAINST_THE_SOURCE else 'gen'}/{decoding}/{name}"


def metric_names(decodings: list[str], synthetic: bool) -> list[str]:
    """Every metric name a run reports (after training: val/nll, val/ppl)."""
    names = ["val/nll", "val/ppl", *(f"tf/{m}" for m in TF_METRICS)]
    for d in [*decodings, "human"]:
        names += [metric_key(d, m) for m in GEN_METRICS]
        if synthetic:
            names.append(metric_key(d, "sample_nll"))
    if synthetic:
        names += [f"gt/{m}" for m in GT_METRICS]
    return names
