"""The timing harness of the performance benchmark (benchmarks/perf.py): benchmark shapes, medians of timed
windows, paired windows for ratios, and the objbench steps it times (raw loop, Lightning Trainer, generation,
evaluation)."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

from lit_modules.core.errors import ConfigError
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.synthetic import HMMSource, SourceConfig
from lit_modules.trainer import TrainerConfig
from objectives.base import ObjectiveContext, longest_sequence

PRESETS = {
    "default": dict(n_layer=4, n_head=4, d_model=256, context=256, vocab_size=8192, batch=16, seq=256),
    "tiny": dict(n_layer=2, n_head=4, d_model=128, context=128, vocab_size=1024, batch=32, seq=128),
    "gpt2": dict(n_layer=12, n_head=12, d_model=768, context=1024, vocab_size=50304, batch=16, seq=1024),
    "micro": dict(n_layer=1, n_head=2, d_model=32, context=64, vocab_size=256, batch=4, seq=32),  # a smoke test
}


# bf16 dense peak of the card, for MFU (H100 SXM: 989 TFLOP/s; H200: the same chip)
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@functools.cache
def synthetic_source(vocab_size: int) -> HMMSource | None:
    """A synthetic source of the bench's vocabulary, for the objectives that read the true conditionals (the
    oracles, selective LM's default reference); None where the source cannot have that vocabulary."""
    try:
        return HMMSource(SourceConfig(vocab_size=vocab_size))
    except ConfigError:
        return None


@dataclass
class Shape:
    n_layer: int
    n_head: int
    d_model: int
    context: int
    vocab_size: int
    batch: int
    seq: int

    def gpt_config(self, vocab_size: int | None = None) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size or self.vocab_size,
            context=self.context,
            n_layer=self.n_layer,
            n_head=self.n_head,
            d_model=self.d_model,
        )

    @property
    def objective_length(self) -> int:
        """The longest sequence an objective may use, as run.py computes it."""
        return longest_sequence(self.context, self.seq)

    def flops_per_token(self, n_params: int) -> float:
        """Training FLOPs per token: 6·N + 12·L·T·d (Kaplan et al. 2020; PaLM appendix B)."""
        return 6 * n_params + 12 * self.n_layer * self.seq * self.d_model


def timed(fn: Callable[[], None], warmup: int, steps: int, repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` windows of ``steps`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    windows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        windows.append((time.perf_counter() - t0) / steps)
    return statistics.median(windows)


def paired(
    fn_a: Callable[[], None], fn_b: Callable[[], None], warmup: int, steps: int, repeats: int, sync: Callable[[], None]
) -> tuple[float, float, float]:
    """Alternate windows of ``fn_a`` and ``fn_b``: median seconds per call of each and median ratio b/a.

    On a shared machine the speed drifts by tens of percent over a minute; a ratio of adjacent
    windows cancels the drift that separate measurements would put into it.
    """
    for _ in range(warmup):
        fn_a()
        fn_b()
    sync()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            out.append((time.perf_counter() - t0) / steps)
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b, strict=True))


