"""The performance benchmark's figures: training steps (raw loop, Lightning Trainer, compiled), every objective
against MLE, generation, evaluation; Hugging Face and nanoGPT beside them. Every figure is the median of timed
windows after warm-up steps; every ratio (against Hugging Face, against MLE) the median of ratios of adjacent
windows of the two, which alternate (``benchmarks/performance/harness.py``)."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

from benchmarks.performance.harness import (
    GPU_PEAK_BF16,
    PRESETS,
    Bench,
    Shape,
    evaluation_seconds,
    matmul_tflops,
    no_cache_generate_tokens_per_s,
    paired,
    profile_train_step,
    timed,
)
from benchmarks.performance.objective_costs import nce_cost_at_large_vocab, objective_costs
from benchmarks.performance.references import hf_generate_call, nanogpt_train_step, reference_windows
from lit_modules.core.files import atomic_write_json
from lit_modules.core.kernels import cpu_supports_bf16, keep_freed_memory
from lit_modules.core.model import GPT


class Figures:
    """The figures of one perf run: a dict for --json and the printed table's rows (``live``: each row also
    printed as it is measured)."""

    def __init__(self, live: bool = False, **header) -> None:
        self.fig: dict[str, float | str | dict] = dict(header)
        self.rows: list[tuple[str, float, str]] = []
        self.live = live

    def add(self, key: str | None, value: float, label: str, unit: str) -> None:
        if key is not None:
            self.fig[key] = value
        self.rows.append((label, value, unit))
        if self.live:
            print(f"  {label}: {value:,.2f} {unit}", flush=True)

    def print(self, title: str) -> None:
        width = max(len(r[0]) for r in self.rows)
        print(f"\n{title}")
        for label, value, unit in self.rows:
            print(f"  {label:<{width}}  {value:12,.2f}  {unit}")
        for name, reason in self.fig.get("objective_step_cost_skipped", {}).items():
            print(f"  step cost {name}: not timed at this preset: {reason}")


def machine_speed(figures: Figures, bench: Bench, dtypes: list[torch.dtype], when: str) -> None:
    """One square matmul per dtype: how fast the host was at the start and at the end of the run."""
    for dtype in dtypes:
        tag = "bf16" if dtype == torch.bfloat16 else "fp32"
        tflops = matmul_tflops(bench.device, dtype, bench.sync)
        figures.fig.setdefault("matmul_tflops", {}).setdefault(tag, {})[when] = tflops
        figures.add(None, tflops, f"the machine: one square matmul, {tag}, {when} of the run", "TFLOP/s")


def training_figures(figures: Figures, args: argparse.Namespace, bench: Bench, native_bf16: bool, hf: bool) -> None:
    """Training tokens/s per precision: objbench's raw loop (beside nanoGPT's, given), the Lightning Trainer
    (beside the references' windows at the default precision), compiled with --compile."""
    from objectives.mle import MLE

    tokens = bench.shape.batch * bench.shape.seq
    default_tag = "bf16" if native_bf16 else "fp32"
    for bf16 in [False, True] if native_bf16 else [False]:
        tag = "bf16" if bf16 else "fp32"
        if args.nanogpt is not None:  # nanoGPT's windows alternate with objbench's raw loop
            ours, theirs = bench.train_step(MLE(), bf16), nanogpt_train_step(bench, args.nanogpt, bf16)
            ours_s, theirs_s, ratio = paired(ours, theirs, bench.warmup, bench.steps, bench.repeats, bench.sync)
            figures.add(f"raw_train_tokens_per_s_{tag}", tokens / ours_s, f"train step, raw loop, {tag}", "tokens/s")
            figures.add(
                f"nanogpt_train_tokens_per_s_{tag}", tokens / theirs_s, f"nanoGPT train step, {tag}", "tokens/s"
            )
            figures.add(f"ratio_raw_train_vs_nanogpt_{tag}", ratio, f"objbench (raw loop) / nanoGPT, {tag}", "x")
        else:
            raw = tokens / bench.train_step_time(MLE(), bf16)
            figures.add(f"raw_train_tokens_per_s_{tag}", raw, f"train step, raw loop, {tag}", "tokens/s")
        if args.compile:
            compiled = tokens / bench.train_step_time(MLE(), bf16, True)
            figures.add(
                f"raw_train_tokens_per_s_{tag}_compiled", compiled, f"train step, raw loop, {tag}, compiled", "tokens/s"
            )
        precision = "bf16-mixed" if bf16 else "32-true"
        refs, workers = reference_windows(args, bench, bf16, hf) if tag == default_tag else ([], [])
        raw_step = bench.train_step(MLE(), bf16)
        for _ in range(bench.warmup):
            raw_step()
        raw_window = lambda: timed(raw_step, 0, bench.steps, 1, bench.sync)  # noqa: B023, E731
        # the raw loop's windows and the references' alternate with the Trainer's
        between = lambda: {"raw": raw_window(), **{name: window() for name, _, _, window in refs}}  # noqa: B023
        try:
            windows, between_windows = bench.trainer_windows(precision, between)
        finally:
            for shipped in workers:
                shipped.close()
        overhead = statistics.median(w / b["raw"] for w, b in zip(windows, between_windows, strict=True))
        figures.add(
            f"trainer_over_raw_{tag}", overhead, f"Trainer / raw loop, the same step, {tag} (paired windows)", "x"
        )
        trainer = tokens / statistics.median(windows)
        figures.add(f"trainer_tokens_per_s_{tag}", trainer, f"train step, Lightning Trainer, {tag}", "tokens/s")
        if args.compile:
            compiled = tokens / statistics.median(bench.trainer_windows(precision, compile_model=True)[0])
            label = f"train step, Lightning Trainer, {tag}, compiled"
            figures.add(f"trainer_tokens_per_s_{tag}_compiled", compiled, label, "tokens/s")
        for name, label, ref_tag, _ in refs:
            seconds = [b[name] for b in between_windows]
            ratio = statistics.median(r / w for w, r in zip(windows, seconds, strict=True))
            figures.add(
                f"{name}_train_tokens_per_s",
                tokens / statistics.median(seconds),
                f"{label} train step, {ref_tag}",
                "tokens/s",
            )
            figures.add(f"ratio_train_vs_{name}", ratio, f"objbench (Trainer, {tag}) / {label}, {ref_tag}", "x")
    figures.fig["train_tokens_per_s"] = figures.fig[f"trainer_tokens_per_s_{default_tag}"]


def generation_figures(figures: Figures, bench: Bench, bf16: bool, hf: bool) -> None:
    """Decoding tokens/s per strategy (top-p beside Hugging Face's generate), without the KV cache, and the
    run's evaluation time."""
    new = min(128, bench.shape.context - 32)
    for name, strategy in {
        "greedy": {"strategy": "greedy"},
        "top_p": {"strategy": "sample", "top_p": 0.9},
        "beam": {"strategy": "beam", "beam_size": 4},
        "contrastive": {"strategy": "contrastive", "top_k": 8},
    }.items():
        label = f"generate {name} (KV cache, batch 16, 32+{new})"
        if name == "top_p" and hf:  # Hugging Face generate alternates with ours
            ours, theirs = bench.generate_call(strategy, bf16), hf_generate_call(bench, bf16)
            ours_s, hf_s, ratio = paired(ours, theirs, 1, 1, bench.repeats, bench.sync)
            figures.add("generate_tokens_per_s_top_p", 16 * new / ours_s, label, "new tokens/s")
            hf_label = "Hugging Face generate top-p (KV cache)"
            figures.add("hf_generate_tokens_per_s", 16 * new / hf_s, hf_label, "new tokens/s")
            figures.add("ratio_generate_vs_hf", ratio, "objbench / Hugging Face, generation", "x")
            continue
        figures.add(f"generate_tokens_per_s_{name}", bench.generate_tokens_per_s(strategy, bf16), label, "new tokens/s")
    figures.fig["generate_tokens_per_s"] = figures.fig["generate_tokens_per_s_top_p"]
    no_cache = no_cache_generate_tokens_per_s(bench, bf16)
    figures.add("generate_tokens_per_s_top_p_no_cache", no_cache, "generate top_p without the KV cache", "new tokens/s")
    seconds = evaluation_seconds(bench, bf16)
    figures.fig["evaluation_seconds"] = seconds
    figures.add(None, seconds["teacher_forced"], "evaluation: teacher-forced metrics, 64 blocks", "s")
    figures.add(None, seconds["generation"], "evaluation: 3 decodings x 64 prompts, 32+96", "s")


def peak_seconds_per_token(shape: Shape) -> tuple[float, float] | None:
    """This GPU's dense bf16 peak (FLOP/s) and the seconds of it that one training token's FLOPs take (None: an
    unknown GPU)."""
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in torch.cuda.get_device_name()), None)
    if peak is None:
        return None
    return peak, shape.flops_per_token(GPT(shape.gpt_config()).num_params(non_embedding=False)) / peak


