"""Every metric that names a paper equals that paper's released code on the same token lists.

The expected values below were produced by running each reference, unmodified, on the lists that
``lcg_tokens`` builds (its command-line parts given stub tokenizers; NLTK 3.10.4):

- ari-holtzman/degen @ 0acfd2d0ba84 (Holtzman et al. 2020): ``metrics/distinct_n.py:distinct_n``,
  ``metrics/zipf.py:main``, ``metrics/repetition.py:main``, ``metrics/self_bleu.py:bleu_i``;
- geek-ai/Texygen @ 3104e22ac75f (Zhu et al. 2018): ``utils/metrics/SelfBleu.py:SelfBleu.get_bleu_fast``;
- facebookresearch/unlikelihood_training @ 944465589c0f (Welleck et al. 2019): ``custom/metrics.py``:
  ``ngram_metrics`` (seq-rep-n), ``TrainingMetrics.repeat_at_1`` (rep, wrep), and uniq-seq as
  ``custom/report_metrics.py`` counts it;
- EleutherAI/lm-evaluation-harness ``lm_eval/api/metrics.py:brier_score``;
- torchmetrics ``MulticlassCalibrationError`` (norm l1, l2, max) for ECE, RMS-CE and MCE.
"""

import pytest
import torch
import torchmetrics

from benchmarks.evaluation.metrics import (
    distinct_n,
    hapax_share,
    in_previous_targets,
    rep_rate,
    repeating_tail,
    self_bleu,
    seq_rep_n,
    uniq_seq,
    unique_ngram_share,
    zipf_coefficient,
)
from benchmarks.evaluation.teacher_forced import calibration_errors, equal_mass_ece


def lcg_tokens(seed: int, n: int, vocab: int) -> list[int]:
    """n pseudo-random ids < vocab from the C-library linear congruential generator (fixed forever)."""
    out, x = [], seed
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        out.append((x >> 16) % vocab)
    return out


# 6 pseudo-random continuations of 40 tokens over 9 ids, and 2 that end in a loop
TEXTS = torch.tensor(
    [lcg_tokens(s, 40, 9) for s in range(1, 7)]
    + [lcg_tokens(7, 28, 9) + [3, 1, 4] * 4, lcg_tokens(8, 30, 9) + [5, 5] * 5]
)
# 120 tokens each, for the repetition rule's cases
LOOPS = torch.tensor(
    [
        lcg_tokens(11, 120, 50),  # no loop
        lcg_tokens(12, 60, 50) + [7] * 60,  # one token 60 times: more than 50 repeats
        lcg_tokens(13, 60, 50) + [3, 4] * 30,  # a 2-token phrase 30 times: too short and too few
        lcg_tokens(14, 96, 50) + [1, 2, 3] * 8,  # a 3-token phrase 8 times
        lcg_tokens(15, 100, 50) + [9, 8, 7, 6, 5] * 4,  # 5 tokens 4 times
        lcg_tokens(16, 112, 50) + [2] * 8,  # one token 8 times
    ]
)


def test_seq_rep_and_uniq_seq_equal_unlikelihood_training():
    """unlikelihood_training custom/metrics.py:ngram_metrics (pct_repeat_ngrams), report_metrics.py (uniq)."""
    expected = [0.778125, 0.25, 0.07894736842105264, 0.047297297297297286]
    for n in range(1, 5):
        assert seq_rep_n(TEXTS, n) == pytest.approx(expected[n - 1], abs=1e-15)
    assert uniq_seq(TEXTS) == 9


def test_next_token_repetition_equals_unlikelihood_training():
    """unlikelihood_training custom/metrics.py:TrainingMetrics.repeat_at_1 (rep and wrep, per block)."""
    targets = torch.tensor([lcg_tokens(100 + b, 40, 9) for b in range(3)])
    predictions = torch.tensor([lcg_tokens(200 + b, 40, 9) for b in range(3)])
    for window, rep, wrep in ((4, 0.35, 0.2833333333333333), (128, 0.8083333333333333, 0.7)):
        repeat = in_previous_targets(predictions, targets, window)
        assert repeat.double().mean().item() == pytest.approx(rep, abs=1e-15)
        assert (repeat & (predictions != targets)).double().mean().item() == pytest.approx(wrep, abs=1e-15)


def test_hapax_share_equals_degen_distinct_n():
    """degen metrics/distinct_n.py:distinct_n (n-grams seen once / n-grams)."""
    expected = [0.0, 0.019230769230769232, 0.6381578947368421, 0.9222972972972973]
    for n in range(1, 5):
        assert hapax_share(TEXTS, n) == pytest.approx(expected[n - 1], abs=1e-15)