def matmul_tflops(device: torch.device, dtype: torch.dtype, sync: Callable[[], None]) -> float:
    """TFLOP/s of one square matmul (2048 on a CPU, 8192 on a GPU), the median of 5 windows: how fast the
    machine multiplies while perf.py runs. A shared host's speed swings within a day, and every figure of the
    run moves with it; the ratios against references much less (docs/performance.md)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return 2 * n**3 / timed(lambda: a @ b, 2, 4 if device.type == "cpu" else 20, 5, sync) / 1e12


class Bench:
    def __init__(self, shape: Shape, device: str, warmup: int, steps: int, repeats: int) -> None:
        self.shape, self.device = shape, torch.device(device)
        self.warmup, self.steps, self.repeats = warmup, steps, repeats
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self.g = torch.Generator().manual_seed(0)

    def batch(self, vocab_size: int | None = None) -> torch.Tensor:
        V = vocab_size or self.shape.vocab_size
        return torch.randint(0, V, (self.shape.batch, self.shape.seq + 1), generator=self.g).to(self.device)

    def autocast(self, bf16: bool):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    # ---- training, raw loop ----
    def train_step_time(
        self, objective, bf16: bool, compile_model: bool = False, vocab_size: int | None = None
    ) -> float:
        step = self.train_step(objective, bf16, compile_model, vocab_size)
        return timed(step, self.warmup, self.steps, self.repeats, self.sync)

    def train_step(
        self, objective, bf16: bool, compile_model: bool = False, vocab_size: int | None = None, start=None
    ) -> Callable[[], None]:
        """One optimiser step of backbone + objective on a fixed batch, as a closure; ``start``: the
        ``StartWeights`` the backbone begins from (its own shape), else random weights of the bench's shape."""
        torch.manual_seed(0)
        model = GPT(GPTConfig(**start.model) if start is not None else self.shape.gpt_config(vocab_size))
        if start is not None:
            model.load_state_dict(start.state_dict)
        model = model.to(self.device)
        V = model.cfg.vocab_size
        objective = objective.to(self.device)
        counts = torch.ones(V, dtype=torch.float64)
        objective.setup(model, ObjectiveContext(V, self.shape.objective_length, counts, synthetic_source(V)))
        if compile_model:
            model.compile_blocks()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the LightningModule
        batch = self.batch(V)
        step = [0]

        def one():
            objective.want_logs((step[0] + 1) % TrainerConfig.log_every_n_steps == 0)  # as the LightningModule
            with self.autocast(bf16):
                loss = objective(model, batch, step[0]).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step[0] += 1

        return one

    # ---- training through the Lightning Trainer ----
    def trainer_windows(
        self, precision: str, between: Callable[[], dict[str, float]] | None = None, compile_model: bool = False
    ) -> tuple[list, list]:
        """Seconds per step through ``Trainer.fit``, per window, and what ``between`` returned after each
        window: other measurements run between the Trainer's windows, so that they alternate with it."""
        from lit_modules.system import LanguageModelSystem, OptimConfig
        from objectives.mle import MLE

        optim = OptimConfig(lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), warmup_steps=10, min_lr_ratio=0.1)
        system = LanguageModelSystem(self.shape.gpt_config(), MLE(), optim)
        if compile_model:
            system.model.compile_blocks()  # as a run with compile=true
        total = self.warmup + self.steps * self.repeats
        clock = _Clock(self, between)
        trainer = pl.Trainer(
            max_steps=total,
            accelerator=self.device.type if self.device.type == "cuda" else "cpu",
            devices=1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[clock],
            gradient_clip_val=1.0,
        )
        trainer.fit(system, datamodule=_RandomBlocks(self.shape, total, self.g))
        return clock.windows, clock.between

    # ---- generation ----
    def generate_tokens_per_s(self, strategy: dict, bf16: bool, prompt_len: int = 32, new: int = 128) -> float:
        one = self.generate_call(strategy, bf16, prompt_len, new)
        return 16 * min(new, self.shape.context - prompt_len) / timed(one, 1, 1, self.repeats, self.sync)

    def generate_call(self, strategy: dict, bf16: bool, prompt_len: int = 32, new: int = 128) -> Callable[[], None]:
        """Continue 16 prompts by ``new`` tokens with the KV cache, as a closure."""
        from lit_modules.core.decoding import DecodingConfig, generate

        new = min(new, self.shape.context - prompt_len)
        torch.manual_seed(0)
        model = GPT(self.shape.gpt_config()).to(self.device).eval()
        prompt = torch.randint(0, self.shape.vocab_size, (16, prompt_len), generator=self.g).to(self.device)
        cfg = DecodingConfig(**strategy)
        gen = torch.Generator(device=self.device).manual_seed(0)

        def one():
            with self.autocast(bf16):
                generate(model, prompt, new, cfg, gen)

        return one


class _Clock(pl.Callback):
    """Times windows of ``bench.steps`` steps after ``bench.warmup``; runs ``between`` after each window."""

    def __init__(self, bench: Bench, between: Callable[[], dict[str, float]] | None) -> None:
        self.bench, self.between_fn = bench, between
        self.done, self.start, self.windows, self.between = 0, 0.0, [], []

    def on_train_batch_end(self, trainer, *args) -> None:
        bench = self.bench
        self.done += 1
        if self.done >= bench.warmup and (self.done - bench.warmup) % bench.steps == 0:
            bench.sync()  # at window ends only: a wait at every step would hide the launch overlap
            if self.done > bench.warmup:
                self.windows.append((time.perf_counter() - self.start) / bench.steps)
                if self.between_fn is not None:
                    self.between.append(self.between_fn())
            self.start = time.perf_counter()


