"""run.py end to end: every config option composes and runs; results; determinism; bad input."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, TINY_SYNTHETIC, compose

from benchmarks.cli import available
from benchmarks.run import run

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def group_options():
    """(group, option, extra overrides): one run per distinct code path, every objective and every data
    module (model, trainer and suite options differ in numbers only: test_configs.py builds each of them;
    data=synthetic is the default that objective=mle runs already)."""
    cases = []
    for group in ("objective", "data"):
        for option in available(group):
            if (group, option) == ("data", "synthetic"):
                continue
            extra = TINY_SYNTHETIC
            if group == "data" and not option.startswith("synthetic"):
                extra = [
                    "data.vocab_size=300",
                    "data.block_size=16",
                    "data.name=null",
                    "eval.prefix_len=4",
                    "eval.cont_len=8",
                    "eval.num_prompts=16",  # windows of 12 tokens inside the tiny corpus's ~19 test lines
                ]
            cases.append((group, option, extra))
    return cases


@pytest.mark.parametrize(
    ("group", "option", "extra"), group_options(), ids=lambda v: str(v) if isinstance(v, str) else ""
)
def test_every_objective_and_data_module_runs(group, option, extra, tmp_path, text_corpus):
    overrides = [*TINY, *extra, f"{group}={option}"]
    if group == "data" and not option.startswith("synthetic"):
        local = (
            f"data.files=[{text_corpus / 'corpus.txt'}]" if option == "text" else f"data.path={text_corpus / 'corpus'}"
        )
        overrides.append(local)
    cfg = compose(overrides)
    if "start_step" in cfg.objective:  # fine-tuning objectives: let their own term run within the few steps
        cfg.objective.start_step = 1
    if "prefix_len" in cfg.objective:  # objectives that decode: fit the tiny blocks
        cfg.objective.prefix_len, cfg.objective.cont_len = 4, 8
    if "max_len" in cfg.objective:  # objectives that repeat spans: a prefix and two copies in 17 tokens
        cfg.objective.min_len, cfg.objective.max_len = 2, 5
    results = run(cfg, tmp_path, "mle")
    assert math.isfinite(results["metrics"]["tf/ppl"]) and results["metrics"]["tf/ppl"] > 1
    assert results["timing"]["steps"] == 3
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == results["metrics"]
    assert ("gt/entropy_rate" in saved["metrics"]) == (cfg.data._target_.endswith("SyntheticDataModule"))


def test_same_seed_same_metrics(tmp_path):
    overrides = [*TINY, *TINY_SYNTHETIC, "trainer.max_steps=5"]
    first = run(compose(overrides), tmp_path / "a", "mle")["metrics"]
    second = run(compose(overrides), tmp_path / "b", "mle")["metrics"]
    assert first == second
    other = run(compose([*overrides, "seed=7"]), tmp_path / "c", "mle")["metrics"]
    assert other["tf/nll"] != first["tf/nll"]


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [*RUN, *TINY, *TINY_SYNTHETIC, "objective=mle", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "mle"
    assert set(results["timing"]) >= {"train_s", "eval_s", "train_tokens", "tokens_per_s"}
    assert math.isfinite(results["metrics"]["tf/ppl"]) and results["metrics"]["tf/ppl"] > 1
    assert list(out.glob("tb/mle/events.out.tfevents.*")), "no TensorBoard events"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb" / "mle"), size_guidance={"tensors": 0}).Reload()
    texts = [t for t in events.Tags()["tensors"] if t.startswith("samples/")]
    assert any(t.startswith("samples/greedy/prompt_0") for t in texts), texts  # labelled by decoding and prompt
    shown = events.Tensors(next(t for t in texts if t.startswith("samples/greedy/prompt_0")))[0]
    assert shown.step == results["timing"]["steps"]  # at the run's final step
    assert b"**prompt:**" in shown.tensor_proto.string_val[0]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["decoding"] for s in samples} == {"greedy", "sample", "top_p", "human"}
    assert all(len(s["prompt"]) == 8 and len(s["continuation"]) == 16 for s in samples)
    assert "tf/nll" in proc.stdout  # the summary table
    calibration = ("ece", "rms_ce", "mce", "ece_equal_mass", "brier")
    expected = {f"tf/{k}" for k in ("nll", "ppl", "entropy", *calibration, "acc", "rep_128", "wrep_128", "uniq")}
    expected |= {"gt/entropy_rate", "gt/forward_kl", "gt/reverse_kl"}
    for name in ("greedy", "sample", "top_p", "human"):
        expected |= {
            f"gen/{name}/{k}"
            for k in ("uniq_seq", "zipf", "self_bleu_4", "rep_rate", "loop_rate", "entropy", "copy_rate_8")
        }
        kinds = ("seq_rep", "distinct", "unique_ngram_share", "hapax_share")
        expected |= {f"gen/{name}/{k}_{n}" for k in kinds for n in range(1, 5)}
        expected.add(f"gt/{name}/sample_nll")
    assert expected <= set(results["metrics"]), expected - set(results["metrics"])
    assert all(math.isfinite(v) for v in results["metrics"].values())
    # score.py reproduces the gen/ metrics from the saved samples
    scored = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "score.py"),
            str(out / "samples.jsonl"),
            "--json",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    for key, value in results["metrics"].items():
        if key.startswith("gen/") or key.endswith("sample_nll"):
            assert scores[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


BAD = [
    (
        ["objective=nope"],
        "objective=nope is not available; choose one of: contrastive_token, ditto, emo, entropy_penalty",
    ),
    (["model=huge"], f"model=huge is not available; choose one of: {', '.join(available('model'))}"),
    (["data=imagenet"], "data=imagenet is not available"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed"),
    (["data.batch_size=-1"], "data.batch_size=-1 is not allowed"),
    (["optim.lr=0"], "optim.lr=0 is not allowed"),
    (["data.block_size=512"], "data.block_size=512 is larger than model.context=128"),
    (["eval.decodings=[greedy,beamish]"], "'beamish' is not available"),
    (["eval.prefix_len=50", "eval.cont_len=100"], "eval.prefix_len + eval.cont_len = 150 is longer than the context"),
    (["objective=unlikelihood_seq", "objective.cont_len=200"], "objective.prefix_len + cont_len=232 is not allowed"),
    (["objective=label_smoothing", "objective.eps=1.5"], "objective.eps=1.5 is not allowed; use 0 <= eps < 1"),
    (["data=text", "data.files=[/no/such/file.txt]"], "'/no/such/file.txt' does not exist"),
    (["trainer.compile=maybe"], "trainer.compile='maybe' is not allowed; use true or false"),
    (["data=text"], "data=text needs data.files"),
    (["eval.mauve=maybe"], "eval.mauve='maybe' is not allowed; use auto, true or false"),
    (["objective=mle", "+objective.eps=0.1"], "objective.eps is not a knob of mle; its knobs: none"),
    (["aux={zloss:1e-4}"], "aux.zloss is not an auxiliary term; choose from: entropy_penalty, label_smoothing, z_loss"),
    (["aux={z_loss:-1}"], "aux.z_loss=-1 is not allowed; use a weight >= 0"),
    (["objective=gold"], "objective.start_step=200 is not allowed; it must be below trainer.max_steps=3"),
    (["seed=-1"], "seed=-1 is not allowed; use an integer in [0, 2^32)"),
    (["seed=abc"], "seed='abc' is not allowed; use an integer in [0, 2^32)"),
    (["eval.batch_size=0"], "eval.batch_size=0 is not allowed; use a positive integer"),
    (["eval.max_batches=0"], "eval.max_batches=0 is not allowed; use a positive integer"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is not allowed; use a positive integer"),
    (["trainer.devices=0"], "trainer.devices=0 is not allowed; use a positive integer or auto"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 is not allowed; use a number of batches >= 1"),
    (["optim.betas=[2,0]"], "optim.betas=[2, 0] is not allowed; use two numbers in [0, 1)"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1 is not allowed; use a weight decay >= 0"),
    (["optim.warmup_steps=-10"], "optim.warmup_steps=-10 is not allowed; use an integer >= 0"),
    (["eval.decodings=greedy"], "eval.decodings='greedy' is not allowed; use a list of decoding names"),
    (["optim.lr=1e8"], "non-finite loss"),
]


def cli_error(argv: list[str], run_dir, capsys) -> str:
    """What ``python benchmarks/run.py ARGV`` prints before exiting 2, run in this process: the config
    checks of the command line, then the run (data errors surface when the data module reads its files)."""
    from benchmarks.checks import check_run_config
    from benchmarks.cli import check_config, user_errors_as_one_line
    from benchmarks.tb_logging import quiet_lightning

    quiet_lightning()  # as run.py's main does: Lightning's INFO lines would otherwise reach stderr

    with pytest.raises(SystemExit) as exit_info:
        check_config(argv, check_run_config)
        user_errors_as_one_line(run)(compose(argv), run_dir, "objective")
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (run_dir / "results.json").exists()
    return lines[0]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[b[0][-1] for b in BAD])
def test_bad_input_is_one_line(overrides, message, tmp_path, capsys):
    assert message in cli_error([*TINY, *overrides], tmp_path / "run", capsys)


@pytest.mark.parametrize("content", [b"", "caf\xe9".encode("latin-1")], ids=["empty", "not-utf8"])
def test_bad_text_file_is_one_line(content, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    line = cli_error([*TINY, "data=text", f"data.files=[{bad}]"], tmp_path / "run", capsys)
    assert line.startswith("error: data.files:")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source.emit=0", "data.source.emit=0 is not allowed; use an integer >= 1"),
        ("data.source.emit=300", "data.source.emit=300 is not allowed; it is larger than data.source.vocab_size=256"),
        ("data.source.smoothing=2", "data.source.smoothing=2 is not allowed; use 0 < smoothing < 1"),
        ("data.source.zipf_s=-1", "data.source.zipf_s=-1 is not allowed; use zipf_s >= 0"),
        ("data.source.concentration=0", "data.source.concentration=0 is not allowed; use concentration > 0"),
        ("data.source.n_states=2.5", "data.source.n_states=2.5 is not allowed; use an integer >= 1"),
        ("+data.source.colour=1", "data.source.colour is not a setting of the synthetic source"),
    ],
)
def test_bad_synthetic_source_is_one_line(override, message, tmp_path, capsys):
    assert message in cli_error([*TINY, *TINY_SYNTHETIC, override], tmp_path / "run", capsys)


def test_bad_input_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    """The CLI path itself, once: a subprocess, its stderr and exit code."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [*RUN, *TINY, "objective=label_smoothing", "objective.eps=1.5", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: objective.eps=1.5 is not allowed; use 0 <= eps < 1"]
    assert not out.exists()


