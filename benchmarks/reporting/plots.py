"""The report's figures (matplotlib, Agg backend): one function per plot, PNG files written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lit_modules.core.files import atomic_write  # noqa: E402

DPI = 120


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout(rect=(0, 0, 0.8, 1) if fig.legends else None)  # room for a figure legend on the right
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


DECODING_MARKERS = {"greedy": "o", "top_p": "^", "sample": "s", "top_k": "D", "typical": "v", "beam": "P"}


def objective_colors(names) -> dict[str, tuple]:
    """One distinct colour per objective (tab20's dark shades first, so no two look like a pair), the same
    in every plot of one set of objectives."""
    cmap = plt.get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {name: cmap(order[i % 20]) for i, name in enumerate(sorted(set(names)))}


def _points(runs, x_key: str, y_key: str) -> list[tuple[float, float, str]]:
    """(x, y, objective) of every run (a report row) whose two metrics are finite numbers."""
    points = [(r.metrics.get(x_key), r.metrics.get(y_key), r.objective) for r in runs]
    return [p for p in points if _finite(p[0], p[1])]


def _colors(runs) -> dict[str, tuple]:
    return objective_colors(r.objective for r in runs)


def _inlier_limits(values: list[float], floor: float | None = None) -> tuple[float, float]:
    """Axis limits around the bulk of the values: a far outlier (say NCE's unnormalised softmax, 4x the
    others' NLL) would otherwise squeeze every other point into a corner. Outliers: > q3 + 3·IQR."""
    ordered = sorted(values)
    q1, q3 = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
    spread = max(q3 - q1, 0.05 * max(abs(q3), 1e-9))
    inliers = [v for v in ordered if v <= q3 + 3 * spread] or ordered
    lo, hi = min(inliers + ([floor] if floor is not None else [])), max(inliers)
    pad = 0.08 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _errors(runs, x_key: str, y_key: str) -> dict[str, tuple[float | None, float | None]]:
    """Half-widths of each row's 95% interval over seeds (rows from report.py carry ``half``), by objective."""
    out = {}
    for r in runs:
        half = getattr(r, "half", {})
        out[r.objective] = tuple(half.get(k) if _finite(half.get(k)) else None for k in (x_key, y_key))
    return out


def _scatter(ax, points, colors, marker, clip_x=None, clip_y=None, errors=None) -> None:
    """points: (x, y, objective). Points beyond clip_x / clip_y are drawn on the edge, value written.
    errors: {objective: (x half-width, y half-width)}, drawn as error bars."""
    for x, y, name in points:
        shown_x = min(x, clip_x) if clip_x is not None else x
        shown_y = min(y, clip_y) if clip_y is not None else y
        clipped = (shown_x, shown_y) != (x, y)
        xerr, yerr = (errors or {}).get(name, (None, None))
        if not clipped and (xerr or yerr):
            ax.errorbar(
                shown_x,
                shown_y,
                xerr=xerr,
                yerr=yerr,
                fmt="none",
                ecolor=colors[name],
                elinewidth=1,
                capsize=2,
                zorder=2,
            )
        ax.scatter(
            [shown_x],
            [shown_y],
            marker=">" if shown_x != x else ("^" if clipped else marker),
            s=46,
            color=colors[name],
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
        )
        if clipped:
            text = f"{name}: {x:.3g}" if shown_x != x else f"{name}: {y:.3g}"
            ax.annotate(text, (shown_x, shown_y), textcoords="offset points", xytext=(-4, -10), ha="right", fontsize=7)


def _legends(ax, colors, markers: dict[str, str], extra: list | None = None) -> None:
    """Objectives (colour) in a figure legend on the right; decodings (marker) and lines inside the axes."""
    from matplotlib.lines import Line2D

    objective_handles = [
        Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", markeredgewidth=0.4, label=name)
        for name, c in colors.items()
    ]
    ax.figure.legend(handles=objective_handles, title="objective", fontsize=7, title_fontsize=8, loc="center right")
    handles = [Line2D([], [], marker=m, linestyle="", color="grey", label=f"{d} decoding") for d, m in markers.items()]
    ax.legend(handles=handles + (extra or []), fontsize=7, loc="best")


def ppl_vs_repetition(runs, path: Path) -> Path | None:
    from matplotlib.lines import Line2D

    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    markers = {}
    for decoding in ("greedy", "top_p"):
        y_key = f"gen/{decoding}/seq_rep_4"
        pts = _points(runs, "tf/ppl", y_key)
        if pts:
            markers[decoding] = DECODING_MARKERS[decoding]
            _scatter(ax, pts, colors, markers[decoding], errors=_errors(runs, "tf/ppl", y_key))
    if not markers:
        plt.close(fig)
        return None
    extra = []
    human = next((r.metrics.get("gen/human/seq_rep_4") for r in runs if "gen/human/seq_rep_4" in r.metrics), None)
    if _finite(human):
        ax.axhline(human, color="grey", linestyle="--", linewidth=1)
        extra.append(Line2D([], [], color="grey", linestyle="--", label="real text"))
    ppls = [r.metrics["tf/ppl"] for r in runs if _finite(r.metrics.get("tf/ppl"))]
    log_axis = bool(ppls) and max(ppls) > 10 * min(ppls)  # a log axis only where perplexities span decades
    if log_axis:
        ax.set_xscale("log")
    ax.set_xlabel(f"test perplexity{', log scale' if log_axis else ''} (lower is better)")
    ax.set_ylabel("seq-rep-4 of continuations (lower = less repetitive)")
    ax.set_title("Perplexity vs repetition (95% intervals over seeds)")
    _legends(ax, colors, markers, extra)
    return _save(fig, path)


def entropy_vs_nll(runs, path: Path) -> Path | None:
    from matplotlib.lines import Line2D

    pts = _points(runs, "tf/nll", "tf/entropy")
    if not pts:
        return None
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    rate = next((r.metrics.get("gt/entropy_rate") for r in runs if "gt/entropy_rate" in r.metrics), None)
    floor = rate if _finite(rate) else None
    x_lo, x_hi = _inlier_limits([p[0] for p in pts], floor)
    y_lo, y_hi = _inlier_limits([p[1] for p in pts], floor)
    _scatter(ax, pts, colors, "o", clip_x=x_hi, clip_y=y_hi, errors=_errors(runs, "tf/nll", "tf/entropy"))
    lo, hi = min(x_lo, y_lo), max(x_hi, y_hi)
    ax.plot([lo, hi], [lo, hi], color="lightgrey", linewidth=1)
    extra = [Line2D([], [], color="lightgrey", label="entropy = NLL (calibrated in entropy)")]
    if floor is not None:
        ax.axhline(rate, color="tab:green", linestyle="--", linewidth=1)
        ax.axvline(rate, color="tab:green", linestyle=":", linewidth=1)
        extra.append(Line2D([], [], color="tab:green", linestyle="--", label=f"source entropy rate ({rate:.2f})"))
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("test NLL (nats/token)")
    ax.set_ylabel("mean predictive entropy (nats)")
    ax.set_title("Predictive entropy vs NLL (teacher-forced, test split)")
    _legends(ax, colors, {}, extra)
    return _save(fig, path)


def validation_curves(runs, path: Path) -> Path | None:
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    finals = []
    for r in runs:
        history = r.data.get("history", {}).get("val/nll", [])
        if history:
            steps, values = zip(*history, strict=True)
            ax.plot(steps, values, marker=".", color=colors[r.objective], label=r.objective)
            finals.extend(values)
    if not finals:
        plt.close(fig)
        return None
    rate = next((r.metrics.get("gt/entropy_rate") for r in runs if "gt/entropy_rate" in r.metrics), None)
    if _finite(rate):
        ax.axhline(rate, color="black", linestyle="--", linewidth=1, label="source entropy rate")
    lo, hi = _inlier_limits(finals, rate if _finite(rate) else None)
    ax.set_ylim(lo, hi)
    above = sorted({r.objective for r in runs for _, v in r.data.get("history", {}).get("val/nll", []) if v > hi})
    if above:
        ax.text(
            0.99, 0.98, f"above the axis: {', '.join(above)}", transform=ax.transAxes, ha="right", va="top", fontsize=7
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NLL (nats/token)")
    ax.set_title("Validation NLL during training")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="center right")
    return _save(fig, path)


def calibration_curves(runs, path: Path) -> Path | None:
    """Over training (runs with eval.val_calibration=true): validation entropy minus NLL (below 0: the model is
    more confident than it is right, over-confident) and validation ECE."""
    colors = _colors(runs)
    drawn = False
    fig, (gap_ax, ece_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        history = r.data.get("history", {})
        nll, entropy, ece = (dict(map(tuple, history.get(k) or [])) for k in ("val/nll", "val/entropy", "val/ece"))
        steps = sorted(set(nll) & set(entropy))
        if steps:
            gaps = [entropy[s] - nll[s] for s in steps]
            gap_ax.plot(steps, gaps, marker=".", color=colors[r.objective], label=r.objective)
            drawn = True
        if ece:
            ece_ax.plot(sorted(ece), [ece[s] for s in sorted(ece)], marker=".", color=colors[r.objective])
    if not drawn:
        plt.close(fig)
        return None
    gap_ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    gap_ax.set_xlabel("training step")
    gap_ax.set_ylabel("validation entropy − NLL (nats/token)")
    gap_ax.set_title("Below 0: over-confident")
    ece_ax.set_xlabel("training step")
    ece_ax.set_ylabel("validation ECE (15 bins)")
    ece_ax.set_title("Calibration error during training")
    fig.legend(*gap_ax.get_legend_handles_labels(), fontsize=7, loc="center right")
    return _save(fig, path)


def coverage_vs_quality(runs, path: Path) -> Path | None:
    from matplotlib.lines import Line2D

    colors = _colors(runs)
    decodings = sorted({d for r in runs for d in r.decodings})
    fig, ax = plt.subplots(figsize=(8, 4.8))
    series = {}
    for decoding in decodings:
        pts = _points(runs, "gt/forward_kl", f"gt/{decoding}/sample_nll")
        if pts:
            series[decoding] = pts
    if not series:
        plt.close(fig)
        return None
    human = next((r.metrics.get("gt/human/sample_nll") for r in runs if "gt/human/sample_nll" in r.metrics), None)
    xs = [p[0] for pts in series.values() for p in pts]
    ys = [p[1] for pts in series.values() for p in pts] + ([human] if _finite(human) else [])
    x_lo, x_hi = _inlier_limits(xs, 0.0)
    y_lo, y_hi = _inlier_limits(ys)
    markers = {}
    for decoding, pts in series.items():
        markers[decoding] = DECODING_MARKERS.get(decoding, "o")
        errors = _errors(runs, "gt/forward_kl", f"gt/{decoding}/sample_nll")
        _scatter(ax, pts, colors, markers[decoding], clip_x=x_hi, clip_y=y_hi, errors=errors)
    extra = []
    if _finite(human):
        ax.axhline(human, color="grey", linestyle="--", linewidth=1)
        extra.append(Line2D([], [], color="grey", linestyle="--", label="real text"))
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("forward KL(P_data ‖ p_θ), nats (coverage: lower is better)")
    ax.set_ylabel("NLL of generated text under the source\n(low = degenerate, near real text = plausible)")
    ax.set_title("Coverage vs quality per decoding")
    _legends(ax, colors, markers, extra)
    return _save(fig, path)


def forward_vs_reverse_kl(runs, path: Path) -> Path | None:
    """Every objective on the exact forward KL(P‖p_θ) (mass-covering: low when p_θ covers all of the source)
    against the reverse KL(p_θ‖P) (mode-seeking: low when p_θ puts no mass where the source has little), with
    95% intervals over seeds; dashed lines through MLE's point split the plane into what each objective buys
    and costs against it. Synthetic source only (the true distribution is needed)."""
    pts = _points(runs, "gt/forward_kl", "gt/reverse_kl")
    if not pts:
        return None
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 5.4))
    errors = _errors(runs, "gt/forward_kl", "gt/reverse_kl")

    def limits(values: list[float], halves: list[float]) -> tuple[float, float]:  # every point, its bar too
        lows = [v - h for v, h in zip(values, halves, strict=True)]
        highs = [v + h for v, h in zip(values, halves, strict=True)]
        lo, hi = min(lows), max(highs)
        pad = 0.06 * (hi - lo or 1.0)
        return lo - pad, hi + pad

    x_lo, x_hi = limits([p[0] for p in pts], [errors[p[2]][0] or 0.0 for p in pts])
    y_lo, y_hi = limits([p[1] for p in pts], [errors[p[2]][1] or 0.0 for p in pts])
    _scatter(ax, pts, colors, "o", errors=errors)
    for x, y, name in pts:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6.5)
    from matplotlib.lines import Line2D

    mle = next(((x, y) for x, y, name in pts if name == "mle"), None)
    extra = []
    if mle is not None:
        ax.axvline(mle[0], color="grey", linestyle="--", linewidth=0.8)
        ax.axhline(mle[1], color="grey", linestyle="--", linewidth=0.8)
        extra.append(Line2D([], [], color="grey", linestyle="--", label="MLE's KLs"))
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("forward KL(P ‖ p_θ), nats/token (mass-covering: lower covers more of the source)")
    ax.set_ylabel("reverse KL(p_θ ‖ P), nats/token\n(mode-seeking: lower puts less mass off the source)")
    ax.set_title("Mass-covering vs mode-seeking (95% intervals over seeds)", fontsize=10)
    _legends(ax, colors, {}, extra)
    return _save(fig, path)


