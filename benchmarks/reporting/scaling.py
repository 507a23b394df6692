"""The scaling sweep's fit: test NLL against model size, L(N) = E + A·N^(−α) per objective (Kaplan et al. 2020's
form at a fixed token budget), N the non-embedding parameters (token and position embeddings and the output
bias aside). On the synthetic source the fitted floor E can be read against the source's exact entropy rate.

    python benchmarks/run.py -m objective=mle,label_smoothing suite=scaling
    python benchmarks/scaling.py runs/scaling            # scaling.md (the fits) and scaling.png in that directory
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.reporting.runs import collect
from lit_modules.core.files import atomic_write

MIN_SIZES = 4  # three parameters: at least one point more than the fit has


def non_embedding_params(model: dict) -> int:
    """Parameters of a model config without its token and position embeddings and output bias."""
    import torch

    from lit_modules.core.model import GPT, GPTConfig

    with torch.device("meta"):
        gpt = GPT(GPTConfig(**{**model, "vocab_size": 8}))
    embedding = gpt.wte.weight.numel() + gpt.wpe.weight.numel()
    bias = gpt.output_bias.numel() if getattr(gpt, "output_bias", None) is not None else 0
    return sum(p.numel() for p in gpt.parameters()) - embedding - bias


def power_law(n: np.ndarray, floor: float, scale: float, alpha: float) -> np.ndarray:
    return floor + scale * n ** (-alpha)


@dataclass
class Fit:
    floor: float  # E
    scale: float  # A
    alpha: float
    floor_se: float
    alpha_se: float


def fit_power_law(sizes: list[float], losses: list[float]) -> Fit:
    """Least squares of L(N) = E + A·N^(−α) (scipy's curve_fit), E ≥ 0, A > 0, 0 < α < 2; standard errors
    from the covariance."""
    from scipy.optimize import curve_fit

    n, loss = np.asarray(sizes, dtype=float), np.asarray(losses, dtype=float)
    if len(set(n.tolist())) < MIN_SIZES:
        raise ValueError(f"a fit of E + A·N^-alpha needs at least {MIN_SIZES} model sizes, got {len(set(n.tolist()))}")
    span = max(loss.max() - loss.min(), 1e-3)
    p0 = (max(loss.min() - 0.5 * span, 0.0), span * n.min() ** 0.3, 0.3)
    params, cov = curve_fit(power_law, n, loss, p0=p0, bounds=([0.0, 1e-12, 1e-3], [np.inf, np.inf, 2.0]), maxfev=20000)
    se = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(3, math.nan)
    return Fit(float(params[0]), float(params[1]), float(params[2]), float(se[0]), float(se[2]))


def points(root: Path) -> tuple[dict[str, list[tuple[int, float]]], float | None]:
    """{objective: [(N, mean test NLL over seeds)]} from the runs below ``root``, and the entropy rate."""
    by_size: dict[str, dict[int, list[float]]] = {}
    rate = None
    for run in collect(root):
        if run.failed or "tf/nll" not in run.metrics:
            continue
        n = non_embedding_params(run.config["model"])
        by_size.setdefault(run.objective, {}).setdefault(n, []).append(run.metrics["tf/nll"])
        rate = run.metrics.get("gt/entropy_rate", rate)
    return {o: sorted((n, float(np.mean(v))) for n, v in sizes.items()) for o, sizes in by_size.items()}, rate


def report(root: Path) -> tuple[str, bytes]:
    """The fits as a markdown table and the plot of NLL against N with the fitted curves and the entropy rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, rate = points(root)
    if not data:
        raise ValueError(f"{root} holds no finished runs")
    rows = ["| objective | sizes | E | α | A | E − entropy rate |", "|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for objective, pts in sorted(data.items()):
        n, loss = [p[0] for p in pts], [p[1] for p in pts]
        fit = fit_power_law(n, loss)
        gap = f"{fit.floor - rate:+.3f}" if rate is not None else "–"
        rows.append(
            f"| {objective} | {len(n)} | {fit.floor:.3f} ± {fit.floor_se:.3f} | {fit.alpha:.3f} ± "
            f"{fit.alpha_se:.3f} | {fit.scale:.3g} | {gap} |"
        )
        line = ax.plot(n, loss, "o", label=objective)[0]
        grid = np.geomspace(min(n), max(n), 100)
        ax.plot(grid, power_law(grid, fit.floor, fit.scale, fit.alpha), "-", color=line.get_color(), linewidth=1)
    if rate is not None:
        ax.axhline(rate, color="grey", linestyle="--", linewidth=1, label=f"source entropy rate {rate:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("test NLL (nats/token)")
    ax.set_title("L(N) = E + A·N^(−α) at a fixed token budget", fontsize=10)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return "\n".join(rows) + "\n", buffer.getvalue()


def write_report(root: Path) -> str:
    """scaling.md (the fits) and scaling.png in ``root``; returns the table."""
    table, png = report(root)
    atomic_write(root / "scaling.md", table)
    atomic_write(root / "scaling.png", png)
    return table
