"""The evaluation of a trained backbone, whatever its objective: teacher-forced metrics on the test split
(``tf/``), exact divergences from the source where it is known (``gt/``), out-of-distribution test data (``ood/``),
the memorisation of the train split's canaries (``mem/``), generated continuations (``gen/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.evaluation import mauve
from benchmarks.evaluation.frontier import FRONTIERS, frontier_metrics
from benchmarks.evaluation.generation import Decoded, continuation_stats, decode_all, generate_all
from benchmarks.evaluation.memorisation import canary_metrics
from benchmarks.evaluation.metrics import NgramIndex, seq_rep_n
from benchmarks.evaluation.teacher_forced import TeacherForced, teacher_forced
from benchmarks.evaluation.temperature import DEFAULT_TEMPERATURES, check_temperatures
from benchmarks.evaluation.temperature_scaling import fit_temperature
from lit_modules.core.configs import positive_int, require
from lit_modules.core.decoding import DecodingConfig
from lit_modules.core.model import GPT
from lit_modules.data import check_text_file

COPY_NGRAM = 8  # gen/<decoding>/copy_rate_8: the share of a continuation's 8-grams found in the train split


@dataclass
class EvalConfig:
    decodings: list[str] = field(default_factory=lambda: ["greedy", "sample", "top_p"])  # configs/decoding/ names
    num_prompts: int = 64  # held-out windows whose first prefix_len tokens are the prompts
    prefix_len: int = 32
    cont_len: int = 96  # generated tokens, no early stop
    batch_size: int = 64
    max_batches: int | None = None  # teacher-forced test batches (None: the whole test split)
    mauve: bool | str = "auto"  # MAUVE against the human continuations: auto, true (required) or false
    ood_shifts: list[float] = field(default_factory=lambda: [0.25, 1.0])  # synthetic: ρ of the shifted sources
    ood_tokens: int = 8192  # test tokens of each shifted source or OOD file (at most)
    ood_files: list[str] = field(default_factory=list)  # real text: UTF-8 files of another corpus, one doc a line
    ood_prompts: int = 16  # prompts of each OOD split continued by sampling (0: none)
    ood_cont_len: int = 32  # tokens of each of those continuations
    val_calibration: bool = False  # every validation also measures entropy and ECE (the history keeps them)
    at_best: bool = False  # also evaluate the weights of the lowest val/nll (early stopping): results' at_best
    temperatures: list[float] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES))  # temp/<T>/ metrics
    temperature_scaling: bool = True  # fit T on the validation split's NLL, its test metrics under ts/
    temperature_tokens: int = 16384  # test tokens of the temp/ and ts/ metrics, validation tokens of the fit
    frontier: str = "default"  # quality-diversity points sampled at: off, default or full (frontier.FRONTIERS)

    def __post_init__(self) -> None:
        ok = isinstance(self.decodings, list) and all(isinstance(d, str) for d in self.decodings)
        require(
            "eval.decodings", self.decodings, ok, "use a list of decoding names, e.g. eval.decodings=[greedy,top_p]"
        )
        for key in ("num_prompts", "prefix_len", "cont_len", "batch_size", "temperature_tokens"):
            positive_int(f"eval.{key}", getattr(self, key))
        if self.max_batches is not None:
            positive_int("eval.max_batches", self.max_batches)
        ok = isinstance(self.ood_shifts, list) and all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1 for r in self.ood_shifts
        )
        require("eval.ood_shifts", self.ood_shifts, ok, "use a list of shifts ρ in (0, 1], e.g. [0.25,1.0], or []")
        positive_int("eval.ood_tokens", self.ood_tokens)
        ok = isinstance(self.ood_prompts, int) and not isinstance(self.ood_prompts, bool) and self.ood_prompts >= 0
        require("eval.ood_prompts", self.ood_prompts, ok, "use an integer >= 0 (0: no continuations)")
        positive_int("eval.ood_cont_len", self.ood_cont_len)
        if isinstance(self.ood_files, str):
            self.ood_files = [self.ood_files]
        ok = isinstance(self.ood_files, list) and all(isinstance(f, str) for f in self.ood_files)
        require("eval.ood_files", self.ood_files, ok, "use a list of UTF-8 text files, e.g. [data/markdown_docs.txt]")
        self.ood_files = [check_text_file(f, "eval.ood_files") for f in self.ood_files]
        stems = [Path(f).stem for f in self.ood_files]
        ok = len(set(stems)) == len(stems) and not any(s.startswith("shift") for s in stems)
        require("eval.ood_files", self.ood_files, ok, "give files of distinct names, none starting with 'shift'")
        self.temperatures = check_temperatures("eval.temperatures", self.temperatures)
        for key in ("val_calibration", "at_best", "temperature_scaling"):
            require(f"eval.{key}", getattr(self, key), isinstance(getattr(self, key), bool), "use true or false")
        presets = ", ".join(FRONTIERS)
        require("eval.frontier", self.frontier, self.frontier in FRONTIERS, f"choose one of {presets}")
        ok = isinstance(self.mauve, bool) or self.mauve == "auto"
        require("eval.mauve", self.mauve, ok, "use auto, true or false")
        if self.mauve is True:
            mauve.require()


def use_mauve(setting: bool | str, synthetic: bool) -> bool:
    """eval.mauve: true (the extra must be installed), false, or auto: on for real text when the extra is
    installed; off on the synthetic source, whose id strings an English sentence encoder cannot read."""
    if setting is True:
        mauve.require()
        return True
    if setting is False or synthetic:
        return False
    if not mauve.installed():
        print(f"MAUVE: skipped, the mauve extra is not installed ({mauve.INSTALL})")
        return False
    return True


OOD_KEYS = ("nll", "entropy", "ece", "rms_ce", "mce", "brier", "entropy_rate", "forward_kl", "reverse_kl")
OOD_SCALED_KEYS = ("ts/nll", "ts/entropy", "ts/ece")  # ood/<split>/ts_nll, ...: at the in-distribution fitted T


def shifted_metrics(
    model: GPT, datamodule, config: EvalConfig, bf16: bool, fitted: float | None = None
) -> dict[str, float]:
    """Teacher-forced metrics on each out-of-distribution split of the data module: ``ood/<split>/<metric>``; on
    the synthetic source shifted by each ρ of eval.ood_shifts (its exact divergences included), on real text each
    file of eval.ood_files (named by its stem). With the temperature fitted on in-distribution validation data
    (``fitted``), the NLL, entropy and ECE at it too (``ts_nll``, ...: does one temperature fitted in distribution
    still calibrate out of it? Ovadia et al. 2019)."""
    out = {}
    splits = datamodule.ood_splits(config.ood_shifts, config.ood_files, config.ood_tokens)
    for name, (blocks, source) in splits.items():
        metrics = teacher_forced(
            model, blocks, config.batch_size, bf16, None, source, fitted_temperature=fitted
        ).metrics
        for key, value in metrics.items():
            metric = key.split("/", 1)[1]
            if metric in OOD_KEYS and key.startswith(("tf/", "gt/")):
                out[f"ood/{name}/{metric}"] = value
            elif key in OOD_SCALED_KEYS:
                out[f"ood/{name}/ts_{metric}"] = value
        out.update({f"ood/{name}/{k}": v for k, v in ood_continuations(model, blocks, source, config, bf16).items()})
    return out


def ood_continuations(model: GPT, blocks: torch.Tensor, source, config: EvalConfig, bf16: bool) -> dict[str, float]:
    """The first eval.prefix_len tokens of the first eval.ood_prompts OOD blocks continued by sampling (T = 1,
    eval.ood_cont_len tokens, a generator of its own): the model's mean entropy along them (``cont_entropy``), their
    repetition (``cont_seq_rep_4``) and, where the truth is known, their NLL under it (``cont_true_nll``: a
    calibrated model's continuations have a true NLL near its entropy; above it, the model is over-confident)."""
    n = min(config.ood_prompts, blocks.shape[0])
    length = min(config.ood_cont_len, blocks.shape[1] - config.prefix_len)
    if n == 0 or length < 1:
        return {}
    prompts = blocks[:n, : config.prefix_len]
    sample = {"sample": DecodingConfig(name="sample", strategy="sample")}
    conts = decode_all(model, prompts, sample, length, config.batch_size, bf16, seed=0)["sample"]
    stats = continuation_stats(model, prompts, conts, config.batch_size, bf16, source)
    out = {"cont_entropy": stats["entropy"].mean().item(), "cont_seq_rep_4": seq_rep_n(conts, 4)}
    if "sample_nll" in stats:
        out["cont_true_nll"] = stats["sample_nll"].mean().item()
    return out


def test_split_metrics(model: GPT, datamodule, config: EvalConfig, bf16: bool) -> TeacherForced:
    """The teacher-forced pass over the test split: tf/ and gt/ metrics, and over its first eval.temperature_tokens
    the tempered ones (temp/) and, with temperature scaling, those at the temperature fitted on as many validation
    tokens (ts/)."""
    test, val = datamodule.blocks["test"], datamodule.blocks["val"]
    tempered_rows = -(-config.temperature_tokens // (test.shape[1] - 1))  # whole blocks
    fitted = None
    if config.temperature_scaling:
        fitted = fit_temperature(model, val[:tempered_rows], config.batch_size, bf16)
    return teacher_forced(
        model,
        test,
        config.batch_size,
        bf16,
        config.max_batches,
        getattr(datamodule, "source", None),
        train_counts=datamodule.unigram_counts(),
        temperatures=tuple(config.temperatures),
        fitted_temperature=fitted,
        tempered_batches=-(-tempered_rows // config.batch_size),
    )


def evaluate_run(
    model: GPT, datamodule, decodings: dict[str, DecodingConfig], config: EvalConfig, seed: int, bf16: bool
) -> dict:
    """tf/, gt/, temp/, ts/ metrics of a trained model on the datamodule's test split, ood/ on the shifted ones,
    mem/ of the canaries, gen/ and frontier/ of its continuations of held-out prompts; the samples; the
    reliability bins and per-token entropies."""
    source = getattr(datamodule, "source", None)  # exact conditionals: synthetic data only
    tf = test_split_metrics(model, datamodule, config, bf16)
    held_out = datamodule.prompt_blocks(config.num_prompts, config.prefix_len + config.cont_len)
    with_mauve = use_mauve(config.mauve, synthetic=source is not None)
    decoded: Decoded = {}  # the frontier's points that are also eval.decodings are not decoded twice
    generations = generate_all(
        model,
        held_out,
        decodings,
        config.prefix_len,
        config.cont_len,
        config.batch_size,
        bf16,
        seed,
        datamodule.decode,
        source,
        NgramIndex.of(datamodule.blocks["train"], COPY_NGRAM),
        mauve=with_mauve,
        decoded=decoded,
    )
    prompts, human = held_out[:, : config.prefix_len], held_out[:, config.prefix_len :] if with_mauve else None
    frontier = frontier_metrics(
        model,
        prompts,
        config.frontier,
        config.cont_len,
        config.batch_size,
        bf16,
        seed,
        source,
        human,
        datamodule.decode,
        decoded,
    )
    canaries = getattr(datamodule, "canaries", None)
    memorised = canary_metrics(model, canaries, config.batch_size, bf16) if canaries is not None else {}
    return {
        "metrics": {
            **tf.metrics,
            **shifted_metrics(model, datamodule, config, bf16, tf.metrics.get("ts/temperature")),
            **memorised,
            **generations.metrics,
            **frontier,
        },
        "samples": generations.records,
        "entropies": tf.entropies,
        "reliability": tf.reliability,
    }
