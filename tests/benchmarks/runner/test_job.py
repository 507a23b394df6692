"""One run (benchmarks/runner/job.py): every objective and data module trains and evaluates under its own name;
a seed fixes the metrics and pairs the objectives; the command line end to end; auxiliary terms name the run;
one run at a time in a directory."""

import json
import math

import pytest
import torch

from benchmarks.reporting.runs import collect
from benchmarks.runner.config import available, compose, load_option, plan
from benchmarks.runner.job import build
from lit_modules.core.errors import ConfigError
from lit_modules.data import StepBatches
from objectives.registry import objective_class

TEXT = [
    "data.vocab_size=300",
    "data.block_size=16",
    "data.name=null",
    "eval.prefix_len=4",
    "eval.cont_len=8",
    "eval.num_prompts=16",
]  # fmt: skip  (windows of 12 tokens inside the tiny corpus's ~19 test lines)


def full_work(objective: str) -> list[str]:
    """The knobs under which the objective does its own work from the first step (its class declares them)."""
    cls = objective_class(load_option("objective", objective)["_target_"])
    return [f"objective.{k}={v}" for k, v in cls.full_work_knobs.items()]


@pytest.mark.parametrize("objective", available("objective"))
def test_every_objective_trains_and_evaluates_under_its_own_name(objective, tmp_path, run_tiny):
    results = run_tiny([f"objective={objective}", *full_work(objective)], tmp_path)
    assert results["objective"] == objective
    assert math.isfinite(results["metrics"]["tf/ppl"]) and results["metrics"]["tf/ppl"] > 1
    assert results["timing"]["steps"] == 3
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]
    (tensorboard_run,) = [p.name for p in (tmp_path / "tb").iterdir()]  # its name, and its tuned knobs' values
    assert tensorboard_run.split(" (")[0] == objective


@pytest.mark.parametrize("data", [d for d in available("data") if d not in ("synthetic", "synthetic_tiny")])
def test_every_data_module_trains_and_evaluates(data, tmp_path, text_corpus, run_tiny):
    local = f"data.files=[{text_corpus / 'corpus.txt'}]" if data == "text" else f"data.path={text_corpus / 'corpus'}"
    if data.startswith("synthetic"):
        local = "data.train_tokens=20000"
    overrides = [f"data={data}", *([] if data.startswith("synthetic") else TEXT), local]
    results = run_tiny(overrides, tmp_path)
    assert math.isfinite(results["metrics"]["tf/ppl"]) and results["metrics"]["tf/ppl"] > 1
    assert ("gt/entropy_rate" in results["metrics"]) == data.startswith("synthetic")
    assert (tmp_path / "tokenizer.json").exists() == (not data.startswith("synthetic"))


def test_same_seed_same_metrics(tmp_path, run_tiny):
    first = run_tiny(["trainer.max_steps=5"], tmp_path / "a")["metrics"]
    second = run_tiny(["trainer.max_steps=5"], tmp_path / "b")["metrics"]
    assert first == second
    other = run_tiny(["trainer.max_steps=5", "seed=7"], tmp_path / "c")["metrics"]
    assert other["tf/nll"] != first["tf/nll"]


def test_one_seed_pairs_initial_weights_and_batches_across_objectives():
    def first(objective, seed):
        datamodule, system = build(plan(compose(["debug=tiny", f"objective={objective}", f"seed={seed}"]), objective))
        datamodule.setup("fit")
        rows = next(iter(StepBatches(datamodule.blocks["train"].shape[0], datamodule.batch_size, datamodule.seed)))
        return system.model.state_dict(), datamodule.blocks["train"][rows]

    (mle, mle_batch), (nce, nce_batch), (other, other_batch) = first("mle", 7), first("nce", 7), first("mle", 8)
    assert mle.keys() == nce.keys() and all(torch.equal(mle[k], nce[k]) for k in mle)
    assert torch.equal(mle_batch, nce_batch)
    assert not torch.equal(mle["wte.weight"], other["wte.weight"]) and not torch.equal(mle_batch, other_batch)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, cli):
    out = tmp_path / "run"
    proc = cli("run", "debug=tiny", "objective=mle", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "mle"
    assert set(results["timing"]) >= {"train_s", "eval_s", "train_tokens", "tokens_per_s"}
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb" / "mle"), size_guidance={"tensors": 0}).Reload()
    texts = [t for t in events.Tags()["tensors"] if t.startswith("samples/")]
    assert any(t.startswith("samples/greedy/prompt_0") for t in texts), texts  # labelled by decoding and prompt
    shown = events.Tensors(next(t for t in texts if t.startswith("samples/greedy/prompt_0")))[0]
    assert shown.step == results["timing"]["steps"]  # at the run's final step
    assert b"**prompt:**" in shown.tensor_proto.string_val[0]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["decoding"] for s in samples} == {"greedy", "sample", "top_p", "human"}
    assert all(len(s["prompt"]) == 8 and len(s["continuation"]) == 16 for s in samples)
    assert "tf/nll" in proc.stdout  # the summary table
    from benchmarks.evaluation.names import metric_names

    assert set(metric_names(["greedy", "sample", "top_p"], synthetic=True)) <= set(results["metrics"])
    assert all(math.isfinite(v) for v in results["metrics"].values())
    # score.py reproduces the gen/ metrics from the saved samples
    scored = cli("score", str(out / "samples.jsonl"), "--json", str(tmp_path / "scores.json"))
    assert scored.returncode == 0, scored.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    for key, value in results["metrics"].items():
        if key.startswith("gen/") or key.endswith("sample_nll"):
            assert scores[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_auxiliary_terms_name_the_run_and_its_report_row(tmp_path, run_tiny):
    """aux={z_loss: 0.001} on label smoothing: results.json, the TensorBoard run and the report's row say so."""
    run_dir = tmp_path / "ls_z" / "seed_1"
    run_tiny(["objective=label_smoothing", "aux={z_loss:0.001}"], run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["objective"] == "label_smoothing+z_loss(0.001)" and saved["config"]["aux"] == {"z_loss": 0.001}
    assert [p.name for p in (run_dir / "tb").iterdir()] == ["label_smoothing+z_loss(0.001) (eps=0.1)"]
    assert [r.objective for r in collect(tmp_path)] == ["label_smoothing+z_loss(0.001)"]


def test_two_runs_into_one_directory_the_second_is_one_line(tmp_path):
    """While a run holds its directory another cannot run there; after it, one can. (flock locks belong to an
    open file, so a second open in this process conflicts as another process's would, without the seconds a
    process spends importing.)"""
    from benchmarks.runner.job import run_dir_lock

    busy = pytest.raises(ConfigError, match=f"{tmp_path} is in use by another run \\(its .lock is held\\)")
    with run_dir_lock(tmp_path), busy, run_dir_lock(tmp_path):  # a run holds it; a second one is refused
        pass
    with run_dir_lock(tmp_path):  # free again
        pass