class _RandomBlocks(pl.LightningDataModule):
    """Random token blocks of the shape, enough for ``steps`` batches, and flat unigram counts."""

    def __init__(self, shape: Shape, steps: int, generator: torch.Generator) -> None:
        super().__init__()
        self.shape, self.block_size = shape, shape.seq
        self.data = torch.randint(0, shape.vocab_size, (shape.batch * steps, shape.seq + 1), generator=generator)

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        from lit_modules.data import Blocks, stack_rows

        return DataLoader(Blocks(self.data), batch_size=self.shape.batch, shuffle=False, collate_fn=stack_rows)

    def unigram_counts(self) -> torch.Tensor:
        return torch.ones(self.shape.vocab_size, dtype=torch.float64)


def evaluation_seconds(bench: Bench, bf16: bool, n: int = 64) -> dict[str, float]:
    """Wall seconds of a run's evaluation at the bench shape, as run.py does it by default: the
    teacher-forced metrics over ``n`` test blocks, and generation with the greedy, sample and top-p
    decodings for ``n`` prompts of 32 tokens continued by 96 (gen/ metrics included)."""
    from benchmarks.evaluation.generation import generate_all
    from benchmarks.evaluation.teacher_forced import teacher_forced
    from lit_modules.core.decoding import DecodingConfig

    torch.manual_seed(0)
    model = GPT(bench.shape.gpt_config()).to(bench.device).eval()
    V, cont_len = bench.shape.vocab_size, min(96, bench.shape.context - 32)
    blocks = torch.randint(0, V, (n, bench.shape.seq + 1), generator=bench.g)
    held_out = torch.randint(0, V, (n, 32 + cont_len), generator=bench.g)  # prompts + real continuations
    decodings = {
        "greedy": DecodingConfig(strategy="greedy"),
        "sample": DecodingConfig(strategy="sample"),
        "top_p": DecodingConfig(strategy="sample", top_p=0.9),
    }

    def tf():
        teacher_forced(model, blocks, bench.shape.batch, bf16)

    def gen():
        generate_all(model, held_out, decodings, 32, cont_len, n, bf16, 0, lambda ids: " ".join(map(str, ids)))

    return {
        "teacher_forced": timed(tf, 1, 1, bench.repeats, bench.sync),
        "generation": timed(gen, 0, 1, bench.repeats, bench.sync),
    }


def no_cache_generate_tokens_per_s(bench: Bench, bf16: bool, prompt_len: int = 32, new: int = 128) -> float:
    """The same top-p sampling without the KV cache: the whole sequence re-run for every new token."""
    from lit_modules.core.decoding import DecodingConfig, filter_logits

    new = min(new, bench.shape.context - prompt_len)
    torch.manual_seed(0)
    model = GPT(bench.shape.gpt_config()).to(bench.device).eval()
    prompt = torch.randint(0, bench.shape.vocab_size, (16, prompt_len), generator=bench.g).to(bench.device)
    cfg = DecodingConfig(strategy="sample", top_p=0.9)

    @torch.no_grad()
    def one():
        seq = prompt
        for _ in range(new):
            with bench.autocast(bf16):
                logits = model(seq)[:, -1]
            probs = filter_logits(logits.float(), cfg).softmax(-1)
            seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)

    return 16 * new / timed(one, 0, 1, bench.repeats, bench.sync)


def profile_train_step(bench: Bench, bf16: bool, compile_model: bool, rows: int = 25) -> str:
    """torch.profiler's table of the raw-loop MLE step: the ops that take the most time, on the
    device (CUDA kernels) or on the CPU, over ``bench.steps`` steps after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    from objectives.mle import MLE

    step = bench.train_step(MLE(), bf16, compile_model)
    for _ in range(bench.warmup):
        step()
    bench.sync()
    cuda = bench.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        for _ in range(bench.steps):
            step()
        bench.sync()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)
