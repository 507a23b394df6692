"""A suite job as ``make bench`` runs it, timed and profiled (``perf.py --job``, ``perf.py --job --profile``).

``make bench`` runs its jobs in joblib's worker processes, two at a time, one thread each. A worker imports
everything, and computes the test split's exact conditionals and the train split's n-gram index, for its first
job only; so a job is timed here in a warm process: the first of ``runs`` jobs warms it, the others are timed.

The profile splits one warm job two ways. By phase, with Python's cProfile (the cumulative time of the functions
that start each phase: Lightning's training-step loop, its validation loop, the checkpoints, the evaluation's
teacher-forced pass, decoding and generation metrics); by operation, with ``torch.profiler`` over 30 training
steps and over the evaluation, each op's own time put in the first of these that holds: inside the attention's
autograd function or an SDPA kernel, inside the chunked LM head (forward or backward), inside the optimiser's
step, a matrix product, anything else (elementwise ops, norms, casts). What no op accounts for is Python's: the
Lightning loop, the objective's glue, logging.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch

from benchmarks.runner import app, config, job

PROFILED_STEPS = (100, 130)  # training steps [start, end) under torch.profiler: after a validation, none inside

# phase name -> (a path suffix of the source file, the function): its cumulative time in cProfile
PHASES = {
    "training steps (forward, loss, backward, optimiser)": (
        "lightning/pytorch/loops/training_epoch_loop.py",
        "advance",
    ),
    "validation (3 x 8 batches)": ("lightning/pytorch/loops/evaluation_loop.py", "run"),
    "checkpoints": ("lit_modules/callbacks.py", "save_checkpoint"),
    "evaluation: test split (tf/, gt/, temp/, ts/)": ("benchmarks/evaluation/evaluate.py", "test_split_metrics"),
    "evaluation: shifted sources (ood/)": ("benchmarks/evaluation/evaluate.py", "shifted_metrics"),
    "evaluation: canaries (mem/)": ("benchmarks/evaluation/memorisation.py", "canary_metrics"),
    "evaluation: 3 decodings x 64 prompts x 96 tokens (gen/)": ("benchmarks/evaluation/generation.py", "generate_all"),
    "evaluation: the sampled frontier (frontier/)": ("benchmarks/evaluation/frontier.py", "frontier_metrics"),
    "results, samples, TensorBoard": ("benchmarks/runner/results.py", "write_run_files"),
}
EVALUATION = ("benchmarks/runner/job.py", "evaluate_and_write")  # every evaluation phase above and the files'

STEP_PARTS = {  # inside the training steps
    "forward + loss": ("lit_modules/system.py", "training_step"),
    "backward": ("torch/_tensor.py", "backward"),
    "next batch": ("lightning/pytorch/loops/fetchers.py", "__next__"),
}
OPTIMISER_STEP = ("torch/optim/adam.py", "step")  # Lightning runs the closure inside it
CLOSURE = ("lightning/pytorch/loops/optimization/automatic.py", "closure")
OP_CATEGORIES = ("attention", "LM head + loss", "matrix products", "optimiser", "elementwise, norms, casts")


@dataclass
class JobTime:
    wall_s: float
    train_s: float
    eval_s: float

    @property
    def eval_share(self) -> float:
        return self.eval_s / self.wall_s


def job_argv(objective: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [f"objective={objective}", "suite=default", "seed=1", f"hydra.run.dir={run_dir}", *overrides]


def run_one(objective: str, overrides: list[str], callbacks: list[pl.Callback] | None = None) -> JobTime:
    """One suite job (seed 1) in a fresh directory, as run.py runs it; its wall, train and eval seconds."""
    import json

    with tempfile.TemporaryDirectory(prefix="objbench-job-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        run_dir = Path(tmp) / "run"  # the job's own summary is not printed
        t0 = time.perf_counter()
        app.launch(
            job_argv(objective, run_dir, overrides),
            "run",
            prepare=config.plan,
            task=lambda plan, directory: job.run(plan, directory, callbacks or ()),
        )
        wall = time.perf_counter() - t0
        timing = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["timing"]
    return JobTime(wall, timing["train_s"], timing["eval_s"])


def time_jobs(objective: str, runs: int, overrides: list[str]) -> list[JobTime]:
    """``runs`` jobs one after another in this process; the first warms it and is left out."""
    times = [run_one(objective, overrides) for _ in range(runs)]
    return times[1:] if len(times) > 1 else times


def median_job(times: list[JobTime]) -> JobTime:
    return JobTime(*(statistics.median(getattr(t, f) for t in times) for f in ("wall_s", "train_s", "eval_s")))


# ---- the profile ----
def cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    """Cumulative seconds of the function ``where`` (path suffix, name), summed over its entries."""
    suffix, name = where
    total = 0.0
    for (path, _, function), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and path.replace("\\", "/").endswith(suffix):
            total = max(total, cum)  # a recursive or re-entered function: its outermost entry
    return total


def op_category(event) -> str:
    """The category of a profiler event: the first of OP_CATEGORIES that holds (module docstring)."""
    names = []
    node = event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    if any("PairedFlashAttention" in n or "scaled_dot_product" in n for n in names):
        return "attention"
    if any("_ChunkedHead" in n for n in names):
        return "LM head + loss"
    # Lightning calls the step's closure (forward, backward) inside Optimizer.step: only the update's own ops
    if event.name.startswith(("Optimizer.step", "aten::_fused_adamw", "aten::_foreach", "aten::linalg_vector_norm")):
        return "optimiser"
    if event.name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"):
        return "matrix products"
    return "elementwise, norms, casts"


def op_shares(prof) -> dict[str, float]:
    """Seconds of op self time per category over a profiled window."""
    seconds = dict.fromkeys(OP_CATEGORIES, 0.0)
    for event in prof.events():  # self times: every microsecond counted once
        seconds[op_category(event)] += event.self_cpu_time_total / 1e6
    return seconds


class StepWindow(pl.Callback):
    """torch.profiler over training steps [start, end), or over all but the first of a shorter run's."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.prof, self.wall = None, 0.0

    def on_train_start(self, trainer, *args) -> None:
        if trainer.max_steps < self.end:
            self.start, self.end = 1, trainer.max_steps

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.start:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.start()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.prof is not None and trainer.global_step == self.end and not self.wall:
            self.wall = time.perf_counter() - self.t0
            self.prof.stop()


