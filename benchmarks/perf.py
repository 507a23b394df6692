"""Speed of objbench, measured: training steps, objectives, generation, evaluation; Hugging Face beside it.

    python benchmarks/perf.py                        # the default shape on this machine, a table
    python benchmarks/perf.py --json perf.json       # also the figures as JSON
    python benchmarks/perf.py --preset gpt2 --device cuda --compile   # GPT-2 124M on a GPU: tokens/s, MFU
    python benchmarks/perf.py --nanogpt ../nanoGPT/model.py  # nanoGPT's step beside ours (your clone)
    python benchmarks/perf.py --profile              # where the training step's time goes, op by op

Default shape: 4 layers, 4 heads, d=256, context 256, vocab 8192, batch 16. Every figure is the
median of ``--repeats`` timed windows after warm-up steps; every ratio (against Hugging Face,
against MLE) is the median of ratios of adjacent windows of the two, which alternate. With the
``perf`` extra (transformers) installed, Hugging Face GPT-2 runs the same work at the same shape and
precision and the ratios are printed: in this process (objbench's allocator setting and fused AdamW: the
model code against ours) and as shipped, in a process of its own (``ShippedStep``); nanoGPT too.
Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from lit_modules.model import GPT, GPTConfig
from lit_modules.util import atomic_write_json, cpu_supports_bf16, keep_freed_memory

PRESETS = {
    "default": dict(n_layer=4, n_head=4, d_model=256, context=256, vocab_size=8192, batch=16, seq=256),
    "tiny": dict(n_layer=2, n_head=4, d_model=128, context=128, vocab_size=1024, batch=32, seq=128),
    "gpt2": dict(n_layer=12, n_head=12, d_model=768, context=1024, vocab_size=50304, batch=16, seq=1024),
    "micro": dict(n_layer=1, n_head=2, d_model=32, context=64, vocab_size=256, batch=4, seq=32),  # a smoke test
}
# bf16 dense peak of the card, for MFU (H100 SXM: 989 TFLOP/s; H200: the same chip)
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


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
        """The longest sequence an objective may use: run.py's min(model.context, data.block_size + 1)."""
        return min(self.context, self.seq + 1)

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
    machine multiplies while perf.py runs. A shared host swings (this project's CPU: 0.3-2.2 TFLOP/s bf16
    within a day), and every figure of the run moves with it; the ratios against references much less."""
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
        self, objective, bf16: bool, compile_model: bool = False, vocab_size: int | None = None
    ) -> Callable[[], None]:
        """One optimiser step of backbone + objective on a fixed batch, as a closure."""
        from objectives.base import ObjectiveContext

        torch.manual_seed(0)
        model = GPT(self.shape.gpt_config(vocab_size)).to(self.device)
        V = model.cfg.vocab_size
        objective = objective.to(self.device)
        counts = torch.ones(V, dtype=torch.float64)
        objective.setup(model, ObjectiveContext(V, self.shape.objective_length, counts))
        if compile_model:
            model.compile_blocks()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the LightningModule
        batch = self.batch(V)
        step = [0]

        def one():
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
        import lightning.pytorch as pl
        from torch.utils.data import DataLoader

        from lit_modules.data import Blocks, _stacked
        from lit_modules.system import LanguageModelSystem

        s = self.shape
        model_cfg = dict(
            vocab_size=s.vocab_size, context=s.context, n_layer=s.n_layer, n_head=s.n_head, d_model=s.d_model
        )
        system = LanguageModelSystem(
            model_cfg,
            {"_target_": "objectives.mle.MLE"},
            dict(lr=1e-4, weight_decay=0.1, betas=[0.9, 0.95], warmup_steps=10, min_lr_ratio=0.1),
        )
        if compile_model:
            system.model.compile_blocks()  # as run.py with trainer.compile=true
        total = self.warmup + self.steps * self.repeats
        blocks = torch.randint(0, s.vocab_size, (s.batch * total, s.seq + 1), generator=self.g)

        bench = self

        class Clock(pl.Callback):
            """Times windows of ``steps`` steps after ``warmup``; runs ``between`` after each window."""

            def __init__(self):
                self.done, self.start, self.windows, self.between = 0, 0.0, [], []

            def on_train_batch_end(self, trainer, *args):
                self.done += 1
                if self.done >= bench.warmup and (self.done - bench.warmup) % bench.steps == 0:
                    bench.sync()  # at window ends only: a wait at every step would hide the launch overlap
                    if self.done > bench.warmup:
                        self.windows.append((time.perf_counter() - self.start) / bench.steps)
                        if between is not None:
                            self.between.append(between())
                    self.start = time.perf_counter()

        clock = Clock()
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

        class RandomData(pl.LightningDataModule):
            block_size = s.seq

            def train_dataloader(self):
                return DataLoader(Blocks(blocks), batch_size=s.batch, shuffle=False, collate_fn=_stacked)

            def unigram_counts(self):
                return torch.ones(s.vocab_size, dtype=torch.float64)

        trainer.fit(system, datamodule=RandomData())
        return clock.windows, clock.between

    # ---- generation ----
    def generate_tokens_per_s(self, strategy: dict, bf16: bool, prompt_len: int = 32, new: int = 128) -> float:
        one = self.generate_call(strategy, bf16, prompt_len, new)
        return 16 * min(new, self.shape.context - prompt_len) / timed(one, 1, 1, self.repeats, self.sync)

    def generate_call(self, strategy: dict, bf16: bool, prompt_len: int = 32, new: int = 128) -> Callable[[], None]:
        """Continue 16 prompts by ``new`` tokens with the KV cache, as a closure."""
        from lit_modules.decoding import DecodingConfig, generate

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


def evaluation_seconds(bench: Bench, bf16: bool, n: int = 64) -> dict[str, float]:
    """Wall seconds of a run's evaluation at the bench shape, as run.py does it by default: the
    teacher-forced metrics over ``n`` test blocks, and generation with the greedy, sample and top-p
    decodings for ``n`` prompts of 32 tokens continued by 96 (gen/ metrics included)."""
    from benchmarks.evaluate import generate_all, teacher_forced
    from lit_modules.decoding import DecodingConfig

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
    from lit_modules.decoding import DecodingConfig, filter_logits

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


def reference_windows(
    args: argparse.Namespace, bench: Bench, bf16: bool, hf: bool
) -> tuple[list[tuple[str, str, str, Callable[[], float]]], list[ShippedStep]]:
    """What alternates with the Trainer's windows at the default precision, as (figure name, label,
    precision, one window's seconds per step): Hugging Face GPT-2 at the Trainer's precision and nanoGPT's
    plain fp32 step (README, Performance), each in this process (the same allocator and fused AdamW:
    their model code against ours) and, unless ``--no-shipped``, as shipped in a process of its own;
    and the workers to close."""
    tag = "bf16" if bf16 else "fp32"
    refs: list[tuple[str, str, str, Callable[[], float]]] = []
    workers: list[ShippedStep] = []

    def in_process(step: Callable[[], None]) -> Callable[[], float]:
        for _ in range(bench.warmup):
            step()
        return lambda: timed(step, 0, bench.steps, 1, bench.sync)

    if hf:
        refs.append(("hf", "Hugging Face GPT-2, same process", tag, in_process(hf_train_step(bench, bf16))))
        if not args.no_shipped:
            workers.append(ShippedStep("hf", args, bf16))
            window = partial(workers[-1].window, bench.steps)
            refs.append(("hf_shipped", "Hugging Face GPT-2 as shipped", tag, window))
    if args.nanogpt is not None:
        window = in_process(nanogpt_train_step(bench, args.nanogpt, False))
        refs.append(("nanogpt_fp32", "nanoGPT, same process", "fp32", window))
        if not args.no_shipped:
            workers.append(ShippedStep("nanogpt", args, False))
            window = partial(workers[-1].window, bench.steps)
            refs.append(("nanogpt_fp32_shipped", "nanoGPT as shipped", "fp32", window))
    return refs, workers


def hf_model(shape: Shape, device):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=shape.context,
        n_embd=shape.d_model,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    cfg._attn_implementation = "sdpa"  # the config field both transformers 4.4x and 5.x read
    return GPT2LMHeadModel(cfg).to(device)


def hf_train_step(bench: Bench, bf16: bool, shipped: bool = False) -> Callable[[], None]:
    """One Hugging Face GPT-2 training step (its own loss), the same shape and precision; the same fused
    AdamW as objbench, or with ``shipped`` torch's default AdamW, as a training loop written for it would."""
    torch.manual_seed(0)
    model = hf_model(bench.shape, bench.device)
    # fused=None: torch's default; True: the same optimiser as objbench
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=None if shipped else True)
    batch = bench.batch()

    def one():
        with bench.autocast(bf16):
            loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return one


