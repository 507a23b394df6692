"""Data: fixed-length token blocks for train / val / test, from the synthetic source or real text.

Every data module ends in the same place: three int64 tensors of blocks (N, block_size + 1)
(inputs are ``block[:, :-1]``, targets ``block[:, 1:]``), a ``vocab_size``, a ``decode`` for
readable samples and ``unigram_counts`` of the train split. Real text goes through one path:
``datasets.load_dataset`` (a local ``text`` builder for ``data=text``, any hub dataset for
``data=hub``), a byte-level BPE trained with ``tokenizers`` on the train split and cached by the
data fingerprint (or a given tokenizer, ``data.tokenizer``: a pretrained model's), tokenised with
``Dataset.map`` (Arrow cache).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lit_modules.core.canaries import Canaries, CanaryConfig, plant
from lit_modules.core.configs import is_int, is_number, positive_int, require, typed
from lit_modules.core.errors import ConfigError, DataError
from lit_modules.core.files import atomic_path, default_cache_dir
from lit_modules.core.hf_gpt2 import EOS, load_tokenizer
from lit_modules.core.synthetic import HMMSource, NoiseConfig, ShiftedSource, SourceConfig, add_noise

SPLITS = ("train", "val", "test")


class Blocks(Dataset):
    """Rows of a (N, T+1) tensor; ``__getitems__`` gathers a whole batch with one index op."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.blocks[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.blocks[torch.as_tensor(indices)]