def test_read_only_run_directory_is_one_line_and_exit_2(read_only_dir):
    """Hydra makes the run directory before any of our code: a read-only one is refused before that."""
    proc = subprocess.run(
        [*RUN, *TINY, f"hydra.run.dir={read_only_dir}/run"], capture_output=True, text=True, cwd=ROOT, env=os.environ
    )
    assert proc.returncode == 2
    ro = read_only_dir
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir: cannot make '{ro}/run': {ro} is read-only or not writable by this user"
    ]


@pytest.mark.parametrize(
    ("argv", "multirun", "message"),
    [
        (
            ["run_root=RO/runs"],
            False,
            "hydra.run.dir: cannot make 'RO/runs': RO is read-only or not writable by this user",
        ),
        (
            ["-m", "hydra.sweep.dir=RO/sweep/a"],
            True,
            "hydra.sweep.dir: cannot make 'RO/sweep/a': RO is read-only or not writable by this user",
        ),
        (["hydra.run.dir=FILE/run"], False, "hydra.run.dir: cannot make 'FILE/run': FILE is a file, not a directory"),
    ],
    ids=["run_root", "sweep_dir", "under_a_file"],
)
def test_unwritable_output_directory_is_one_line(argv, multirun, message, read_only_dir, tmp_path, capsys):
    from benchmarks.cli import check_output_dir

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    swap = lambda text: text.replace("RO", str(read_only_dir)).replace("FILE", str(a_file))  # noqa: E731
    with pytest.raises(SystemExit) as exit_info:
        check_output_dir([swap(a) for a in argv], multirun)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {swap(message)}"
    check_output_dir([f"hydra.run.dir={tmp_path}/new/run"], multirun=False)  # a writable one passes