def mfu_figures(figures: Figures, shape: Shape) -> None:
    """Model FLOPs utilisation of the Trainer's bf16 step on a known GPU."""
    known = peak_seconds_per_token(shape)
    if known is None:
        return
    peak, flops = known
    for key, tokens_key, label in (
        ("mfu", "train_tokens_per_s", f"MFU, Trainer bf16 (peak {peak / 1e12:.0f} TFLOP/s)"),
        ("mfu_compiled", "trainer_tokens_per_s_bf16_compiled", "MFU, Trainer bf16, compiled"),
    ):
        if tokens_key in figures.fig:
            figures.fig[key] = figures.fig[tokens_key] * flops
            figures.add(None, 100 * figures.fig[key], label, "%")


def page_fault_figures(figures: Figures, faults: dict[str, float]) -> None:
    """The page faults a training step of MLE and of the objective with the most, beside the step costs: both
    near 0 when the process keeps its freed buffers (``keep_freed_memory``); thousands mean that the ratios
    above include the allocator's page faults (every objective's, per objective in the JSON)."""
    if not faults:
        return
    figures.fig["objective_page_faults_per_step"] = faults
    most = max((name for name in faults if name != "mle"), key=faults.__getitem__, default="mle")
    figures.add(None, faults["mle"], "page faults a training step, mle", "")
    if most != "mle":
        figures.add(None, faults[most], f"page faults a training step, the most: {most}", "")