class StepBatches(Sampler[list[int]]):
    """Training batches as a pure function of the global step, so a resumed run continues exactly.

    With k = N // (batch·world) batches per data epoch, step s on rank r reads rows
    perm_e[((s mod k)·world + r)·batch ...] of the permutation of data epoch e = s // k, drawn from
    ``seed + e``. Iteration runs from ``start_step`` (the trainer's global step when the iterator
    starts, which a restored checkpoint sets) to ``total_steps``. (A DataLoader's shuffling
    keeps its position in a generator's state and in prefetched batches; restoring that exactly is
    what this avoids. It also shards across ranks, in place of a DistributedSampler.)
    """

    def __init__(
        self,
        n_rows: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        total_steps: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self.per_epoch = n_rows // (batch_size * world_size)
        if self.per_epoch == 0:
            raise DataError(
                f"the train split has {n_rows} blocks, fewer than one batch ({batch_size} x {world_size} processes)"
            )

    def __len__(self) -> int:
        return self.total_steps or 10**12  # the whole run is one pass; a resumed one starts inside it

    def __iter__(self):
        step = self.start_step() if callable(self.start_step) else self.start_step
        perm_epoch, perm = None, None
        while self.total_steps is None or step < self.total_steps:
            epoch, within = divmod(step, self.per_epoch)
            if epoch != perm_epoch:  # one permutation per data epoch
                perm = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
                perm_epoch = epoch
            start = (within * self.world_size + self.rank) * self.batch_size
            yield perm[start : start + self.batch_size].tolist()
            step += 1


def _private_generator() -> torch.Generator:
    # A DataLoader without a generator draws its base seed from the global RNG each time an iterator
    # starts (every validation): that would shift objectives' random draws (NCE noise, scheduled
    # sampling) between a resumed run and an uninterrupted one.
    return torch.Generator().manual_seed(0)


def stack_rows(batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else torch.stack(batch)


@dataclass
class BlockConfig:
    """What every data module shares: rows of ``block_size + 1`` tokens, ``batch_size`` rows a training step."""

    block_size: int = 128
    batch_size: int = 32
    eval_batch_size: int | None = None  # rows a validation batch (None: batch_size)
    seed: int = 0  # the training batches' order
    cache_dir: str | None = None  # None: $OBJBENCH_CACHE or ~/.cache/objbench
    canaries: CanaryConfig | dict | None = None  # random sequences inserted into the train split (None: none)

    def __post_init__(self) -> None:
        require(
            "data.block_size", self.block_size, is_int(self.block_size) and self.block_size >= 2, "use an integer >= 2"
        )
        if isinstance(self.canaries, dict):
            self.canaries = typed(CanaryConfig, self.canaries, "data.canaries")
        if self.canaries is not None:
            require("data.canaries", self.canaries, isinstance(self.canaries, CanaryConfig), "use a mapping or null")
            self.canaries.check_block(self.block_size)
        positive_int("data.batch_size", self.batch_size)
        if self.eval_batch_size is not None:
            positive_int("data.eval_batch_size", self.eval_batch_size)
        require("data.seed", self.seed, is_int(self.seed) and self.seed >= 0, "use an integer >= 0")

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError


class BlockDataModule(pl.LightningDataModule):
    """Shared loaders over block tensors; subclasses fill ``self.blocks`` in ``setup``. Built from a typed
    config (``Config``) or from its settings as keyword arguments (the yaml's)."""

    Config: type[BlockConfig] = BlockConfig

    def __init__(self, config: BlockConfig | None = None, **settings) -> None:
        super().__init__()
        self.cfg = config if config is not None else typed(self.Config, settings, "data")
        self.block_size = self.cfg.block_size
        self.batch_size = self.cfg.batch_size
        self.eval_batch_size = self.cfg.eval_batch_size or self.cfg.batch_size
        self.seed = self.cfg.seed
        self.cache_dir = Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache_dir()
        self.blocks: dict[str, torch.Tensor] = {}
        self.vocab_size: int = self.cfg.vocab_size
        self.canaries: Canaries | None = None  # what data.canaries inserted into the train split

    def setup(self, stage: str | None = None) -> None:
        """The blocks of every split (``load_blocks``), then the canaries of data.canaries in the train split."""
        if self.blocks:
            return
        self.load_blocks()
        if self.cfg.canaries is not None:
            alphabet = torch.ones(self.vocab_size, dtype=torch.bool)
            alphabet[self.special_ids()] = False
            self.blocks["train"], self.canaries = plant(
                self.blocks["train"], self.cfg.canaries, alphabet.nonzero().flatten(), self.seed
            )

    # --- what subclasses provide ---
    def load_blocks(self) -> None:
        """Fill ``self.blocks`` with the train / val / test blocks."""
        raise NotImplementedError

    def special_ids(self) -> list[int]:
        """Token ids a canary never uses (a document end)."""
        return []

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        raise NotImplementedError

    def prompt_blocks(self, n: int, length: int) -> torch.Tensor:
        """(n, length) held-out token windows whose first eval.prefix_len tokens are the evaluation prompts and
        the rest their human continuations: here the first ``length`` tokens of the first n test blocks."""
        test = self.blocks["test"]
        if test.shape[0] < n:
            raise DataError(f"eval.num_prompts={n} is more than the {test.shape[0]} test blocks; lower it")
        return test[:n, :length]

    def ood_splits(
        self, shifts: Sequence[float], files: Sequence[str], tokens: int
    ) -> dict[str, tuple[torch.Tensor, Any]]:
        """Out-of-distribution test data, at most ``tokens`` tokens each: {name: (blocks (N, block_size + 1), the
        source of its exact conditionals or None)}. The synthetic source gives sources shifted by each ρ of
        ``shifts``; real text the UTF-8 ``files`` of another corpus, in the run's tokenizer."""
        return {}

    def unigram_counts(self) -> torch.Tensor:
        """Token counts (V,) over the train split, float64."""
        return torch.bincount(self.blocks["train"].flatten(), minlength=self.vocab_size).double()

    # --- loaders ---
    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            Blocks(self.blocks[split]),
            batch_size=self.eval_batch_size,
            collate_fn=stack_rows,
            generator=_private_generator(),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = StepBatches(
            self.blocks["train"].shape[0],
            self.batch_size,
            self.seed,
            start_step=(lambda: trainer.global_step) if trainer else 0,  # read when iteration starts: after a resume
            total_steps=trainer.max_steps if trainer and trainer.max_steps > 0 else None,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        return DataLoader(
            Blocks(self.blocks["train"]), batch_sampler=sampler, collate_fn=stack_rows, generator=_private_generator()
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


@dataclass
class SyntheticConfig(BlockConfig):
    """The hidden Markov source (``source``, ``lit_modules.core.synthetic.SourceConfig``) and the tokens of
    each split it samples."""

    source: SourceConfig | dict = field(default_factory=SourceConfig)
    noise: NoiseConfig | dict | None = None  # a share of the training rows replaced by noise (None: clean)
    train_tokens: int = 5_000_000
    val_tokens: int = 65_536
    test_tokens: int = 131_072

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.source, dict):
            self.source = typed(SourceConfig, self.source, "data.source")
        if isinstance(self.noise, dict):
            self.noise = typed(NoiseConfig, self.noise, "data.noise")
        require("data.noise", self.noise, self.noise is None or isinstance(self.noise, NoiseConfig), "use a mapping")
        for split in SPLITS:
            n = getattr(self, f"{split}_tokens")
            allowed = f"use at least one block (block_size + 1 = {self.block_size + 1})"
            require(f"data.{split}_tokens", n, is_int(n) and n >= self.block_size + 1, allowed)

    @property
    def vocab_size(self) -> int:
        return self.source.vocab_size


class SyntheticDataModule(BlockDataModule):
    """Independent sequences of the hidden Markov source; the source gives exact conditionals."""

    Config = SyntheticConfig
    cfg: SyntheticConfig

    def __init__(self, config: SyntheticConfig | None = None, **settings) -> None:
        super().__init__(config, **settings)
        self.source = HMMSource(self.cfg.source)
        self.split_tokens = {split: getattr(self.cfg, f"{split}_tokens") for split in SPLITS}
        self.noise_rows: torch.Tensor | None = None  # the training rows data.noise replaced

    def load_blocks(self) -> None:
        """The clean splits (cached), then data.noise's rows of the training split (a run without noise reads
        exactly the clean blocks)."""
        self.load_clean_blocks()
        noise = self.cfg.noise
        if noise is not None and noise.share > 0:
            seed = self.source.cfg.seed * 1000 + 50
            self.blocks["train"], self.noise_rows = add_noise(self.blocks["train"], noise, self.source, seed)

    def load_clean_blocks(self) -> None:
        key = f"{self.source.fingerprint()}-{self.block_size}-{sorted(self.split_tokens.items())}"
        path = self.cache_dir / "synthetic" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.exists():
            try:
                cached = torch.load(path, weights_only=True)
                if cached.get("key") == key:
                    self.blocks = cached["blocks"]
                    return
            except Exception:  # a truncated or foreign file: rebuild it
                pass
        length = self.block_size + 1
        for i, split in enumerate(SPLITS):
            n_seqs = self.split_tokens[split] // length
            # each split its own seed: test sequences are never seen in training
            self.blocks[split] = self.source.sample(n_seqs, length, seed=self.source.cfg.seed * 1000 + i + 1)
        with atomic_path(path) as tmp:
            torch.save({"key": key, "blocks": self.blocks}, tmp)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.source.render(ids)

    def ood_splits(
        self, shifts: Sequence[float], files: Sequence[str], tokens: int
    ) -> dict[str, tuple[torch.Tensor, ShiftedSource]]:
        """Per ρ of ``shifts``: ``tokens`` tokens (whole blocks, at least one) of the source shifted by ρ toward the
        source of seed ``source.seed + 1`` (``ShiftedSource``), and that shifted source: {"shift<ρ>": ...}. Text
        files have no place here: their words are not the source's (refused when the run is checked)."""
        length = self.block_size + 1
        out = {}
        for i, rho in enumerate(shifts):
            shifted = ShiftedSource(self.source, rho, other_seed=self.source.cfg.seed + 1)
            blocks = shifted.sample(max(tokens // length, 1), length, seed=self.source.cfg.seed * 1000 + 100 + i)
            out[f"shift{rho:g}"] = (blocks, shifted)
        return out


@dataclass
class TextConfig(BlockConfig):
    """Real text through HF ``datasets``: local files (``path=text`` with ``files``) or any hub dataset."""

    path: str = "text"
    name: str | None = None
    files: list[str] | str | None = None
    text_field: str = "text"
    vocab_size: int = 8192  # the byte-level BPE trained on the train split (with data.tokenizer: that one's size)
    tokenizer: str | None = None  # a tokenizer.json, or a directory with one (or GPT-2's vocab.json + merges.txt)
    splits: dict | None = None  # the dataset's split names; missing held-out splits are carved from train
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    max_train_docs: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            "data.vocab_size",
            self.vocab_size,
            is_int(self.vocab_size) and self.vocab_size >= 257,
            "use an integer >= 257 (bytes + merges)",
        )
        self.splits = dict(self.splits or {"train": "train", "val": "validation", "test": "test"})
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            require(f"data.{name}", value, is_number(value) and 0.0 < value < 0.5, "use 0 < x < 0.5")
        if self.path == "text" and self.files is None:
            raise ConfigError(
                "data=text needs data.files: the UTF-8 text file(s) to train on, one document per line; "
                "e.g. 'data.files=[book.txt]'"
            )
        if self.files is not None:
            self.files = [check_text_file(f) for f in ([self.files] if isinstance(self.files, str) else self.files)]
            if not self.files:
                raise DataError("data.files=[] is empty; give at least one UTF-8 text file")
        if self.tokenizer is not None:
            require("data.tokenizer", self.tokenizer, isinstance(self.tokenizer, str), "give a path or null")
            if not Path(self.tokenizer).expanduser().exists():
                raise DataError(f"data.tokenizer={self.tokenizer} does not exist; give a tokenizer.json or a directory")
            self.vocab_size = load_tokenizer(self.tokenizer)[0].get_vocab_size()


class TextDataModule(BlockDataModule):
    """Real text through HF ``datasets``: local files (``path=text``) or any hub dataset."""

    Config = TextConfig
    cfg: TextConfig

    def __init__(self, config: TextConfig | None = None, **settings) -> None:
        super().__init__(config, **settings)
        self.tokenizer = None
        self.eos = EOS  # the end-of-text token that separates documents
        self.test_documents: list[np.ndarray] = []  # token ids of each test document (no EOS)

    def _load(self):
        import datasets

        datasets.disable_progress_bars()
        kwargs = {"cache_dir": str(self.cache_dir / "hf")}
        if self.cfg.files is not None:
            kwargs["data_files"] = {"train": self.cfg.files}
        try:
            raw = datasets.load_dataset(self.cfg.path, self.cfg.name, **kwargs)
        except Exception as e:  # missing dataset, no network, bad config name ...
            raise DataError(
                f"data.path={self.cfg.path!r} (name={self.cfg.name!r}) could not be loaded: {str(e).splitlines()[0]}"
            ) from e
        if self.cfg.splits["train"] not in raw:
            raise DataError(
                f"data.splits.train={self.cfg.splits['train']!r} is not a split of {self.cfg.path!r}; "
                f"it has {list(raw)}"
            )
        train = raw[self.cfg.splits["train"]]
        if self.cfg.text_field not in train.column_names:
            raise DataError(
                f"data.text_field={self.cfg.text_field!r} is not a column of {self.cfg.path!r}; "
                f"it has {train.column_names}"
            )
        out = {"train": train}
        for split, frac in (("val", self.cfg.val_fraction), ("test", self.cfg.test_fraction)):
            if self.cfg.splits.get(split) in raw:
                out[split] = raw[self.cfg.splits[split]]
            else:  # no such split: carve it out of train, deterministically
                try:
                    parts = out["train"].train_test_split(test_size=frac, seed=self.seed, shuffle=True)
                except ValueError:  # too few documents for both sides of the split
                    raise DataError(
                        f"data: {len(out['train'])} document(s) are too few to carve a {split} split of "
                        f"{frac:g} out of them; give a longer corpus (or one with its own {split} split)"
                    ) from None
                out["train"], out[split] = parts["train"], parts["test"]
        if self.cfg.max_train_docs is not None:
            out["train"] = out["train"].select(range(min(self.cfg.max_train_docs, len(out["train"]))))
        return out

    def _tokenizer(self, train):
        """data.tokenizer's, or a byte-level BPE of data.vocab_size trained on the train split (cached)."""
        if self.cfg.tokenizer is not None:
            tok, self.eos = load_tokenizer(self.cfg.tokenizer)
            print(f"tokenizer: {self.cfg.tokenizer} ({tok.get_vocab_size()} tokens, end of text {self.eos!r})")
            return tok
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        path = self.cache_dir / "tokenizers" / f"{train._fingerprint}-{self.cfg.text_field}-{self.vocab_size}.json"
        if path.exists():
            try:
                tok = Tokenizer.from_file(str(path))
                print(f"tokenizer: {path} (cached)")
                return tok
            except Exception:  # corrupt cache: rebuild
                pass
        print(f"tokenizer: training a byte-level BPE of {self.vocab_size} on the train split -> {path}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            special_tokens=[EOS],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        field = self.cfg.text_field

        def batches():
            for i in range(0, len(train), 1000):
                yield train[i : i + 1000][field]

        tok.train_from_iterator(batches(), trainer=trainer, length=len(train))
        with atomic_path(path) as tmp:
            tok.save(str(tmp))
        return tok

    def load_blocks(self) -> None:
        import pyarrow.compute as pc

        data = self._load()
        self.tokenizer = tok = self._tokenizer(data["train"])
        eos = tok.token_to_id(self.eos)
        field = self.cfg.text_field
        tok_key = hashlib.sha1(tok.to_str().encode()).hexdigest()[:16]

        def encode(batch):
            return {"ids": [enc.ids + [eos] for enc in tok.encode_batch(batch[field])]}

        length = self.block_size + 1
        for split in SPLITS:
            ds = data[split]
            ids = ds.map(
                encode,
                batched=True,
                remove_columns=ds.column_names,
                new_fingerprint=f"{ds._fingerprint}-{tok_key}-{field}",
            )
            flat = pc.list_flatten(ids.data.column("ids")).to_numpy(zero_copy_only=False)
            if split == "test":  # document boundaries, for prompts that stay inside one document
                ends = np.cumsum(pc.list_value_length(ids.data.column("ids")).to_numpy(zero_copy_only=False))
                self.test_documents = [d[:-1] for d in np.split(flat, ends[:-1])]  # without the EOS
            n = len(flat) // length
            if n == 0:
                raise DataError(
                    f"the {split} split of data.path={self.cfg.path!r} has {len(flat)} tokens, fewer than one "
                    f"block (data.block_size + 1 = {length})"
                )
            self.blocks[split] = torch.from_numpy(flat[: n * length].astype(np.int64)).view(n, length)

    def ood_splits(
        self, shifts: Sequence[float], files: Sequence[str], tokens: int
    ) -> dict[str, tuple[torch.Tensor, None]]:
        """Per file of ``files`` (named by its stem): its documents (one a line) in the run's tokenizer, each ended
        by EOS as in training, packed into blocks; the first ``tokens`` tokens' whole blocks (at least one).
        Shifted sources need the synthetic source: ``shifts`` has nothing to act on here."""
        eos = self.tokenizer.token_to_id(self.eos)
        length = self.block_size + 1
        out = {}
        for path in files:
            lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
            flat = np.fromiter((i for enc in self.tokenizer.encode_batch(lines) for i in [*enc.ids, eos]), np.int64)
            n = min(len(flat) // length, max(tokens // length, 1))
            if n == 0:
                raise DataError(
                    f"eval.ood_files: {path!r} has {len(flat)} tokens, fewer than one block "
                    f"(data.block_size + 1 = {length})"
                )
            out[Path(path).stem] = (torch.from_numpy(flat[: n * length]).view(n, length), None)
        return out

    def prompt_blocks(self, n: int, length: int) -> torch.Tensor:
        """n windows of ``length`` tokens, each inside one test document and spread over the documents:
        the first ``length`` tokens of n documents evenly spaced in the test split; when fewer documents are
        that long, further non-overlapping windows of the long ones, taken round-robin."""
        docs = [d for d in self.test_documents if len(d) >= length]
        windows_per_doc = [len(d) // length for d in docs]
        if sum(windows_per_doc) < n:
            raise DataError(
                f"the test split has {sum(windows_per_doc)} windows of eval.prefix_len + eval.cont_len = {length} "
                f"tokens inside one document, fewer than eval.num_prompts={n}; lower one of them"
            )
        if len(docs) >= n:
            picks = [(int(i), 0) for i in np.linspace(0, len(docs) - 1, n).round()]
        else:
            picks, rank = [], 0
            while len(picks) < n:
                picks += [(i, rank) for i, w in enumerate(windows_per_doc) if w > rank][: n - len(picks)]
                rank += 1
        return torch.stack(
            [torch.from_numpy(docs[i][r * length : (r + 1) * length].astype(np.int64)) for i, r in picks]
        )

    def special_ids(self) -> list[int]:
        return [self.tokenizer.token_to_id(self.eos)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of token ids; a document end (EOS) reads as a blank line, not as the literal token."""
        eos = self.tokenizer.token_to_id(self.eos)
        parts, current = [], []
        for i in ids:
            if int(i) == eos:
                parts.append(current)
                current = []
            else:
                current.append(int(i))
        parts.append(current)
        return "\n\n".join(self.tokenizer.decode(p) for p in parts)


def check_text_file(path: str, setting: str = "data.files") -> str:
    """A readable, non-empty UTF-8 file, or a DataError naming it (and the ``setting`` that gave it)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{setting}: {path!r} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{setting}: {path!r} is empty; give a UTF-8 text file with content")
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    has_text = False
    offset = 0
    with p.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{setting}: {path!r} is not UTF-8 text (bad byte at offset {offset + e.start})"
                ) from None
            if "\x00" in text:
                raise DataError(f"{setting}: {path!r} looks binary (NUL byte); give a UTF-8 text file")
            has_text = has_text or bool(text.strip())
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataError(f"{setting}: {path!r} is not UTF-8 text (truncated character at the end)") from None
    if not has_text:
        raise DataError(f"{setting}: {path!r} holds only whitespace; give a UTF-8 text file with content")
    return str(p.resolve())
