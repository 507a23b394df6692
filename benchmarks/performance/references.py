"""The reference implementations the performance benchmark times beside objbench, at the same shape and
precision: Hugging Face GPT-2 (transformers, the ``perf`` extra) and nanoGPT (a local clone's model.py), in this
process and as shipped, in a worker process of their own (``ShippedStep``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from benchmarks.performance.harness import PRESETS, Bench, Shape, timed


def reference_windows(
    args: argparse.Namespace, bench: Bench, bf16: bool, hf: bool
) -> tuple[list[tuple[str, str, str, Callable[[], float]]], list[ShippedStep]]:
    """What alternates with the Trainer's windows at the default precision, as (figure name, label,
    precision, one window's seconds per step): Hugging Face GPT-2 at the Trainer's precision and nanoGPT's
    plain fp32 step (docs/performance.md), each in this process (the same allocator and fused AdamW:
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
        cmd = [sys.executable, "-m", "benchmarks.performance.references", "--worker", library, "--preset", args.preset]
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
        raise SystemExit(f"perf: the {self.library} worker exited with code {self.proc.wait()}; its error is above")

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


def worker_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """A worker's command line, as ``ShippedStep`` writes it."""
    parser = argparse.ArgumentParser(description="objbench perf: a reference's training step as shipped")
    parser.add_argument("--worker", choices=["hf", "nanogpt"], required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--nanogpt", type=Path)
    return parser.parse_args(argv)


if __name__ == "__main__":  # a ShippedStep's worker process: the library as shipped, no objbench allocator setting
    sys.exit(worker(worker_arguments()))
