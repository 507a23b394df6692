"""Fixtures of the tests: an isolated data cache, a tiny model, the entry points on a command line, a local
text corpus, a PostgreSQL server, a read-only directory. Test files never import this module: they ask for
fixtures. Tiny runs use the ``debug=tiny`` preset (configs/debug/tiny.yaml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "objbench-cache"  # shared by the session's tests, not the user's
    monkeypatch.setenv("OBJBENCH_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def text_corpus(tmp_path) -> Path:
    """A small local corpus: a folder with train.jsonl (hub-style) and a plain text file."""
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran past old red barns near quiet green hills".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) + "." for _ in range(400)]
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository's root directory."""
    return ROOT


@pytest.fixture
def cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run an entry point as a user would: ``cli("run", "debug=tiny", ...)`` runs ``python benchmarks/run.py``
    from the repository root; the test-only objectives of tests/faults.py resolve by ``_target_=tests.faults.X``."""

    def run(entry: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        command = [sys.executable, str(ROOT / "benchmarks" / f"{entry}.py"), *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, **kwargs)

    return run


@pytest.fixture
def entry_command(root) -> Callable[..., list[str]]:
    """The command line of an entry point, for tests that start and signal the process themselves."""
    return lambda entry, *args: [sys.executable, str(root / "benchmarks" / f"{entry}.py"), *args]


@pytest.fixture
def fault_env() -> dict:
    """The environment in which ``_target_=tests.faults.<Objective>`` resolves in a subprocess."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def run_tiny() -> Callable[..., dict]:
    """run_tiny(overrides, run_dir, **run's keywords): a ``debug=tiny`` run of the composed config, here."""
    from benchmarks.runner.config import compose, plan
    from benchmarks.runner.job import run

    def run_tiny(overrides: list[str], run_dir: Path, **kwargs) -> dict:
        objective = next((o.split("=", 1)[1] for o in overrides if o.startswith("objective=")), "mle")
        return run(plan(compose(["debug=tiny", *overrides]), objective), run_dir, **kwargs)

    return run_tiny


@pytest.fixture
def cli_error(capsys) -> Callable[[list[str], Path], str]:
    """cli_error(argv, run_dir): the one line ``run.py debug=tiny ARGV`` prints before it exits 2, run in this
    process; nothing of the run's results is written."""
    from benchmarks.run import main

    def cli_error(argv: list[str], run_dir: Path) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["debug=tiny", *argv, f"hydra.run.dir={run_dir}"])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not (run_dir / "results.json").exists()
        return lines[0]

    return cli_error


@pytest.fixture
def full_logits_nll() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-token −log p(y_t) (B, T) from the full logits (B, T, V), in fp32: the plain reference."""

    def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        flat = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return flat.view_as(targets)

    return nll


@pytest.fixture
def model():
    """A one-layer GPT over 23 tokens (the objectives' tests)."""
    from lit_modules.core.model import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=23, context=32, n_layer=1, n_head=2, d_model=16))


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of this test's own on 127.0.0.1 (Debian's postgresql package: initdb and pg_ctl;
    run as the postgres user when the tests run as root, which the server refuses), stopped and its data
    directory removed whatever the outcome. Yields the URL of its database.

    Why Debian's package and not PyPI's pgserver: measured here, five starts each, both start in about a second
    (pgserver 0.61-0.68 s, Debian 0.93-1.35 s for initdb + start) and none failed, but pgserver 0.1.4 listens on a
    Unix socket only on Linux (it passes postgres `-h ""`), so it cannot serve 127.0.0.1 as the workers of a
    cluster would reach it, and as root it adds a system user to the machine."""
    import glob
    import os
    import shutil
    import socket
    import subprocess

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    bindir = Path(binaries[-1]) if binaries else Path(shutil.which("pg_ctl") or "/nonexistent").parent
    if not (bindir / "pg_ctl").exists():
        missing = "no PostgreSQL server binaries (Debian: apt install postgresql)"
        if os.environ.get("OBJBENCH_REQUIRE_POSTGRES"):  # set by .ci/run, which installs the package
            pytest.fail(missing)
        pytest.skip(missing)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="objbench-postgres-"))  # not under pytest's 0700 root-owned tmp dirs
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1"
    try:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write into: mode 0555 for a normal user; for root, which ignores
    permissions, a read-only tmpfs mounted on it (skipped where root may not mount)."""
    import os
    import subprocess

    path = tmp_path / "read_only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"root cannot mount a read-only tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture
def report_cli(capsys):
    """report_cli(*argv) -> (exit code, stderr): report.py's main run in this process as a user runs the script
    (the process start and imports of a subprocess cost seconds a call)."""
    from benchmarks.report import main

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exit_info:
            code = exit_info.code
        return code, capsys.readouterr().err

    return run
