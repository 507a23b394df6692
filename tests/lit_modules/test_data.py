"""The data modules: the synthetic source's splits and cache, real text through datasets and a BPE, prompts
inside documents, training batches as a function of the step (sharded, resumable)."""

import pytest
import torch

from lit_modules.core.errors import DataError, UserError
from lit_modules.data import StepBatches, SyntheticDataModule, TextDataModule

SOURCE = {"vocab_size": 128, "n_states": 16, "emit": 8, "seed": 0}


def synthetic(**kw):
    args = dict(source=SOURCE, train_tokens=3300, val_tokens=660, test_tokens=660, block_size=32, batch_size=4, seed=0)
    args.update(kw)
    dm = SyntheticDataModule(**args)
    dm.setup()
    return dm


def test_synthetic_splits_shapes_and_determinism():
    dm = synthetic()
    assert {k: tuple(v.shape) for k, v in dm.blocks.items()} == {"train": (100, 33), "val": (20, 33), "test": (20, 33)}
    again = synthetic()  # read back from the cache
    fresh = synthetic(cache_dir=None, source={**SOURCE})
    for split in dm.blocks:
        assert torch.equal(dm.blocks[split], again.blocks[split])
        assert torch.equal(dm.blocks[split], fresh.blocks[split])
    assert not torch.equal(dm.blocks["val"], dm.blocks["test"])  # splits are different samples
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 33) and batch.dtype == torch.int64
    assert torch.equal(batch, next(iter(synthetic().train_dataloader())))  # shuffling is seeded
    assert dm.unigram_counts().sum().item() == 100 * 33


def test_corrupt_cache_is_rebuilt(isolated_cache):
    dm = synthetic()
    for f in (isolated_cache / "synthetic").glob("*.pt"):
        f.write_bytes(b"not a checkpoint")
    assert torch.equal(synthetic().blocks["train"], dm.blocks["train"])


def text_module(tmp, **kw):
    args = dict(path="text", files=[str(tmp / "corpus.txt")], vocab_size=300, block_size=16, batch_size=4, seed=0)
    args.update(kw)
    dm = TextDataModule(**args)
    dm.setup()
    return dm


def test_text_files_tokenizer_round_trip_and_splits(text_corpus):
    dm = text_module(text_corpus)
    text = "the cat sat on a mat near quiet green hills."
    ids = dm.tokenizer.encode(text).ids
    assert dm.decode(ids) == text
    assert len(ids) < len(text)  # BPE merged something
    assert all(dm.blocks[s].shape[1] == 17 and dm.blocks[s].shape[0] > 0 for s in ("train", "val", "test"))
    assert int(max(b.max() for b in dm.blocks.values())) < dm.vocab_size
    again = text_module(text_corpus)  # tokenizer from the cache, same splits
    for split in dm.blocks:
        assert torch.equal(dm.blocks[split], again.blocks[split])


def test_hub_path_with_a_local_folder(text_corpus):
    dm = TextDataModule(path=str(text_corpus / "corpus"), vocab_size=300, block_size=16, batch_size=4, seed=0)
    dm.setup()
    assert dm.blocks["train"].shape[0] > dm.blocks["val"].shape[0] > 0


