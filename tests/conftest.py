"""Shared fixtures: tiny configs composed through Hydra's compose API, an isolated cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Tiny everything: a few hundred tokens per split, a few steps.
TINY = [
    "model=tiny",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.block_size=32",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "eval.num_prompts=4",
    "eval.prefix_len=8",
    "eval.cont_len=16",
    "eval.batch_size=4",
    "eval.max_batches=2",
]
TINY_SYNTHETIC = [
    "data.train_tokens=8000",
    "data.val_tokens=600",
    "data.test_tokens=600",
    "data.source.vocab_size=256",
    "data.source.n_states=16",
    "data.source.emit=8",
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "objbench-cache"
    monkeypatch.setenv("OBJBENCH_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose("run", overrides=overrides)


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


def _mle():
    from objectives.mle import MLE

    return MLE


class NaNAtStep(_mle()):
    """A test-only objective: MLE until ``step``, then a NaN loss (the injected fault)."""

    name = "nan_at_step"

    def __init__(self, step: int = 2) -> None:
        super().__init__()
        self.step = step

    def forward(self, model, batch, step):
        out = super().forward(model, batch, step)
        if step >= self.step:
            out.loss = out.loss * float("nan")
        return out


def _nce():
    from objectives.nce import NCE

    return NCE


class KilledOnce(_nce()):
    """A test-only objective: NCE (random noise draws: a resume must restore the RNG), but the process
    SIGKILLs itself at ``step`` of its ``run``-th setup (the run, or the tuner's trial), once: ``marker``
    records the kill. Faults land at a known step, not after a sleep."""

    name = "killed_once"

    def __init__(self, step: int = 1, marker: str = "killed", run: int = 1, k: int = 1024, noise_power: float = 0.75,
                 log_z: float = 0.0, learn_log_z: bool = False, gap_positions: int = 64) -> None:  # fmt: skip
        super().__init__(k, noise_power, log_z, learn_log_z, gap_positions)
        self.step, self.marker, self.run = step, Path(marker), run

    def setup(self, model, context) -> None:
        super().setup(model, context)
        runs = self.marker.with_suffix(".runs")
        runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")

    def forward(self, model, batch, step):
        runs = int(self.marker.with_suffix(".runs").read_text())
        if step == self.step and runs == self.run and not self.marker.exists():
            import os
            import signal

            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(model, batch, step)


def full_logits_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token −log p(y_t) (B, T) from the full logits (B, T, V), in fp32: the plain reference."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(
        targets
    )


@pytest.fixture
def model():
    """A one-layer GPT over 23 tokens (the objectives' tests)."""
    from lit_modules.model import GPT, GPTConfig

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