def _tempered_point(r, t: float, synthetic: bool) -> tuple[float | None, float | None]:
    """A row's point at temperature t in the temperature plot's plane."""
    m = r.metrics
    if synthetic:
        return m.get(f"temp/{t:g}/forward_kl"), m.get(f"temp/{t:g}/reverse_kl")
    nll, entropy = m.get(f"temp/{t:g}/nll"), m.get(f"temp/{t:g}/entropy")
    return nll, (abs(entropy - nll) if _finite(nll, entropy) else None)


def _positive(point) -> bool:
    return _finite(*point) and min(point) > 0


def temperature_frontier(runs, path: Path) -> Path | None:
    """MLE's temperature curve (p_T ∝ p^(1/T) over the grid of eval.temperatures, means over seeds) with every
    objective's point at T = 1 (95% intervals over seeds) and, thin, its own curve: a point on or above-right of
    MLE's curve is one a temperature gives MLE too. The plane: the exact (KL(P‖p), KL(p‖P)) on the synthetic
    source, (NLL, |entropy − NLL|) on real text (both log scale)."""
    from matplotlib.lines import Line2D

    grid = sorted(
        {float(k.split("/")[1]) for r in runs for k in r.metrics if k.startswith("temp/") and k.count("/") == 2}
    )
    points = [(*_tempered_point(r, 1.0, True), r.objective) for r in runs]
    synthetic = any(_positive(p[:2]) for p in points)
    points = [(*_tempered_point(r, 1.0, synthetic), r.objective) for r in runs]
    points = [p for p in points if _positive(p[:2])]
    if len(grid) < 2 or not any(name == "mle" for *_, name in points):
        return None
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for r in runs:
        mle = r.objective == "mle"
        curve = [(t, p) for t in grid if _positive(p := _tempered_point(r, t, synthetic))]
        if len(curve) > 1:
            style = (
                {"color": "black", "linewidth": 1.8, "alpha": 1.0, "zorder": 4}
                if mle
                else {"color": colors[r.objective]}
            )
            ax.plot(*zip(*[p for _, p in curve], strict=True), **({"linewidth": 0.7, "alpha": 0.45} | style))
        for t, (x, y) in curve if mle else ():
            if t in (grid[0], 1.0, grid[-1]):
                ax.annotate(f"T={t:g}", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
    keys = ("temp/1/forward_kl", "temp/1/reverse_kl") if synthetic else ("temp/1/nll", None)
    errors = {r.objective: tuple(getattr(r, "half", {}).get(k) if k else None for k in keys) for r in runs}
    _scatter(ax, points, colors, "o", errors=errors)
    for x, y, name in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(p[0] for p in points) / 1.3, max(p[0] for p in points) * 1.3)
    ax.set_ylim(min(p[1] for p in points) / 1.5, max(p[1] for p in points) * 1.5)
    names = ("forward KL(P ‖ p_T)", "reverse KL(p_T ‖ P)") if synthetic else ("test NLL at T", "|entropy − NLL| at T")
    ax.set_xlabel(f"{names[0]}, nats/token")
    ax.set_ylabel(f"{names[1]}, nats/token")
    ax.set_title("Each objective at T = 1 against MLE at every temperature (thin: its own curve)", fontsize=10)
    _legends(ax, colors, {}, [Line2D([], [], color="black", linewidth=1.8, label="MLE over temperature")])
    return _save(fig, path)