def profile_job(objective: str, overrides: list[str]) -> str:
    """A warm job's phases (cProfile), then another's ops in 30 training steps and in the evaluation
    (torch.profiler): Markdown tables."""
    run_one(objective, overrides)  # warm the process
    profiler = cProfile.Profile()
    profiler.enable()
    timed = run_one(objective, overrides)
    profiler.disable()
    stats = pstats.Stats(profiler)
    lines = [
        f"### A suite job ({objective}, seed 1), one thread, warm process: {timed.wall_s:.1f} s under cProfile",
        "",
    ]
    lines += ["| phase | s | share of the job |", "|---|---|---|"]
    accounted = 0.0
    for name, where in PHASES.items():
        seconds = cumulative(stats, where)
        accounted += seconds
        lines.append(f"| {name} | {seconds:.2f} | {seconds / timed.wall_s:.1%} |")
    rest = timed.wall_s - accounted
    lines.append(
        f"| the rest (compose, build, data, Trainer set-up, logging) | {rest:.2f} | {rest / timed.wall_s:.1%} |"
    )
    evaluation = cumulative(stats, EVALUATION)
    lines.append(f"| *the evaluation, all of it* | {evaluation:.2f} | {evaluation / timed.wall_s:.1%} |")
    steps = cumulative(stats, PHASES["training steps (forward, loss, backward, optimiser)"])
    lines += ["", "| inside the training steps | s | share of the steps |", "|---|---|---|"]
    parts = {name: cumulative(stats, where) for name, where in STEP_PARTS.items()}
    parts["optimiser step (AdamW), clipping"] = cumulative(stats, OPTIMISER_STEP) - cumulative(stats, CLOSURE)
    parts["Lightning's loop, hooks, logging"] = steps - sum(parts.values())
    for name, seconds in parts.items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / steps:.1%} |")
    lines += ["", *op_tables(objective, overrides)]
    return "\n".join(lines)


def op_tables(objective: str, overrides: list[str]) -> list[str]:
    window = StepWindow(*PROFILED_STEPS)
    evaluation: dict = {}
    original = job.evaluate_run

    def profiled_evaluation(*args, **kwargs):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            evaluation["wall"] = time.perf_counter() - t0
        evaluation["prof"] = prof
        return out

    job.evaluate_run = profiled_evaluation
    try:
        run_one(objective, overrides, [window])
    finally:
        job.evaluate_run = original
    n = window.end - window.start
    lines = []
    for title, prof, wall, per in (
        (f"{n} training steps", window.prof, window.wall, n),
        ("the evaluation", evaluation["prof"], evaluation["wall"], 1),
    ):
        seconds = op_shares(prof)
        unit = "ms a step" if per > 1 else "s"
        scale = 1000 / per if per > 1 else 1.0
        lines += [f"| ops of {title} (torch.profiler) | {unit} | share |", "|---|---|---|"]
        for name, s in seconds.items():
            lines.append(f"| {name} | {s * scale:.2f} | {s / wall:.1%} |")
        python = wall - sum(seconds.values())
        lines += [f"| Python (Lightning's loop, glue, logging) | {python * scale:.2f} | {python / wall:.1%} |", ""]
    return lines
