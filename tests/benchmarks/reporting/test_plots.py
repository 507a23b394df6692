"""The report's plots: the KL plot draws every objective at its mean with its interval both ways."""

import benchmarks.reporting.plots as plots
from benchmarks.reporting.report import build
from benchmarks.reporting.runs import collect


def test_forward_vs_reverse_kl_plot_has_every_objective_with_its_interval(tmp_path, monkeypatch, fake_run):
    """One point per objective at its mean (forward KL, reverse KL) over seeds, with 95% error bars both
    ways, and MLE's two KLs as dashed lines."""
    kls = {"mle": (0.30, 0.20), "label_smoothing": (0.25, 0.35), "tailr": (0.50, 0.10)}
    for seed in (1, 2, 3):
        for objective, (forward, reverse) in kls.items():
            metrics = {"gt/forward_kl": forward + 0.01 * seed, "gt/reverse_kl": reverse - 0.01 * seed}
            fake_run(tmp_path, objective, seed, 5.0, metrics=metrics)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    rows = [row for row in build(collect(tmp_path)).rows.values() if row.runs]
    assert plots.forward_vs_reverse_kl(rows, tmp_path / "kl.png") == tmp_path / "kl.png"
    ax = figures[0].axes[0]
    points = sorted(
        tuple(round(float(v), 4) for v in c.get_offsets()[0])
        for c in ax.collections
        if type(c).__name__ == "PathCollection"
    )
    assert points == [(0.27, 0.33), (0.32, 0.18), (0.52, 0.08)]
    error_bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert len(error_bars) == 2 * len(kls)  # x and y bars for every objective
    half = error_bars[0].get_segments()[0]
    assert abs(half[1] - half[0]).max() > 0.02  # a t-interval over 3 seeds of spread 0.01 is wider than ±0.01
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert (
        sorted(round(float(line.get_xdata()[0]), 4) for line in dashed if line.get_xdata()[0] == line.get_xdata()[1])[0]
        == 0.32
    )
