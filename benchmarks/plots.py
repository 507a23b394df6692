"""The report's figures (matplotlib, Agg backend): one function per plot, PNG files written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lit_modules.util import atomic_write_bytes  # noqa: E402

DPI = 120


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _label_points(ax, xs, ys, labels) -> None:
    for x, y, label in zip(xs, ys, labels, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)


def ppl_vs_repetition(runs, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for decoding, marker in (("greedy", "o"), ("top_p", "^")):
        pts = [(r.metrics.get("tf/ppl"), r.metrics.get(f"gen/{decoding}/seq_rep_4"), r.objective) for r in runs]
        pts = [p for p in pts if _finite(p[0], p[1])]
        if not pts:
            continue
        drawn = True
        xs, ys, labels = zip(*pts, strict=True)
        ax.scatter(xs, ys, marker=marker, label=f"{decoding} decoding", s=40)
        if decoding == "greedy":  # top-p points sit near 0: labelling them too only overlaps
            _label_points(ax, xs, ys, labels)
    human = next((r.metrics.get("gen/human/seq_rep_4") for r in runs if "gen/human/seq_rep_4" in r.metrics), None)
    if _finite(human):
        ax.axhline(human, color="grey", linestyle="--", label="real text")
    ax.set_xscale("log")  # perplexities span orders of magnitude (e.g. NCE's unnormalised softmax)
    ax.set_xlabel("test perplexity, log scale (lower is better)")
    ax.set_ylabel("seq-rep-4 of continuations (lower = less repetitive)")
    ax.set_title("Perplexity vs repetition")
    ax.legend(fontsize=8)
    return _save(fig, path) if drawn else plt.close(fig)


def entropy_vs_nll(runs, path: Path) -> Path | None:
    pts = [(r.metrics.get("tf/nll"), r.metrics.get("tf/entropy"), r.objective) for r in runs]
    pts = [p for p in pts if _finite(p[0], p[1])]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs, ys, labels = zip(*pts, strict=True)
    ax.scatter(xs, ys, s=40, color="tab:blue", label="objective")
    _label_points(ax, xs, ys, labels)
    lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
    ax.plot([lo, hi], [lo, hi], color="lightgrey", linewidth=1, label="entropy = NLL (calibrated in entropy)")
    rate = next((r.metrics.get("gt/entropy_rate") for r in runs if "gt/entropy_rate" in r.metrics), None)
    if _finite(rate):
        ax.axhline(rate, color="tab:green", linestyle="--", label=f"source entropy rate ({rate:.2f})")
        ax.axvline(rate, color="tab:green", linestyle=":", linewidth=1)
    ax.set_xlabel("test NLL (nats/token)")
    ax.set_ylabel("mean predictive entropy (nats)")
    ax.set_title("Predictive entropy vs NLL")
    ax.legend(fontsize=8)
    return _save(fig, path)


def validation_curves(runs, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for r in runs:
        history = r.data.get("history", {}).get("val/nll", [])
        if history:
            steps, values = zip(*history, strict=True)
            ax.plot(steps, values, marker=".", label=r.objective)
            drawn = True
    rate = next((r.metrics.get("gt/entropy_rate") for r in runs if "gt/entropy_rate" in r.metrics), None)
    if _finite(rate):
        ax.axhline(rate, color="black", linestyle="--", linewidth=1, label="source entropy rate")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NLL (nats/token)")
    ax.set_title("Validation NLL during training")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path) if drawn else plt.close(fig)


def coverage_vs_quality(runs, path: Path) -> Path | None:
    decodings = sorted({d for r in runs for d in r.decodings})
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for decoding in decodings:
        pts = [(r.metrics.get("gt/forward_kl"), r.metrics.get(f"gt/{decoding}/sample_nll"), r.objective) for r in runs]
        pts = [p for p in pts if _finite(p[0], p[1])]
        if pts:
            drawn = True
            xs, ys, labels = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=36, label=decoding)
            if decoding == "greedy":
                _label_points(ax, xs, ys, labels)
    human = next((r.metrics.get("gt/human/sample_nll") for r in runs if "gt/human/sample_nll" in r.metrics), None)
    if _finite(human):
        ax.axhline(human, color="grey", linestyle="--", label="real text")
    ax.set_xlabel("forward KL(P_data ‖ p_θ), nats (coverage: lower is better)")
    ax.set_ylabel("NLL of generated text under the source (quality)")
    ax.set_title("Coverage vs quality per decoding")
    ax.legend(fontsize=8)
    return _save(fig, path) if drawn else plt.close(fig)


def reliability(runs, path: Path) -> Path | None:
    runs = [r for r in runs if r.data.get("reliability")]
    if not runs:
        return None
    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, r in zip(axes.flat, runs, strict=False):
        bins = r.data["reliability"]
        n = len(bins["count"])
        centers = [(i + 0.5) / n for i in range(n)]
        acc = [a if c > 0 else 0.0 for a, c in zip(bins["accuracy"], bins["count"], strict=True)]
        ax.bar(centers, acc, width=1 / n, edgecolor="black", linewidth=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], color="red", linestyle="--", linewidth=1, label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{r.objective} (ECE {r.metrics.get('tf/ece', float('nan')):.3f})", fontsize=9)
        ax.set_xlabel("confidence (top-1 probability)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def make_plots(runs, out_dir: Path) -> list[Path]:
    plots = [
        ppl_vs_repetition(runs, out_dir / "ppl_vs_repetition.png"),
        entropy_vs_nll(runs, out_dir / "entropy_vs_nll.png"),
        validation_curves(runs, out_dir / "validation_nll.png"),
        coverage_vs_quality(runs, out_dir / "coverage_vs_quality.png"),
        reliability(runs, out_dir / "reliability.png"),
    ]
    return [p for p in plots if p is not None]