def objective_figures(figures: Figures, args: argparse.Namespace, bench: Bench, bf16: bool) -> None:
    """Every objective's step time over MLE's, and NCE's at a large vocabulary."""
    costs, skipped, faults = objective_costs(bench, bf16, args.cost_pairs, args.cost_steps, args.only)
    figures.fig["objective_step_cost_vs_mle"] = costs
    if skipped:
        figures.fig["objective_step_cost_skipped"] = skipped
    for name, ratio in costs.items():
        figures.add(None, ratio, f"step cost {name} / mle", "x")
    page_fault_figures(figures, faults)
    # per trained token: MLE's Trainer figure over the objective's step cost (an objective's extra forward
    # passes count as time, not as model FLOPs)
    figures.fig["objective_tokens_per_s"] = {n: figures.fig["train_tokens_per_s"] / r for n, r in costs.items()}
    if "mfu" in figures.fig:
        figures.fig["objective_mfu"] = {name: figures.fig["mfu"] / ratio for name, ratio in costs.items()}
        for name, mfu in figures.fig["objective_mfu"].items():
            figures.add(None, 100 * mfu, f"MFU {name}, Trainer bf16, per trained token", "%")
    ratio = nce_cost_at_large_vocab(PRESETS[args.preset], args.device, bf16, args.warmup, args.steps, args.repeats)
    figures.add("nce_vs_mle_at_v32768", ratio, "step cost nce / mle at vocab 32768", "x")