def sampled_frontier(runs, path: Path) -> Path | None:
    """The sampled quality-diversity frontier (Caccia et al. 2020): MLE's points at every temperature and
    truncation threshold of eval.frontier (one marker per decoding, joined in threshold order) and their lower
    envelope, with every objective's temperature curve; self-BLEU-4 (lower: more diverse) against quality (lower
    better). Means over seeds."""
    from matplotlib.lines import Line2D

    from benchmarks.reporting.frontier import envelope, frontier_points, quality_measure

    mle = next((r for r in runs if r.objective == "mle"), None)
    measure = quality_measure(mle) if mle is not None else None
    if measure is None or not frontier_points(mle):
        return None
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 5.4))
    markers = {}
    for i, (family, points) in enumerate(sorted(frontier_points(mle).items())):
        markers[family] = "os^Dv<>P*X"[i % 10]
        xs, ys = zip(*[points[t] for t in sorted(points)], strict=True)
        ax.plot(xs, ys, color="black", marker=markers[family], markersize=5, linewidth=0.8, zorder=4)
    diversity, best = envelope(frontier_points(mle))
    ax.step(diversity, best, where="post", color="grey", linewidth=2.5, alpha=0.4, zorder=2)
    for r in runs:
        points = frontier_points(r).get("T", {})
        if r.objective != "mle" and len(points) > 1:
            xs, ys = zip(*[points[t] for t in sorted(points)], strict=True)
            ax.plot(xs, ys, color=colors[r.objective], marker="o", markersize=3, linewidth=0.9, zorder=3)
    ax.set_xlabel("self-BLEU-4 (lower: more diverse)")
    ax.set_ylabel(f"{measure[1]} (lower: better)")
    ax.set_title("MLE's decodings (black) and each objective's temperatures", fontsize=10)
    handles = [Line2D([], [], color="black", marker=m, linestyle="-", label=f"MLE, {f}") for f, m in markers.items()]
    handles.append(Line2D([], [], color="grey", linewidth=2.5, alpha=0.4, label="MLE's frontier"))
    _legends(ax, {k: v for k, v in colors.items() if k != "mle"}, {}, handles)
    return _save(fig, path)