def test_zipf_equals_degen_zipf():
    """degen metrics/zipf.py:main (top 5000 ranks); a corpus of 2248 types shows the rank cut matters."""
    assert zipf_coefficient(TEXTS) == pytest.approx(0.2614547852016087, abs=1e-12)
    assert zipf_coefficient(LOOPS) == pytest.approx(0.5056567014003385, abs=1e-12)
    big = torch.tensor([[t * t // 3000 for t in lcg_tokens(21, 20000, 3000)]])
    assert zipf_coefficient(big) == pytest.approx(0.5552034045826406, abs=1e-12)
    assert abs(zipf_coefficient(big, top=1000) - 0.5552034045826406) > 0.05


def test_self_bleu_equals_texygen_and_degen():
    """Texygen utils/metrics/SelfBleu.py:SelfBleu.get_bleu_fast (gram=4) and degen metrics/self_bleu.py:bleu_i
    (weights 1/4, NLTK smoothing method1), averaged over every continuation as hypothesis."""
    assert self_bleu(TEXTS, 4) == pytest.approx(0.21021453375194332, abs=1e-12)
    assert self_bleu(LOOPS, 4) == pytest.approx(0.016860837682123174, abs=1e-12)


def test_rep_rate_equals_degen_repetition():
    """degen metrics/repetition.py:main: the examples it flags, and their count."""
    assert repeating_tail(TEXTS).tolist() == [False] * 6 + [True, False]
    assert repeating_tail(LOOPS).tolist() == [False, True, False, True, True, False]
    assert rep_rate(LOOPS) == pytest.approx(3 / 6)


def test_distinct_n_follows_li_et_al():
    """Li et al. (2016) §4.3: distinct n-grams over the number of generated tokens (no released code;
    hand-counted), and objbench's own share of distinct n-grams."""
    seqs = torch.tensor([[5, 6, 5, 6], [5, 6, 7, 8]])  # bigrams 56 65 56 | 56 67 78: 4 distinct of 6
    assert distinct_n(seqs, 2) == pytest.approx(4 / 8)
    assert unique_ngram_share(seqs, 2) == pytest.approx(4 / 6)
    assert hapax_share(seqs, 2) == pytest.approx(3 / 6)  # 65, 67, 78 once; 56 three times


def test_brier_equals_lm_evaluation_harness():
    """lm-evaluation-harness lm_eval/api/metrics.py:brier_score on 6 rows of 5 classes, through
    teacher_forced's per-token form Σ_v p_v² − 2 p_y + 1."""
    rows = torch.tensor([[((i * 7 + j * 3) % 11 + 1) / 10 for j in range(5)] for i in range(6)], dtype=torch.float64)
    probs = rows / rows.sum(1, keepdim=True)
    gold = torch.arange(6) % 5
    brier = ((probs * probs).sum(1) - 2 * probs[torch.arange(6), gold] + 1).mean().item()
    assert brier == pytest.approx(0.7998138036214767, abs=1e-12)


def test_calibration_errors_equal_torchmetrics_multiclass():
    """ECE, RMS-CE and MCE from (confidence, correct) equal torchmetrics' MulticlassCalibrationError on the
    full probability rows."""
    g = torch.Generator().manual_seed(0)
    probs = (torch.randn(500, 12, generator=g) * 2).softmax(-1).double()
    target = torch.randint(0, 12, (500,), generator=g)
    confidence, argmax = probs.max(-1)
    ours = calibration_errors(confidence, argmax == target)
    for name, norm in (("ece", "l1"), ("rms_ce", "l2"), ("mce", "max")):
        reference = torchmetrics.classification.MulticlassCalibrationError(num_classes=12, n_bins=15, norm=norm)
        assert ours[f"tf/{name}"] == pytest.approx(reference(probs, target).item(), abs=1e-6)


def test_equal_mass_ece_by_hand():
    """Own definition: 15 bins of equal count. Two bins by hand: confidences .2 .4 | .6 .8, correct 0 1 | 1 1."""
    confidence = torch.tensor([0.8, 0.2, 0.6, 0.4], dtype=torch.float64)
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert equal_mass_ece(confidence, correct, n_bins=2) == pytest.approx((2 / 4) * 0.2 + (2 / 4) * 0.3)
    perfect = torch.tensor([1.0] * 10, dtype=torch.float64)
    assert equal_mass_ece(perfect, perfect) == 0.0
