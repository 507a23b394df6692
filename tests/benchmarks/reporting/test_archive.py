"""report.py --archive: each finished run's results and per-prompt metrics, without weights or text, in a
directory that reports into the same tables."""

import json

from benchmarks.reporting.report import build
from benchmarks.reporting.runs import collect


def write_samples(folder, seed, shift):
    """A samples file of 4 prompts: tokens and text (what the archive leaves out) and per-prompt metrics."""
    records = [
        {
            "decoding": "greedy",
            "prompt_index": i,
            "prompt": [1, 2, 3],
            "text": "a continuation " * 20,
            "metrics": {"gen/greedy/seq_rep_4": 0.1 * i + shift + seed / 50},
        }
        for i in range(4)
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_an_archive_reports_the_same_tables_without_the_text(tmp_path, fake_run, report_cli):
    runs, archive = tmp_path / "runs", tmp_path / "archive"
    for seed in (1, 2, 3):
        for objective, nll, shift in (("mle", 4.0, 0.3), ("label_smoothing", 4.1, 0.1)):
            metrics = {"gen/greedy/seq_rep_4": 0.15 + shift + seed / 50}
            fake_run(runs, objective, seed, nll + seed / 100, metrics=metrics, eval={"decodings": ["greedy"]})
            write_samples(runs / objective / f"seed_{seed}", seed, shift)
    (runs / "mle" / "seed_1" / "checkpoints").mkdir()
    (runs / "mle" / "seed_1" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (runs / "nce" / "seed_1").mkdir(parents=True)  # a failed job: its outcome is kept
    (runs / "nce" / "seed_1" / "failed.json").write_text(json.dumps({"objective": "nce", "error": "diverged"}))

    code, err = report_cli(str(runs), "--out", str(tmp_path / "report"), "--archive", str(archive))
    assert code == 0, err
    assert build(collect(archive)).body == build(collect(runs)).body
    kept = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    finished = [f"{o}/seed_{s}" for o in ("mle", "label_smoothing") for s in (1, 2, 3)]
    files = [f"{run}/{name}" for run in finished for name in ("results.json", "samples.jsonl")]
    assert kept == sorted([*files, "nce/seed_1/failed.json"])
    record = json.loads((archive / "mle" / "seed_2" / "samples.jsonl").read_text().splitlines()[1])
    assert record == {"decoding": "greedy", "prompt_index": 1, "metrics": {"gen/greedy/seq_rep_4": 0.44}}


def test_an_archive_inside_the_runs_is_refused_before_anything_is_written(tmp_path, fake_run, report_cli):
    fake_run(tmp_path, "mle", 1, 4.0)
    code, err = report_cli(str(tmp_path), "--archive", str(tmp_path / "kept"))
    assert code == 2 and "is inside" in err and err.count("\n") == 1
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "kept").exists()