def quality_vs_diversity(runs, path: Path) -> Path | None:
    """Per decoding and objective: distinct-4 (diversity) against MAUVE (real text, with the mauve extra) or
    the continuation's NLL under the source (synthetic): the quality-diversity trade-off across decodings."""
    from matplotlib.lines import Line2D

    decodings = sorted({d for r in runs for d in r.decodings})
    mauve = any(f"gen/{d}/mauve" in r.metrics for r in runs for d in decodings)
    y_template, y_label = (
        ("gen/{d}/mauve", "MAUVE against the human continuations (higher is closer)")
        if mauve
        else (
            "gt/{d}/sample_nll",
            "NLL of generated text under the source\n(low = degenerate, near real text = plausible)",
        )
    )
    colors = _colors(runs)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    markers, drawn = {}, []
    for decoding in decodings:
        x_key, y_key = f"gen/{decoding}/distinct_4", y_template.format(d=decoding)
        pts = _points(runs, x_key, y_key)
        if pts:
            markers[decoding] = DECODING_MARKERS.get(decoding, "o")
            errors = _errors(runs, x_key, y_key)
            _scatter(ax, pts, colors, markers[decoding], errors=errors)
            drawn.append((pts, markers[decoding], errors))
    if not markers:
        plt.close(fig)
        return None
    if mauve:  # MAUVE lies in [0, 1]: an interval beyond it is cut at the frame
        ax.set_ylim(-0.03, 1.03)
    _zoom_on_diverse(ax, drawn, colors)
    extra = []
    human_x = next((r.metrics["gen/human/distinct_4"] for r in runs if "gen/human/distinct_4" in r.metrics), None)
    if _finite(human_x):
        ax.axvline(human_x, color="grey", linestyle=":", linewidth=1)
        extra.append(Line2D([], [], color="grey", linestyle=":", label="real text's distinct-4"))
    human_y = next((r.metrics.get("gt/human/sample_nll") for r in runs if "gt/human/sample_nll" in r.metrics), None)
    if not mauve and _finite(human_y):
        ax.axhline(human_y, color="grey", linestyle="--", linewidth=1)
        extra.append(Line2D([], [], color="grey", linestyle="--", label="real text's NLL"))
    ax.set_xlabel("distinct-4 of the continuations (distinct 4-grams / tokens; higher = more diverse)")
    ax.set_ylabel(y_label)
    ax.set_title("Quality vs diversity per decoding (95% intervals over seeds)")
    _legends(ax, colors, markers, extra)
    return _save(fig, path)