def test_read_only_cache_directory_is_one_line(read_only_dir, tmp_path, capsys):
    message = cli_error([*TINY, f"data.cache_dir={read_only_dir}/cache"], tmp_path / "run", capsys)
    assert message.startswith(f"error: cannot write or read {read_only_dir}/cache")


def test_overrides_file_is_spliced_into_the_command_line(tmp_path, capsys):
    from benchmarks.run import expand_overrides_file

    good = tmp_path / "best.yaml"
    good.write_text("- objective=label_smoothing\n- objective.eps=0.05\n")
    argv = ["model=tiny", "--overrides-file", str(good), "seed=3"]
    assert expand_overrides_file(argv) == ["model=tiny", "objective=label_smoothing", "objective.eps=0.05", "seed=3"]
    assert expand_overrides_file(["seed=3"]) == ["seed=3"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: mle\n")
    for args, message in (
        (["--overrides-file"], "--overrides-file needs a path"),
        (["--overrides-file", str(tmp_path / "none.yaml")], "cannot read it"),
        (["--overrides-file", str(bad)], "expected a YAML list of overrides"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            expand_overrides_file(args)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_gradient_clipping_with_the_fused_optimiser():
    """Lightning refuses to clip for fused optimisers; the system clips itself, by norm or by value."""
    import torch

    from lit_modules.system import LanguageModelSystem

    system = LanguageModelSystem(
        dict(vocab_size=16, context=8, n_layer=1, n_head=1, d_model=8), {"_target_": "objectives.mle.MLE"}, {}
    )
    for algorithm, check in (
        ("norm", lambda g: torch.linalg.vector_norm(torch.cat([x.flatten() for x in g])) <= 0.5 + 1e-5),
        ("value", lambda g: all(x.abs().max() <= 0.01 for x in g)),
    ):
        for p in system.parameters():
            p.grad = torch.full_like(p, 3.0)
        system.configure_gradient_clipping(None, 0.5 if algorithm == "norm" else 0.01, algorithm)
        assert check([p.grad for p in system.parameters()])


def test_auxiliary_terms_name_the_run_and_its_report_row(tmp_path):
    """aux={z_loss: 0.001} on label smoothing: results.json, the TensorBoard run and the report's row say so."""
    from benchmarks.cli import objective_label
    from benchmarks.report import collect

    cfg = compose([*TINY, *TINY_SYNTHETIC, "objective=label_smoothing", "aux={z_loss:0.001}"])
    name = objective_label("label_smoothing", cfg.aux)
    run(cfg, tmp_path / "ls_z" / "seed_1", name)
    saved = json.loads((tmp_path / "ls_z" / "seed_1" / "results.json").read_text())
    assert saved["objective"] == "label_smoothing+z_loss(0.001)" and saved["config"]["aux"] == {"z_loss": 0.001}
    assert [p.name for p in (tmp_path / "ls_z" / "seed_1" / "tb").iterdir()] == [
        "label_smoothing+z_loss(0.001)_eps=0.1"
    ]
    assert [r.objective for r in collect(tmp_path)] == ["label_smoothing+z_loss(0.001)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, capsys):
    assert "trainer.accelerator=gpu is not allowed here: this machine has no CUDA GPU" in cli_error(
        [*TINY, "trainer.accelerator=gpu"], tmp_path / "run", capsys
    )


def test_a_finished_run_resumed_keeps_its_validation_and_training_time(tmp_path):
    """results.json lost after a finished run, the same command with resume=true: the final checkpoint is at
    max_steps, so nothing trains or validates again; val/nll and the training time still come from the run."""
    overrides = [*TINY, *TINY_SYNTHETIC]
    first = run(compose(overrides), tmp_path, "mle")
    (tmp_path / "results.json").unlink()
    again = run(compose([*overrides, "resume=true"]), tmp_path, "mle")
    assert again["metrics"] == first["metrics"]
    assert again["history"] == first["history"]
    assert again["timing"]["train_s"] >= first["timing"]["train_s"]


def test_a_checkpoint_at_a_validation_step_holds_that_validation(tmp_path):
    """Checkpoint every 20 steps, validation every 10: last.ckpt of step 20 is written after step 20's
    validation, so a run resumed from it does not lose that point of the history."""
    import lightning.pytorch as pl

    copies = tmp_path / "at_step_21.ckpt"

    class CopyAtStep21(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 21 and not copies.exists():
                copies.write_bytes((tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes())

    cfg = compose([*TINY, *TINY_SYNTHETIC, "trainer.max_steps=22", "trainer.val_check_interval=10",
                   "checkpoint.every_n_steps=20", "trainer.limit_val_batches=1"])  # fmt: skip
    run(cfg, tmp_path / "run", "mle", callbacks=(CopyAtStep21(),), evaluation=False)
    checkpoint = torch.load(copies, weights_only=True)
    assert checkpoint["global_step"] == 20
    assert [step for step, _ in checkpoint["objbench"]["val_history"]] == [10, 20]


def test_two_runs_into_one_directory_the_second_is_one_line(tmp_path):
    """While a run holds its directory another process cannot run there; after it, one can."""
    from benchmarks.run import run_dir_lock

    def other_process() -> subprocess.CompletedProcess:
        code = f"from benchmarks.run import run_dir_lock\nwith run_dir_lock({str(tmp_path)!r}): pass"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)

    with run_dir_lock(tmp_path):  # this process runs there
        busy = other_process()
    assert busy.returncode != 0
    assert f"{tmp_path} is in use by another run (its .lock is held)" in busy.stderr
    assert other_process().returncode == 0