def measure(args: argparse.Namespace) -> Figures:
    """Every figure the arguments ask for (perf.py's options), printed, and written to ``--json`` when given."""
    keep_freed_memory()  # as a run: the same allocator for objbench and the in-process Hugging Face / nanoGPT
    if args.device == "cuda":
        torch.set_float32_matmul_precision("high")  # as a run: TF32 for fp32 matmuls on GPUs
    shape = Shape(**PRESETS[args.preset])
    bench = Bench(shape, args.device, args.warmup, args.steps, args.repeats)
    native_bf16 = args.device == "cuda" or cpu_supports_bf16()
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    figures = Figures(device=device, shape=PRESETS[args.preset], torch=torch.__version__)
    # a CPU's bf16 (AMX) and fp32 speeds swing apart; a GPU's bf16 is the one its MFU is against
    dtypes = ([torch.bfloat16] if native_bf16 else []) + ([torch.float32] if args.device == "cpu" else [])
    machine_speed(figures, bench, dtypes, "start")
    hf = not args.skip_hf and importlib.util.find_spec("transformers") is not None
    if not args.skip_hf and not hf:
        print("transformers is not installed (pip install -e '.[perf]'): Hugging Face comparison skipped")
    training_figures(figures, args, bench, native_bf16, hf)
    generation_figures(figures, bench, native_bf16, hf)
    if args.device == "cuda":
        mfu_figures(figures, shape)
    if args.objectives:
        objective_figures(figures, args, bench, native_bf16)
    machine_speed(figures, bench, dtypes, "end")
    figures.print(f"objbench perf: {device}, preset {args.preset} {PRESETS[args.preset]}, torch {torch.__version__}")
    if args.json:
        atomic_write_json(args.json, figures.fig)
    return figures


def profile(args: argparse.Namespace) -> str:
    """torch.profiler's table of the raw-loop MLE training step at the preset."""
    keep_freed_memory()
    bench = Bench(Shape(**PRESETS[args.preset]), args.device, args.warmup, args.steps, args.repeats)
    return profile_train_step(bench, args.device == "cuda" or cpu_supports_bf16(), args.compile)