def nanogpt_train_step(bench: Bench, model_py: Path, bf16: bool, shipped: bool = False) -> Callable[[], None]:
    """nanoGPT's training step (its ``model.py`` from a local clone, its own loss), the same shape and
    precision; the same fused AdamW as objbench, or with ``shipped`` the optimiser nanoGPT's own
    ``configure_optimizers`` picks. Nothing of nanoGPT ships with objbench: the path is the user's."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", model_py)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--nanogpt {model_py}: not a Python file; give the path of nanoGPT's model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    s = bench.shape
    torch.manual_seed(0)
    cfg = module.GPTConfig(
        block_size=s.context, vocab_size=s.vocab_size, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.d_model, dropout=0.0
    )
    model = module.GPT(cfg).to(bench.device)
    if shipped and hasattr(model, "configure_optimizers"):
        with contextlib.redirect_stdout(sys.stderr):  # it prints; a worker's stdout is its answer channel
            opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), bench.device.type)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # the same optimiser as objbench
    batch = bench.batch()
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def one():
        with bench.autocast(bf16):
            _, loss = model(inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return one


WORKER_TAG = "objbench-worker:"  # the prefix of a worker's answers; anything else on its stdout is ignored


class ShippedStep:
    """A library's training step as shipped, in a process of its own, timed in windows on request.

    objbench's process lets glibc keep freed blocks (``keep_freed_memory``) and uses fused AdamW; the
    in-process Hugging Face and nanoGPT steps get both, which measures their model code. A user's own
    script gets neither: this worker runs the library's step with the allocator and optimiser it
    ships with. It waits on its stdin between windows, so its windows alternate with the Trainer's.
    """

    def __init__(self, library: str, args: argparse.Namespace, bf16: bool) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", library, "--preset", args.preset]
        cmd += ["--device", args.device, "--warmup", str(args.warmup), *(["--bf16"] if bf16 else [])]
        if args.nanogpt is not None:
            cmd += ["--nanogpt", str(args.nanogpt)]
        self.library = library
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()  # built and warmed up

    def window(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return float(self._answer())

    def _answer(self) -> str:
        for line in self.proc.stdout:
            if line.startswith(WORKER_TAG):
                return line[len(WORKER_TAG) :].strip()
        raise SystemExit(f"perf.py: the {self.library} worker exited with code {self.proc.wait()}; its error is above")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def worker(args: argparse.Namespace) -> int:
    """The other end of ``ShippedStep``: build the step, warm up, then time a window per line of stdin."""
    bench = Bench(Shape(**PRESETS[args.preset]), args.device, args.warmup, 1, 1)
    if args.worker == "hf":
        step = hf_train_step(bench, args.bf16, shipped=True)
    else:
        step = nanogpt_train_step(bench, args.nanogpt, args.bf16, shipped=True)
    for _ in range(args.warmup):
        step()
    bench.sync()
    print(WORKER_TAG, "ready", flush=True)
    for line in sys.stdin:
        print(WORKER_TAG, timed(step, 0, int(line), 1, bench.sync), flush=True)
    return 0


def hf_generate_call(bench: Bench, bf16: bool, prompt_len: int = 32, new: int = 128) -> Callable[[], None]:
    """Hugging Face ``generate``: top-p 0.9, KV cache, exactly ``new`` tokens for 16 prompts."""
    new = min(new, bench.shape.context - prompt_len)
    torch.manual_seed(0)
    model = hf_model(bench.shape, bench.device).eval()
    prompt = torch.randint(0, bench.shape.vocab_size, (16, prompt_len), generator=bench.g).to(bench.device)

    def one():
        with torch.no_grad(), bench.autocast(bf16):
            model.generate(
                prompt,
                do_sample=True,
                top_p=0.9,
                top_k=0,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
                use_cache=True,
            )

    return one


def objectives_at_full_work() -> dict[str, torch.nn.Module]:
    """Every objective of ``configs/objective/`` as its yaml builds it, with the knobs its class names in
    ``full_work_knobs`` (a pairwise term from step 0, a sequence-level step every step): a cost is that
    of the objective's dearest step, not an average over steps that skip work. A new objective's yaml
    is timed with no change here."""
    import hydra
    from omegaconf import OmegaConf

    from benchmarks.cli import CONFIG_DIR, available
    from lit_modules.system import build_objective

    objectives = {}
    for name in available("objective"):
        config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "objective" / f"{name}.yaml"))
        full_work = hydra.utils.get_class(config["_target_"]).full_work_knobs
        objectives[name] = build_objective({**config, **full_work})
    return objectives


def objective_costs(bench: Bench, bf16: bool, pairs: int, steps: int) -> tuple[dict[str, float], dict[str, str]]:
    """Training-step time of each objective (``objectives_at_full_work``) relative to MLE's at the bench
    shape: the median ratio of ``pairs`` alternating pairs of ``steps``-step windows. A ±5% question needs
    more, shorter pairs than the other figures: with 5 pairs of 5 steps MLE against itself read 0.97-1.16
    on this project's CPU. Also returns the objectives whose sequences do not fit the shape's rows (a
    small preset), each with its one-line reason, as run.py would refuse them."""
    from objectives.base import KnobError
    from objectives.mle import MLE

    costs, skipped = {}, {}
    for name, objective in objectives_at_full_work().items():
        try:
            objective.check_fits(bench.shape.objective_length)
        except KnobError as e:
            skipped[name] = str(e)
            continue
        mle, this = bench.train_step(MLE(), bf16), bench.train_step(objective, bf16)
        costs[name] = paired(mle, this, bench.warmup, steps, pairs, bench.sync)[2]
    return costs, skipped


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (blocks and fused loss)")
    parser.add_argument("--objectives", action="store_true", help="also time every objective against MLE")
    parser.add_argument(
        "--cost-pairs",
        type=int,
        default=30,
        help="--objectives: alternating pairs of windows (12 pairs wander ±0.05, 30 ±0.02)",
    )
    parser.add_argument("--cost-steps", type=int, default=3, help="--objectives: steps per window")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--profile", action="store_true", help="only profile the training step (op by op) and exit")
    parser.add_argument(
        "--nanogpt", type=Path, metavar="MODEL_PY", help="nanoGPT's model.py (a local clone): its step beside ours"
    )
    parser.add_argument(
        "--no-shipped", action="store_true", help="skip Hugging Face / nanoGPT as shipped (their own process)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=["hf", "nanogpt"], help=argparse.SUPPRESS)  # see ShippedStep
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # the worker's precision
    args = parser.parse_args(argv)
    if args.nanogpt is not None and not args.nanogpt.is_file():
        parser.error(f"--nanogpt {args.nanogpt}: no such file; give the path of nanoGPT's model.py")
    if args.worker:
        return worker(args)  # before keep_freed_memory: a worker runs as shipped
    keep_freed_memory()  # as run.py: the same allocator for objbench and the in-process Hugging Face / nanoGPT
    if args.device == "cuda":
        torch.set_float32_matmul_precision("high")  # as run.py: TF32 for fp32 matmuls on GPUs

    shape = Shape(**PRESETS[args.preset])
    bench = Bench(shape, args.device, args.warmup, args.steps, args.repeats)
    native_bf16 = args.device == "cuda" or cpu_supports_bf16()
    tokens = shape.batch * shape.seq
    if args.profile:
        print(profile_train_step(bench, native_bf16, args.compile))
        return 0
    from objectives.mle import MLE

    fig: dict[str, float | str | dict] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "shape": PRESETS[args.preset],
        "torch": torch.__version__,
    }
    rows = []
    # a CPU's bf16 (AMX) and fp32 speeds swing apart; a GPU's bf16 is the one its MFU is against
    dtypes = ([torch.bfloat16] if native_bf16 else []) + ([torch.float32] if args.device == "cpu" else [])

    def host_speed(when: str) -> None:
        for dtype in dtypes:
            tag = "bf16" if dtype == torch.bfloat16 else "fp32"
            tflops = matmul_tflops(bench.device, dtype, bench.sync)
            fig.setdefault("matmul_tflops", {}).setdefault(tag, {})[when] = tflops
            rows.append((f"the machine: one square matmul, {tag}, {when} of the run", tflops, "TFLOP/s"))

    host_speed("start")
    hf = not args.skip_hf and importlib.util.find_spec("transformers") is not None
    if not args.skip_hf and not hf:
        print("transformers is not installed (pip install -e '.[perf]'): Hugging Face comparison skipped")
    default_tag = "bf16" if native_bf16 else "fp32"
    for bf16 in [False, True] if native_bf16 else [False]:
        tag = "bf16" if bf16 else "fp32"
        if args.nanogpt is not None:  # nanoGPT's windows alternate with objbench's raw loop
            ours, theirs = bench.train_step(MLE(), bf16), nanogpt_train_step(bench, args.nanogpt, bf16)
            ours_s, theirs_s, ratio = paired(ours, theirs, bench.warmup, bench.steps, bench.repeats, bench.sync)
            fig[f"raw_train_tokens_per_s_{tag}"] = tokens / ours_s
            fig[f"nanogpt_train_tokens_per_s_{tag}"] = tokens / theirs_s
            fig[f"ratio_raw_train_vs_nanogpt_{tag}"] = ratio  # their seconds / ours
        else:
            fig[f"raw_train_tokens_per_s_{tag}"] = tokens / bench.train_step_time(MLE(), bf16)
        rows.append((f"train step, raw loop, {tag}", fig[f"raw_train_tokens_per_s_{tag}"], "tokens/s"))
        if args.nanogpt is not None:
            rows.append((f"nanoGPT train step, {tag}", fig[f"nanogpt_train_tokens_per_s_{tag}"], "tokens/s"))
            rows.append((f"objbench (raw loop) / nanoGPT, {tag}", fig[f"ratio_raw_train_vs_nanogpt_{tag}"], "x"))
        if args.compile:
            fig[f"raw_train_tokens_per_s_{tag}_compiled"] = tokens / bench.train_step_time(MLE(), bf16, True)
            compiled = fig[f"raw_train_tokens_per_s_{tag}_compiled"]
            rows.append((f"train step, raw loop, {tag}, compiled", compiled, "tokens/s"))
        precision = "bf16-mixed" if bf16 else "32-true"
        if tag != default_tag:
            windows, _ = bench.trainer_windows(precision)
        else:  # the references' windows alternate with the Trainer's: (figure name, label, precision, window)
            refs, workers = reference_windows(args, bench, bf16, hf)
            between = lambda: {name: window() for name, _, _, window in refs}  # noqa: B023
            try:
                windows, between_windows = bench.trainer_windows(precision, between)
            finally:
                for shipped in workers:
                    shipped.close()
        fig[f"trainer_tokens_per_s_{tag}"] = tokens / statistics.median(windows)
        rows.append((f"train step, Lightning Trainer, {tag}", fig[f"trainer_tokens_per_s_{tag}"], "tokens/s"))
        if args.compile:
            compiled = tokens / statistics.median(bench.trainer_windows(precision, compile_model=True)[0])
            fig[f"trainer_tokens_per_s_{tag}_compiled"] = compiled
            rows.append((f"train step, Lightning Trainer, {tag}, compiled", compiled, "tokens/s"))
        if tag == default_tag:
            for name, label, ref_tag, _ in refs:
                seconds = [b[name] for b in between_windows]
                fig[f"{name}_train_tokens_per_s"] = tokens / statistics.median(seconds)
                fig[f"ratio_train_vs_{name}"] = statistics.median(r / w for w, r in zip(windows, seconds, strict=True))
                rows.append((f"{label} train step, {ref_tag}", fig[f"{name}_train_tokens_per_s"], "tokens/s"))
                rows.append((f"objbench (Trainer, {tag}) / {label}, {ref_tag}", fig[f"ratio_train_vs_{name}"], "x"))
    fig["train_tokens_per_s"] = fig[f"trainer_tokens_per_s_{default_tag}"]
    new = min(128, shape.context - 32)
    for name, strategy in {
        "greedy": {"strategy": "greedy"},
        "top_p": {"strategy": "sample", "top_p": 0.9},
        "beam": {"strategy": "beam", "beam_size": 4},
        "contrastive": {"strategy": "contrastive", "top_k": 8},
    }.items():
        label = f"generate {name} (KV cache, batch 16, 32+{new})"
        if name == "top_p" and hf:  # Hugging Face generate alternates with ours
            ours, theirs = bench.generate_call(strategy, native_bf16), hf_generate_call(bench, native_bf16)
            ours_s, hf_s, ratio = paired(ours, theirs, 1, 1, bench.repeats, bench.sync)
            fig["generate_tokens_per_s_top_p"] = 16 * new / ours_s
            fig["hf_generate_tokens_per_s"] = 16 * new / hf_s
            fig["ratio_generate_vs_hf"] = ratio  # their seconds / ours
            rows.append((label, fig["generate_tokens_per_s_top_p"], "new tokens/s"))
            rows.append(("Hugging Face generate top-p (KV cache)", fig["hf_generate_tokens_per_s"], "new tokens/s"))
            rows.append(("objbench / Hugging Face, generation", fig["ratio_generate_vs_hf"], "x"))
            continue
        fig[f"generate_tokens_per_s_{name}"] = bench.generate_tokens_per_s(strategy, native_bf16)
        rows.append((label, fig[f"generate_tokens_per_s_{name}"], "new tokens/s"))
    fig["generate_tokens_per_s"] = fig["generate_tokens_per_s_top_p"]
    fig["generate_tokens_per_s_top_p_no_cache"] = no_cache_generate_tokens_per_s(bench, native_bf16)
    rows.append(("generate top_p without the KV cache", fig["generate_tokens_per_s_top_p_no_cache"], "new tokens/s"))
    fig["evaluation_seconds"] = evaluation_seconds(bench, native_bf16)
    rows.append(("evaluation: teacher-forced metrics, 64 blocks", fig["evaluation_seconds"]["teacher_forced"], "s"))
    rows.append(("evaluation: 3 decodings x 64 prompts, 32+96", fig["evaluation_seconds"]["generation"], "s"))
    if args.device == "cuda":
        n_params = GPT(shape.gpt_config()).num_params(non_embedding=False)
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        if peak:
            flops = shape.flops_per_token(n_params) / peak
            fig["mfu"] = fig["train_tokens_per_s"] * flops
            rows.append((f"MFU, Trainer bf16 (peak {peak / 1e12:.0f} TFLOP/s)", 100 * fig["mfu"], "%"))
            if "trainer_tokens_per_s_bf16_compiled" in fig:
                fig["mfu_compiled"] = fig["trainer_tokens_per_s_bf16_compiled"] * flops
                rows.append(("MFU, Trainer bf16, compiled", 100 * fig["mfu_compiled"], "%"))
    if args.objectives:
        costs, skipped = objective_costs(bench, native_bf16, args.cost_pairs, args.cost_steps)
        fig["objective_step_cost_vs_mle"] = costs
        if skipped:
            fig["objective_step_cost_skipped"] = skipped
        for name, ratio in costs.items():
            rows.append((f"step cost {name} / mle", ratio, "x"))
        big = Bench(
            Shape(**{**PRESETS[args.preset], "vocab_size": 32768}), args.device, args.warmup, args.steps, args.repeats
        )
        nce = objectives_at_full_work()["nce"]  # as configs/objective/nce.yaml builds it
        mle, nce = big.train_step(MLE(), native_bf16), big.train_step(nce, native_bf16)
        fig["nce_vs_mle_at_v32768"] = paired(mle, nce, big.warmup, big.steps, big.repeats, big.sync)[2]
        rows.append(("step cost nce / mle at vocab 32768", fig["nce_vs_mle_at_v32768"], "x"))
    host_speed("end")
    width = max(len(r[0]) for r in rows)
    print(f"\nobjbench perf: {fig['device']}, preset {args.preset} {PRESETS[args.preset]}, torch {torch.__version__}")
    for label, value, unit in rows:
        print(f"  {label:<{width}}  {value:12,.2f}  {unit}")
    for name, reason in fig.get("objective_step_cost_skipped", {}).items():
        print(f"  step cost {name}: not timed at this preset: {reason}")
    if args.json:
        atomic_write_json(args.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
