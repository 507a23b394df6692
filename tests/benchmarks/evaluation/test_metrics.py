"""Text metrics on hand-made sequences with known answers."""

import pytest
import torch

from benchmarks.evaluation.metrics import (
    NgramIndex,
    copy_share,
    distinct_n,
    ends_in_loop,
    in_previous_targets,
    repeating_tail,
    self_bleu,
    seq_rep_n,
    uniq_seq,
    unique_ngram_share,
    zipf_coefficient,
)


def test_repeating_one_4gram():
    seq = torch.tensor([[1, 2, 3, 4] * 5])  # 17 4-grams, 4 distinct
    assert seq_rep_n(seq, 4) == pytest.approx(1 - 4 / 17)
    assert seq_rep_n(seq, 1) == pytest.approx(1 - 4 / 20)
    assert distinct_n(seq, 4) == pytest.approx(4 / 20)
    assert unique_ngram_share(seq, 4) == pytest.approx(4 / 17)
    assert uniq_seq(seq) == 4
    assert repeating_tail(seq).tolist() == [True]
    assert ends_in_loop(seq).tolist() == [True]


def test_loop_rate_counts_a_short_loop_that_the_repetition_rule_does_not():
    seq = torch.tensor([list(range(10, 50)) + [3, 4] * 28])  # a 2-token loop, 28 times: under degen's 51
    assert repeating_tail(seq).tolist() == [False]
    assert ends_in_loop(seq).tolist() == [True]
    assert not ends_in_loop(torch.arange(60)[None]).any()


def test_all_distinct_tokens():
    seqs = torch.arange(60).view(2, 30)
    for n in range(1, 5):
        assert seq_rep_n(seqs, n) == 0.0
        assert unique_ngram_share(seqs, n) == 1.0
        assert distinct_n(seqs, n) == pytest.approx((31 - n) / 30)
    assert uniq_seq(seqs) == 60
    assert not repeating_tail(seqs).any()


def test_distinct_pools_and_seq_rep_averages():
    seqs = torch.tensor([[5, 6, 5, 6], [5, 6, 7, 8]])  # bigrams: {56,65,56} and {56,67,78}
    assert seq_rep_n(seqs, 2) == pytest.approx(((1 - 2 / 3) + 0.0) / 2)
    assert unique_ngram_share(seqs, 2) == pytest.approx(4 / 6)


def test_zipf_recovers_the_exponent():
    counts = [round(100_000 * r**-1.3) for r in range(1, 51)]
    seqs = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])[None]
    assert zipf_coefficient(seqs) == pytest.approx(1.3, abs=0.01)


def test_self_bleu():
    same = torch.tensor([[1, 2, 3, 4, 5, 6]] * 3)
    assert self_bleu(same) == pytest.approx(1.0)
    distinct = torch.arange(18).view(3, 6)
    assert self_bleu(distinct) == 0.0
    # hand-computed: hypothesis [1,2,3,4,9] against reference [1,2,3,4,5]: p1..p4 = 4/5, 3/4, 2/3, 1/2
    pair = torch.tensor([[1, 2, 3, 4, 9], [1, 2, 3, 4, 5]])
    assert self_bleu(pair) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)


def test_copy_rate():
    train = torch.arange(100).view(4, 25)
    index = NgramIndex(train, 8)
    copied = train[1:3, 3:20]  # verbatim from the training data
    assert copy_share(copied, index).tolist() == [1.0, 1.0]
    novel = torch.arange(100, 120)[None]
    assert copy_share(novel, index).tolist() == [0.0]
    crossing = torch.arange(20, 35)[None]  # spans two training blocks: 8-grams crossing 24|25 are new
    assert 0 < copy_share(crossing, index).item() < 1


def test_a_splits_index_is_built_once_per_process():
    """A suite's jobs share the train split: its n-gram index is built for the first job only."""
    train = torch.arange(100).view(4, 25)
    first = NgramIndex.of(train, 8)
    assert NgramIndex.of(train.clone(), 8) is first  # equal content, another tensor
    other = NgramIndex.of(train + 1, 8)
    assert other is not first and copy_share(train[:1] + 1, other).item() == 1.0
    assert NgramIndex.of(train, 4) is not first  # another n


def test_rep_in_previous_targets():
    targets = torch.tensor([[2, 3, 4, 5, 6]])  # the block's first input token (1) is no earlier target
    predictions = torch.tensor([[1, 1, 9, 2, 3]])
    assert in_previous_targets(predictions, targets, 128).tolist() == [[False, False, False, True, True]]
    assert in_previous_targets(predictions, targets, 2).tolist() == [[False, False, False, False, False]]
