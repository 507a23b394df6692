"""benchmarks/perf.py end to end at a micro shape: the figures it promises exist and are positive, nanoGPT
is timed from a user-given model.py, bad paths are refused. No speed is asserted (speed goals live in
perf.py's output, never in timed tests)."""

import json
import mmap

import pytest

from benchmarks import perf
from benchmarks.performance.objective_costs import objectives_at_full_work
from benchmarks.runner.config import available
from lit_modules.core.kernels import page_faults_per_step

# a stand-in with nanoGPT's interface: GPTConfig(block_size, vocab_size, n_layer, n_head, n_embd, dropout),
# GPT(config)(idx, targets) -> (logits, loss)
NANOGPT_STANDIN = """
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

@dataclass
class GPTConfig:
    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)

    def forward(self, idx, targets):
        logits = self.lm_head(self.wte(idx))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        print("using fused AdamW: False")  # nanoGPT prints here too: not on a worker's answer channel
        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)
"""


@pytest.mark.slow
def test_perf_writes_every_promised_figure(tmp_path, capsys):
    model_py = tmp_path / "model.py"
    model_py.write_text(NANOGPT_STANDIN)
    out = tmp_path / "perf.json"
    args = ["--preset", "micro", "--repeats", "1", "--steps", "1", "--warmup", "1", "--skip-hf"]
    costs = ["--objectives", "--cost-pairs", "1", "--cost-steps", "1"]
    assert perf.main([*args, *costs, "--nanogpt", str(model_py), "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    for key in (
        "train_tokens_per_s",
        "generate_tokens_per_s",
        "raw_train_tokens_per_s_fp32",
        "trainer_over_raw_fp32",  # the Trainer's windows against the raw loop's, alternating
        "nanogpt_train_tokens_per_s_fp32",
        "ratio_raw_train_vs_nanogpt_fp32",
        "ratio_train_vs_nanogpt_fp32",
        "nanogpt_fp32_shipped_train_tokens_per_s",  # nanoGPT in a process of its own, its own optimiser
        "ratio_train_vs_nanogpt_fp32_shipped",
        "generate_tokens_per_s_greedy",
        "generate_tokens_per_s_beam",
        "generate_tokens_per_s_top_p_no_cache",
    ):
        assert fig[key] > 0, key
    assert set(fig["evaluation_seconds"]) == {"teacher_forced", "generation"}
    assert all(seconds > 0 for seconds in fig["evaluation_seconds"].values())
    assert fig["shape"] == perf.PRESETS["micro"]
    # the machine's matmul speed at both ends of the run, the context of every figure (fp32 always on a CPU)
    assert "fp32" in fig["matmul_tflops"]
    for speeds in fig["matmul_tflops"].values():
        assert set(speeds) == {"start", "end"} and min(speeds.values()) > 0
    # micro's 33-token rows cannot hold the preference yaml's 32 + 32 tokens: the other objectives are
    # timed, and the table says which one was left out and why (as run.py refuses it), not a traceback
    skipped = fig["objective_step_cost_skipped"]
    assert "prefix_len + cont_len=64" in skipped["preference"]
    costs = fig["objective_step_cost_vs_mle"]
    assert "mle" in costs and not set(skipped) & set(costs)
    assert sorted([*costs, *skipped]) == sorted(objectives_at_full_work())  # every objective: timed, or why not
    assert all(0 < ratio < 100 for ratio in costs.values()), costs
    assert fig["objective_tokens_per_s"] == pytest.approx({n: fig["train_tokens_per_s"] / r for n, r in costs.items()})
    faults = fig["objective_page_faults_per_step"]  # beside the costs: whether the steps page-faulted
    assert set(faults) == set(costs) and all(n >= 0 for n in faults.values())
    assert "objective_mfu" not in fig  # MFU only against a known GPU's peak
    assert "step cost preference: not timed at this preset" in capsys.readouterr().out


def test_page_faults_are_counted_per_step():
    """A step that maps and touches 64 fresh pages faults at least 64 times a call; one that maps nothing far
    fewer."""
    pytest.importorskip("resource")  # Unix: the OS's count of the process's page faults
    pages = 64

    def touch_fresh_pages():
        with mmap.mmap(-1, pages * mmap.PAGESIZE) as fresh:
            for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
                fresh[offset] = 1

    assert page_faults_per_step(touch_fresh_pages, 3) >= pages
    assert page_faults_per_step(lambda: None, 3) < pages


def test_perf_refuses_a_missing_nanogpt_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        perf.main(["--preset", "micro", "--nanogpt", str(tmp_path / "nope.py")])
    assert exit_info.value.code != 0
    assert "nope.py" in capsys.readouterr().err


def test_perf_refuses_an_unknown_objective_in_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        perf.main(["--preset", "micro", "--objectives", "--only", "mle,nope"])
    assert exit_info.value.code == 2
    assert "--only nope: no such objective" in capsys.readouterr().err


def test_perf_times_only_the_objectives_named():
    assert sorted(objectives_at_full_work(["gem", "mile"])) == ["gem", "mile"]


def test_perf_profile_names_the_step_s_ops(capsys):
    """--profile prints torch.profiler's table of the training step (its matmuls and the chunked head among
    the rows) and times nothing else."""
    assert perf.main(["--preset", "micro", "--profile", "--steps", "1", "--warmup", "1"]) == 0
    table = capsys.readouterr().out
    assert "aten::mm" in table and "_ChunkedHead" in table
    assert "tokens/s" not in table


def test_perf_times_every_objective_config_at_full_work():
    """--objectives times every yaml of configs/objective/ (a new one with no change to perf.py), built as
    the yaml says except the knobs that make every step do the objective's full work."""
    objectives = objectives_at_full_work()
    assert sorted(objectives) == available("objective") and len(objectives) >= 11
    assert objectives["preference"].start_step == 0  # the yaml's 200 MLE steps skipped
    assert objectives["unlikelihood_seq"].rate == 1.0  # a sequence-level step every step (yaml: 0.5)
    assert objectives["nce"].k == 1024 and objectives["unlikelihood_seq"].cont_len == 64  # from the yamls


def test_perf_times_a_suite_job_in_a_warm_process(tmp_path):
    """--job runs suite jobs one after another in this process and times those after the first, which warms
    it: their wall, training and evaluation seconds, the evaluation's share."""
    import torch

    out = tmp_path / "job.json"
    threads = torch.get_num_threads()
    assert perf.main(["--job", "--job-runs", "2", "--job-override", "debug=tiny", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # one thread for the jobs, the process's count back after
    fig = json.loads(out.read_text())
    assert len(fig["job_walls_s"]) == 1  # the warm-up job left out
    assert 0 < fig["job_train_s"] + fig["job_eval_s"] <= fig["job_wall_s"]
    assert fig["job_eval_share"] == pytest.approx(100 * fig["job_eval_s"] / fig["job_wall_s"])


@pytest.mark.slow
def test_perf_profiles_a_suite_job_by_phase_and_by_op(capsys):
    """--job --profile: the job's phases (cProfile) and its ops (torch.profiler), in training and evaluation."""
    assert perf.main(["--job", "--profile", "--job-override", "debug=tiny"]) == 0
    table = capsys.readouterr().out
    for row in ("| validation", "| evaluation: test split", "| backward", "| attention", "| LM head + loss"):
        assert row in table, row
    seconds = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in table.splitlines()
        if line.startswith("| evaluation: ") or line.startswith("| *the evaluation")
    }
    parts = [v for k, v in seconds.items() if k.startswith("evaluation: ")]
    assert len(parts) == 5 and 0 < sum(parts) <= seconds["*the evaluation, all of it*"] + 0.02  # rounding
    assert "ops of the evaluation" in table and "matrix products" in table


def test_op_categories_follow_the_autograd_functions():
    """An op inside the chunked head's backward counts for the head, a matmul elsewhere for the products."""
    import torch

    from benchmarks.performance.suite_job import op_shares
    from lit_modules.core.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=32, context=16, n_layer=1, n_head=2, d_model=16))
    ids = torch.randint(0, 32, (2, 9))
    with torch.profiler.profile() as prof:
        model.nll(model.hidden(ids[:, :-1]), ids[:, 1:]).mean().backward()
    seconds = op_shares(prof)
    assert seconds["LM head + loss"] > 0 and seconds["matrix products"] > 0 and seconds["attention"] > 0
    assert seconds["optimiser"] == 0


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_and_writes_one_json(tmp_path, capsys):
    """--gpu-check (make gpu-check's figures), here on the CPU at the micro shape: the CUDA tests (skipped
    without a GPU), the compiled Trainer, every objective's step cost, a fine-tuning step; a line per figure
    as it is measured, all of them in one JSON."""
    out = tmp_path / "gpu_check.json"
    small = ["--device", "cpu", "--preset", "micro", "--repeats", "1", "--steps", "1", "--warmup", "1"]
    assert perf.main(["--gpu-check", *small, "--cost-pairs", "1", "--cost-steps", "1", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["cuda_tests"]["returncode"] == 0 and fig["cuda_tests"]["skipped"] > 0
    assert fig["trainer_tokens_per_s_bf16_compiled"] > 0 and fig["fine_tuning_step_s"] > 0
    assert fig["hf_save_and_import_s"] > 0 and fig["hf_fine_tuning_step_s"] > 0
    assert "mle" in fig["objective_step_cost_vs_mle"] and fig["shape"] == perf.PRESETS["micro"]
    printed = capsys.readouterr().out
    assert "MLE through the Trainer, bf16, compiled:" in printed and "step cost nce / mle (eager):" in printed