def job_figures(args: argparse.Namespace) -> None:
    """``--job``: a suite job's wall, training and evaluation seconds in a warm process (the median of
    ``--job-runs`` − 1 jobs), the machine's matmul speed beside them; with ``--profile``, where its time goes.
    Runs on ``--threads`` threads, and gives the process its thread count back after."""
    if args.job_runs < 1:
        raise SystemExit(f"perf.py: --job-runs {args.job_runs}: give at least 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _job_figures(args)
    finally:
        torch.set_num_threads(threads)


def _job_figures(args: argparse.Namespace) -> None:
    from benchmarks.performance.suite_job import median_job, profile_job, time_jobs
    from benchmarks.runner.cli import quiet_lightning

    quiet_lightning()
    overrides = ["trainer.enable_progress_bar=false", *args.job_override]
    if args.profile:
        print(profile_job(args.job_objective, overrides))
        return
    bench = Bench(Shape(**PRESETS["tiny"]), "cpu", args.warmup, args.steps, args.repeats)
    figures = Figures(device="cpu", threads=args.threads, objective=args.job_objective, torch=torch.__version__)
    machine_speed(figures, bench, [torch.bfloat16] if cpu_supports_bf16() else [torch.float32], "start")
    times = time_jobs(args.job_objective, args.job_runs, overrides)
    job = median_job(times)
    figures.add("job_wall_s", job.wall_s, f"a suite job ({args.job_objective}), wall, warm process", "s")
    figures.add("job_train_s", job.train_s, "  of which training (steps, validation, checkpoints)", "s")
    figures.add("job_eval_s", job.eval_s, "  of which evaluation", "s")
    figures.add("job_eval_share", 100 * job.eval_share, "  evaluation's share of the wall", "%")
    figures.fig["job_walls_s"] = [t.wall_s for t in times]
    figures.print(f"objbench perf --job: {args.threads} thread(s), torch {torch.__version__}")
    if args.json:
        atomic_write_json(args.json, figures.fig)


def pretrained_fine_tuning(figures: Figures, bench: Bench) -> None:
    """A random GPT2LMHeadModel of the bench's shape saved by transformers (no network), imported as
    ``init_from=hf:DIR`` does, then one MLE fine-tuning step of it (bf16, eager): the two figures timed. Skipped
    (said) where transformers is not installed."""
    import tempfile

    if importlib.util.find_spec("transformers") is None:
        print("pretrained GPT-2 fine-tuning step: skipped (transformers is not installed)", flush=True)
        return
    from transformers import GPT2Config, GPT2LMHeadModel

    from lit_modules.core.start_weights import read_start_weights
    from objectives.mle import MLE

    shape = bench.shape
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        config = GPT2Config(
            vocab_size=shape.vocab_size, n_positions=shape.context, n_embd=shape.d_model, n_layer=shape.n_layer,
            n_head=shape.n_head,
        )  # fmt: skip
        GPT2LMHeadModel(config).save_pretrained(directory)
        start = read_start_weights(f"hf:{directory}")
    figures.add("hf_save_and_import_s", time.perf_counter() - t0, "random GPT-2 saved by transformers, imported", "s")
    seconds = timed(bench.train_step(MLE(), True, start=start), bench.warmup, bench.steps, bench.repeats, bench.sync)
    figures.add("hf_fine_tuning_step_s", seconds, "one MLE fine-tuning step of the imported GPT-2, bf16, eager", "s")


def fine_tuning_objective(shape: Shape) -> tuple[str, torch.nn.Module]:
    """The first fine-tuning objective (one that holds a frozen reference) whose sequences fit the shape's rows,
    at its full work: DPO (preference) at GPT-2's shape."""
    from benchmarks.performance.objective_costs import objectives_at_full_work
    from objectives.base import FineTuning, KnobError

    for name, objective in sorted(objectives_at_full_work().items(), key=lambda item: item[0] != "preference"):
        if isinstance(objective, FineTuning):
            try:
                objective.check_fits(shape.objective_length)
            except KnobError:
                continue
            return name, objective
    raise SystemExit(f"perf.py --gpu-check: no fine-tuning objective fits the preset's rows ({shape.seq} tokens)")


def gpu_check(args: argparse.Namespace) -> Figures:
    """``--gpu-check``: what a short GPU loan must show, each figure printed as it is measured and all of them
    in ``--json``: the CUDA tests, GPT-2 124M MLE through the Lightning Trainer compiled (tokens/s, MFU), every
    objective's step cost against MLE's, and one fine-tuning step (DPO with its frozen reference)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    from xml.etree import ElementTree

    from benchmarks.performance.objective_costs import objective_costs

    keep_freed_memory()
    if args.device == "cuda":
        torch.set_float32_matmul_precision("high")
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    figures = Figures(live=True, device=device, shape=PRESETS[args.preset], torch=torch.__version__)
    print(f"objbench gpu-check: {device}, preset {args.preset}, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "cuda.xml"
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}", "tests/test_cuda.py"],
            capture_output=True,
            text=True,
        )
        suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    figures.fig["cuda_tests"] = {"returncode": tests.returncode, **counts}
    label = f"CUDA tests passed (of {counts['tests']}; {counts['skipped']} skipped, {counts['failures']} failed)"
    figures.add(None, counts["passed"], label, "tests")
    if tests.returncode not in (0, 5):
        print(tests.stdout[-3000:], flush=True)
    figures.add("cuda_tests_s", time.perf_counter() - t0, "CUDA tests, wall", "s")
    shape = Shape(**PRESETS[args.preset])
    bench = Bench(shape, args.device, args.warmup, args.steps, args.repeats)
    t0 = time.perf_counter()
    windows, _ = bench.trainer_windows("bf16-mixed", compile_model=True)
    tokens = shape.batch * shape.seq
    compiled = tokens / statistics.median(windows)
    figures.add("trainer_tokens_per_s_bf16_compiled", compiled, "MLE through the Trainer, bf16, compiled", "tokens/s")
    figures.add("trainer_compiled_wall_s", time.perf_counter() - t0, "  its wall, the compilation included", "s")
    known = peak_seconds_per_token(shape) if args.device == "cuda" else None
    if known is not None:
        figures.add("mfu_compiled", 100 * compiled * known[1], "MFU, Trainer bf16, compiled (goal: 45%)", "%")
    costs, skipped, _ = objective_costs(bench, True, args.cost_pairs, args.cost_steps, args.only)  # faults: CPU only
    figures.fig["objective_step_cost_vs_mle"], figures.fig["objective_step_cost_skipped"] = costs, skipped
    for name, ratio in costs.items():
        figures.add(None, ratio, f"step cost {name} / mle (eager)", "x")
    name, tuner = fine_tuning_objective(bench.shape)
    seconds = timed(bench.train_step(tuner, True), args.warmup, args.steps, args.repeats, bench.sync)
    figures.fig["fine_tuning_objective"] = name
    figures.add("fine_tuning_step_s", seconds, f"one fine-tuning step: {name}, its frozen reference, eager", "s")
    pretrained_fine_tuning(figures, bench)
    figures.print(f"objbench gpu-check: {device}, preset {args.preset}")
    if args.json:
        atomic_write_json(args.json, figures.fig)
    return figures
