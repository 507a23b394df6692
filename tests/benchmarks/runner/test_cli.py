"""The command line (benchmarks/runner/cli.py, app.py): a bad value is one line and exit 2 with nothing written,
an unwritable run or sweep directory is refused before Hydra makes it, --overrides-file splices a list in."""

import pytest

from benchmarks.runner.cli import check_output_dir, check_sweep_dir, expand_overrides_file, hands_to_hydra


def test_bad_input_from_the_command_line_is_one_line_and_exit_2(tmp_path, cli):
    """The CLI path itself, once: a subprocess, its stderr and exit code; no run directory is made."""
    out = tmp_path / "run"
    proc = cli("run", "debug=tiny", "objective=label_smoothing", "objective.eps=1.5", f"hydra.run.dir={out}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: objective.eps=1.5 is not allowed; use 0 <= eps < 1"]
    assert not out.exists()


def test_read_only_run_directory_is_one_line_and_exit_2(read_only_dir, cli):
    """Hydra makes the run directory before the task: a read-only one is refused before that."""
    proc = cli("run", "debug=tiny", f"hydra.run.dir={read_only_dir}/run")
    assert proc.returncode == 2
    ro = read_only_dir
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir: cannot make '{ro}/run': {ro} is read-only or not writable by this user"
    ]


def test_an_unwritable_run_directory_is_one_line(read_only_dir, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for directory, message in (
        (f"{read_only_dir}/runs", f"{read_only_dir} is read-only or not writable by this user"),
        (f"{a_file}/run", f"{a_file} is a file, not a directory"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            check_output_dir(directory, "hydra.run.dir")
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == f"error: hydra.run.dir: cannot make {directory!r}: {message}"
    check_output_dir(f"{tmp_path}/new/run", "hydra.run.dir")  # a writable one passes


@pytest.mark.parametrize("argv", [["run_root=RO/runs"], ["hydra.sweep.dir=RO/sweep/a"]], ids=["run_root", "sweep_dir"])
def test_an_unwritable_sweep_directory_is_one_line(argv, read_only_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_sweep_dir([a.replace("RO", str(read_only_dir)) for a in argv], "run")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: hydra.sweep.dir: cannot make '{read_only_dir}/")


def test_a_read_only_run_root_refuses_a_single_run_too(read_only_dir, capsys):
    """The run directory is resolved from the composed config (${run_root}/<date>/<time>_<objective>)."""
    from benchmarks.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(["debug=tiny", f"run_root={read_only_dir}/runs"])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: hydra.run.dir: cannot make '{read_only_dir}/runs/")
    assert line.endswith(f"_mle': {read_only_dir} is read-only or not writable by this user")


def test_overrides_file_is_spliced_into_the_command_line(tmp_path, capsys):
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


def test_hydras_own_flags_go_to_hydra():
    assert hands_to_hydra(["-m", "objective=mle"]) and hands_to_hydra(["--cfg", "job"])
    assert hands_to_hydra(["--config-name=tune"]) and not hands_to_hydra(["objective=mle", "seed=3"])


def test_cfg_job_prints_the_composed_config(cli):
    proc = cli("run", "debug=tiny", "objective=nce", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "_target_: objectives.nce.NCE" in proc.stdout and "max_steps: 3" in proc.stdout


def test_a_fresh_run_into_a_run_directory_is_refused_not_written_over(tmp_path, capsys):
    """A second run with resume=false and another knob into a directory that holds a run: one line naming
    resume=true and overwrite=true, exit 2, the earlier run's results, config and checkpoint untouched;
    overwrite=true replaces the run (its TensorBoard run too)."""
    import json

    from benchmarks.run import main

    out = tmp_path / "run"
    assert main(["debug=tiny", "objective=label_smoothing", f"hydra.run.dir={out}"]) == 0
    kept = [out / "results.json", out / ".hydra" / "config.yaml", out / "checkpoints" / "last.ckpt"]
    before = [p.read_bytes() for p in kept]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["debug=tiny", "objective=label_smoothing", "objective.eps=0.3", f"hydra.run.dir={out}"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "already holds a run (results.json)" in lines[0]
    assert "resume=true" in lines[0] and "overwrite=true" in lines[0]
    assert [p.read_bytes() for p in kept] == before
    argv = ["debug=tiny", "objective=label_smoothing", "objective.eps=0.3", "overwrite=true", f"hydra.run.dir={out}"]
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["config"]["objective"]["eps"] == 0.3
    assert [d.name for d in (out / "tb").iterdir()] == ["label_smoothing (eps=0.3)"]  # the earlier run's gone


def test_corpus_output_under_a_file_is_refused_before_the_download(tmp_path, capsys, monkeypatch):
    """corpus.py --out X/y.txt where X is a file: one line and exit 2, nothing fetched (was: a download, then a
    FileExistsError traceback)."""
    import lit_modules.core.corpora as corpora
    from benchmarks.corpus import main

    monkeypatch.setattr(corpora, "download", lambda *a: pytest.fail("downloaded before checking --out"))
    blocker = tmp_path / "X"
    blocker.write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        main(["shakespeare", "--out", str(blocker / "y.txt")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out: cannot make '{blocker}': {blocker} is a file, not a directory"
    ]


def test_a_knob_set_for_several_swept_objectives(tmp_path, capsys):
    """-m over objectives with objective.K=v: one line naming the swept objective that lacks K (was: Hydra's
    composition error); where all have it, K reaches each job as ++objective.K (Hydra composes the multirun's base
    config with the default objective, which lacks it)."""
    from benchmarks.run import main
    from benchmarks.runner.cli import force_swept_knobs

    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_info:
        main(["-m", "objective=label_smoothing,z_loss", "objective.eps=0.2", "debug=tiny", f"hydra.sweep.dir={out}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: objective.eps is not a knob of z_loss, one of the swept objectives (its knobs: alpha); sweep the "
        "objectives that have it, or give it as +objective.eps"
    ]
    assert not out.exists()
    swept = ["-m", "objective=gold,ditto,preference", "objective.start_step=2", "seed=1"]
    assert force_swept_knobs(swept) == ["-m", "objective=gold,ditto,preference", "++objective.start_step=2", "seed=1"]
    assert force_swept_knobs(["objective=gold", "objective.start_step=2"]) == [
        "objective=gold",
        "objective.start_step=2",
    ]