def _zoom_on_diverse(ax, drawn, colors, threshold: float = 0.5) -> None:
    """An inset on the points of distinct-4 above ``threshold`` (the sampled decodings), which sit in one
    cluster at the full plot's scale next to the degenerate greedy ones."""
    diverse = [([p for p in pts if p[0] > threshold], m, e) for pts, m, e in drawn]
    diverse = [(pts, m, e) for pts, m, e in diverse if pts]
    points = [p for pts, _, _ in diverse for p in pts]
    if len(points) < 2 or len(points) == sum(len(pts) for pts, _, _ in drawn):
        return
    inset = ax.inset_axes([0.3, 0.12, 0.42, 0.5])
    for pts, marker, _ in diverse:  # means only: the intervals are on the main plot
        _scatter(inset, pts, colors, marker)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    pad_x, pad_y = max(1e-3, 0.15 * (max(xs) - min(xs))), max(1e-3, 0.15 * (max(ys) - min(ys)))
    inset.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    inset.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    inset.tick_params(labelsize=7)
    inset.set_title("the sampled decodings, zoomed (means)", fontsize=7)


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
        calibration_curves(runs, out_dir / "validation_calibration.png"),
        coverage_vs_quality(runs, out_dir / "coverage_vs_quality.png"),
        forward_vs_reverse_kl(runs, out_dir / "forward_vs_reverse_kl.png"),
        temperature_frontier(runs, out_dir / "temperature_frontier.png"),
        sampled_frontier(runs, out_dir / "sampled_frontier.png"),
        quality_vs_diversity(runs, out_dir / "quality_vs_diversity.png"),
        reliability(runs, out_dir / "reliability.png"),
    ]
    return [p for p in plots if p is not None]