def test_bad_text_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("   \n\n")
    cases = {
        "missing.txt": "does not exist",
        "empty.txt": "is empty",
        "latin1.txt": "is not UTF-8",
        "blank.txt": "only whitespace",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            TextDataModule(path="text", files=[str(tmp_path / name)], block_size=16, batch_size=4)


def test_corpus_shorter_than_one_block(tmp_path):
    (tmp_path / "short.txt").write_text("just a few words\n" * 30)
    with pytest.raises(DataError, match="fewer than one block"):
        TextDataModule(
            path="text", files=[str(tmp_path / "short.txt")], vocab_size=260, block_size=128, batch_size=4
        ).setup()


def test_corpus_too_small_to_split(tmp_path):
    (tmp_path / "one.txt").write_text("a single line of text")
    with pytest.raises(DataError, match=r"1 document\(s\) are too few to carve a val split"):
        TextDataModule(
            path="text", files=[str(tmp_path / "one.txt")], vocab_size=260, block_size=8, batch_size=4
        ).setup()


def test_text_without_files_names_data_files():
    with pytest.raises(UserError, match=r"data=text needs data\.files"):
        TextDataModule(path="text", files=None, block_size=16, batch_size=4)


def test_text_round_trips_punctuation_digits_and_accents(tmp_path):
    lines = [
        "Élodie paid 3,141.59 € for naïve café crème — “quoted”, (parenthesised); ok? 42!",
        "Straße, Ångström, São Paulo and Zürich: 1999-12-31 at 23:59; 100% sure.",
    ] * 60
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = text_module(tmp_path)
    for text in lines[:2]:
        assert dm.decode(dm.tokenizer.encode(text).ids) == text


def test_text_prompts_stay_inside_documents_and_spread_over_them(text_corpus):
    dm = text_module(text_corpus, vocab_size=300)
    docs = dm.test_documents
    assert 15 <= len(docs) <= 20  # about 5% of 400 lines
    eos = dm.tokenizer.token_to_id("<|endoftext|>")
    length = 8
    long_docs = [d for d in docs if len(d) >= length]
    prompts = dm.prompt_blocks(len(long_docs), length)
    assert not (prompts == eos).any()  # no window crosses a document end
    starts = {tuple(d[:length].tolist()) for d in long_docs}
    assert {tuple(p.tolist()) for p in prompts} == starts  # one per document, each a document's start
    more = dm.prompt_blocks(len(long_docs) + 3, length)  # round-robin: further windows of long documents
    assert len({tuple(p.tolist()) for p in more}) == len(long_docs) + 3 and not (more == eos).any()
    with pytest.raises(DataError, match="fewer than eval.num_prompts=100000"):
        dm.prompt_blocks(100000, length)


def test_decode_shows_a_document_end_as_a_blank_line(text_corpus):
    dm = text_module(text_corpus)
    eos = dm.tokenizer.token_to_id("<|endoftext|>")
    ids = dm.tokenizer.encode("the cat").ids + [eos] + dm.tokenizer.encode("old red barns").ids
    assert dm.decode(ids) == "the cat\n\nold red barns"


def test_step_batches_shard_the_epoch_across_ranks_and_resume_exactly():
    """World size 3: at every step the ranks read disjoint rows; over a data epoch together they read every
    row of the permutation once (the remainder aside); a sampler started at step s yields what the
    uninterrupted one yields from s on; the next epoch is another permutation."""
    n_rows, batch, world = 50, 4, 3
    per_epoch = n_rows // (batch * world)  # 4 steps, 48 rows
    ranks = [
        list(StepBatches(n_rows, batch, seed=7, total_steps=2 * per_epoch, rank=r, world_size=world))
        for r in range(world)
    ]
    for step in range(2 * per_epoch):
        rows = [set(ranks[r][step]) for r in range(world)]
        assert all(len(r) == batch for r in rows) and not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    first_epoch = [row for step in range(per_epoch) for r in range(world) for row in ranks[r][step]]
    assert len(set(first_epoch)) == per_epoch * batch * world
    second_epoch = [row for step in range(per_epoch, 2 * per_epoch) for r in range(world) for row in ranks[r][step]]
    assert first_epoch != second_epoch
    resumed = list(
        StepBatches(n_rows, batch, seed=7, start_step=3, total_steps=2 * per_epoch, rank=1, world_size=world)
    )
    assert resumed == ranks[1][3:]
    with pytest.raises(DataError, match="fewer than one batch"):
        StepBatches(10, 4, seed=0, world_size=3)


@pytest.mark.parametrize("kind", ["uniform", "source"])
def test_noise_replaces_a_share_of_the_training_rows_only(kind):
    """data.noise: round(share · rows) training rows replaced (a higher share: a superset of rows), validation and
    test as clean; uniform rows are near-uniform tokens, source rows another source's draws; share 0 is clean."""
    from lit_modules.core.synthetic import HMMSource, SourceConfig

    clean = synthetic()
    noisy = synthetic(noise={"share": 0.25, "kind": kind})
    assert torch.equal(synthetic(noise={"share": 0.0}).blocks["train"], clean.blocks["train"])
    changed = (noisy.blocks["train"] != clean.blocks["train"]).any(1).nonzero().flatten()
    assert torch.equal(changed, noisy.noise_rows) and len(changed) == 25
    for split in ("val", "test"):
        assert torch.equal(noisy.blocks[split], clean.blocks[split])
    more = synthetic(noise={"share": 0.5, "kind": kind})
    assert set(noisy.noise_rows.tolist()) < set(more.noise_rows.tolist())
    rows = noisy.blocks["train"][noisy.noise_rows]
    if kind == "uniform":  # 825 draws over 128 words: no word takes more than a few percent
        assert torch.bincount(rows.flatten(), minlength=128).max() < 0.05 * rows.numel()
    else:
        other = HMMSource(SourceConfig(**{**SOURCE, "seed": 2}))
        assert torch.equal(rows, other.sample(25, 33, seed=51))


@pytest.mark.parametrize(
    ("noise", "message"),
    [
        ({"share": 1.0}, "data.noise.share=1.0 is not allowed; use a number in [0, 1)"),
        ({"share": -0.1}, "data.noise.share=-0.1 is not allowed"),
        ({"share": 0.1, "kind": "gaussian"}, "data.noise.kind='gaussian' is not allowed; use one of: uniform, source"),
        ({"shares": 0.1}, "data.noise.shares is not a setting of data.noise"),
    ],
)
def test_bad_noise_is_one_line(noise, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        synthetic(noise=noise)
