"""The report's Markdown tables: cells as mean ± half-width, the best value of a column in bold where its
interval separates it from the runner-up's, differences from MLE with a † where Holm's correction keeps them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from benchmarks.reporting.runs import Row
from benchmarks.reporting.stats import Interval

BASELINE = "mle"
# Columns: (metric key or template with {d} = decoding, header, how "best" is judged)
#   "min": lowest; "max": highest; "human": closest to the human (real-text) row; "source": closest to the
#   entropy rate.
MODEL_COLUMNS = [
    ("tf/nll", "NLL", "min"),
    ("tf/entropy", "entropy", "source"),
    ("tf/ece", "ECE", "min"),
    ("tf/brier", "Brier", "min"),
    ("tf/abs_log_z", "\\|log Z\\|", "min"),
    ("gt/forward_kl", "KL(P‖p)", "min"),
    ("gt/reverse_kl", "KL(p‖P)", "min"),
]
# NLL and ECE of the tokens whose gold token is frequent / middle / rare in the train split (teacher_forced.py)
FREQUENCY_COLUMNS = [
    (f"tf/{metric}_{bucket}", f"{header} {bucket}", "min")
    for metric, header in (("nll", "NLL"), ("ece", "ECE"))
    for bucket in ("frequent", "middle", "rare")
]
# each shifted split (ood/<split>/...): its teacher-forced metrics and the exact KLs to the shifted source
OOD_COLUMNS = [
    ("nll", "NLL", "min"),
    ("entropy", "entropy", "source"),
    ("ece", "ECE", "min"),
    ("brier", "Brier", "min"),
    ("forward_kl", "KL(P′‖p)", "min"),
    ("reverse_kl", "KL(p‖P′)", "min"),
    ("ts_nll", "NLL at fitted T", "min"),  # at the temperature fitted on in-distribution validation NLL
    ("ts_ece", "ECE at fitted T", "min"),
    ("cont_entropy", "cont. entropy", "source"),  # sampled continuations of the split's prompts (evaluate.py)
    ("cont_true_nll", "cont. true NLL", "source"),
    ("cont_seq_rep_4", "cont. seq-rep-4", "min"),
]
# the train split's canaries (mem/<measure>_x<insertions>): exposure in bits, the share greedy decoding extracts
MEMORISATION_MEASURES = [("exposure", "exposure (bits)"), ("extracted", "extracted")]
DECODING_COLUMNS = [
    ("gen/{d}/seq_rep_4", "seq-rep-4", "human"),
    ("gen/{d}/distinct_4", "distinct-4", "human"),
    ("gen/{d}/self_bleu_4", "self-BLEU-4", "human"),
    ("gt/{d}/sample_nll", "sample NLL", "human"),
    ("gen/{d}/mauve", "MAUVE", "max"),  # real text with the mauve extra: per run, over the k-means seeds' mean
]


@dataclass
class Differences:
    """Paired differences from MLE by (row, metric), and the cells significant after Holm's correction."""

    deltas: dict[tuple[str, str], Interval]
    adjusted: dict[tuple[str, str], float]
    significant: set[tuple[str, str]]
    families: dict[str, int] = field(default_factory=dict)  # cells of each Holm family

    def cell(self, label: str, key: str) -> str:
        d = self.deltas.get((label, key))
        return "–" if d is None else fmt_interval(d, signed=True) + (" †" if (label, key) in self.significant else "")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_interval(interval: Interval | None, signed: bool = False) -> str:
    if interval is None or not math.isfinite(interval.mean):
        return "–"
    mean = f"{interval.mean:+.3f}" if signed else fmt(interval.mean)
    return mean if not math.isfinite(interval.half) else f"{mean} ± {fmt(interval.half)}"


def best_label(cells: dict[str, Interval], rule: str, target: float | None) -> str | None:
    """The best row by mean, if its interval separates it from the runner-up's; else None."""

    def distance(v: float) -> float:
        return {"min": v, "max": -v}.get(rule, abs(v - target) if target is not None else 0.0)

    def worst_case(i: Interval) -> tuple[float, float]:  # (best, worst) distance over the interval
        if rule == "min":
            return i.low, i.high
        if rule == "max":
            return -i.high, -i.low
        near = 0.0 if i.low <= target <= i.high else min(abs(i.low - target), abs(i.high - target))
        return near, max(abs(i.low - target), abs(i.high - target))

    if rule not in ("min", "max") and target is None:
        return None
    ranked = sorted((distance(i.mean), label) for label, i in cells.items() if math.isfinite(i.mean))
    if len(ranked) < 2:
        return None
    first, second = cells[ranked[0][1]], cells[ranked[1][1]]
    if not (math.isfinite(first.half) and math.isfinite(second.half)):
        return None
    return ranked[0][1] if worst_case(first)[1] < worst_case(second)[0] else None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _bold_best(done: dict[str, Row], key: str, rule: str, target: float | None) -> str | None:
    return best_label({label: row.intervals[key] for label, row in done.items() if key in row.intervals}, rule, target)


def model_table(done: dict[str, Row], failed: dict[str, Row], seeds: list[int], entropy_rate: float | None) -> str:
    """Teacher-forced and ground-truth metrics: one row per objective, the source's row, failed rows."""
    columns = model_columns(done)
    best = {key: _bold_best(done, key, rule, entropy_rate) for key, _, rule in columns}
    table = []
    for label, row in done.items():
        cells = row_cells(label, row, columns, best)
        nll = [row.runs[s].metrics.get("tf/nll") for s in seeds]
        spread = float(np.std(nll, ddof=1)) if len(nll) > 1 and None not in nll else float("nan")
        walls = [r.data.get("timing", {}) for r in row.runs.values()]
        wall = np.mean([t.get("train_s", 0) + t.get("eval_s", 0) for t in walls])
        table.append([label, *cells, fmt(spread, 3), f"{wall:.0f} s", row.as_in_papers])
    if entropy_rate is not None and columns:
        source = {"tf/entropy": fmt(entropy_rate), "gt/forward_kl": "0", "gt/reverse_kl": "0"}
        source["tf/nll"] = fmt(entropy_rate)
        table.append(["*source*", *[source.get(key, "–") for key, _, _ in columns], "–", "–", "–"])
    for label, row in failed.items():
        table.append([label, f"**failed**: {next(iter(row.failed.values()))}"] + [""] * (len(columns) + 2))
    header = ["objective", *[h for _, h, _ in columns], "NLL sd", "wall", "as in its papers"]
    return "### Teacher-forced and ground truth (test split)\n\n" + markdown_table(header, table)


def row_cells(label: str, row: Row, columns: list[tuple[str, str, str]], best: dict[str, str | None]) -> list[str]:
    """A row's cells of these columns: mean ± half-width, in bold where the row is the column's best."""
    cells = []
    for key, _, _ in columns:
        text = fmt_interval(row.intervals.get(key))
        cells.append(f"**{text}**" if best.get(key) == label else text)
    return cells


def present(columns: list[tuple[str, str, str]], done: dict[str, Row]) -> list[tuple[str, str, str]]:
    """The columns some row has a value of."""
    return [c for c in columns if any(c[0] in row.intervals for row in done.values())]


def model_columns(done: dict[str, Row]) -> list[tuple[str, str, str]]:
    return present(MODEL_COLUMNS, done)


def shifted_tables(done: dict[str, Row], differences: Differences) -> list[str]:
    """Per out-of-distribution split (a shifted source, another corpus): its teacher-forced metrics and, for a
    shifted source, the exact KLs, each with its difference from MLE."""
    splits = sorted({key.split("/")[1] for row in done.values() for key in row.intervals if key.startswith("ood/")})
    tables = []
    for split in splits:
        columns = present([(f"ood/{split}/{m}", h, rule) for m, h, rule in OOD_COLUMNS], done)
        key = f"ood/{split}/entropy_rate"  # the shifted source's, the same in every run
        rate = next((r.metrics[key] for row in done.values() for r in row.runs.values() if key in r.metrics), None)
        table = delta_rows(done, columns, differences, rate)
        if rate is not None:
            reference = {"nll": fmt(rate), "entropy": fmt(rate), "forward_kl": "0", "reverse_kl": "0"}
            reference |= {"cont_true_nll": fmt(rate), "cont_entropy": fmt(rate)}
            table.append(["*shifted source*", *[reference.get(key.split("/")[2], "–") for key, _, _ in columns]])
        if split.startswith("shift"):
            rho = split.removeprefix("shift")
            title = f"the source shifted by ρ = {rho}"
            about = (
                f"Test text of the synthetic source with every transition and emission row mixed {rho} of the way "
                "toward another seeded source (docs/regimes.md); KL(P′‖p) and KL(p‖P′) are exact, to that shifted "
                "source P′; cont.: the model's sampled continuations of the split's prompts, its entropy along them "
                "and their NLL under P′ (a calibrated model's two are equal)"
            )
        else:
            title = f"{split} (another corpus)"
            about = (
                f"Text of another kind than the training corpus (eval.ood_files: {split}), in the run's tokenizer; "
                "a calibrated model's entropy equals its NLL there too; cont.: the model's sampled continuations of "
                "the file's prompts"
            )
        tables.append(
            f"### Out of distribution: {title}\n\n{about}; in brackets the difference from MLE, paired by seed (Holm "
            "within the shifted tables' family).\n\n" + with_headers(table, columns)
        )
    return tables


def delta_rows(
    done: dict[str, Row], columns: list[tuple[str, str, str]], differences: Differences, rate: float | None = None
) -> list[list[str]]:
    """A row per objective: its cells with the best of each column in bold (``rate``: the entropy rate a "source"
    column is judged against), each followed by its difference from MLE."""
    best = {key: _bold_best(done, key, rule, rate) for key, _, rule in columns}
    return [[label, *with_deltas(label, row, columns, best, differences)] for label, row in done.items()]


def with_headers(table: list[list[str]], columns: list[tuple[str, str, str]]) -> str:
    return markdown_table(["objective", *[h for _, h, _ in columns]], table)


def with_deltas(
    label: str, row: Row, columns: list[tuple[str, str, str]], best: dict[str, str | None], differences: Differences
) -> list[str]:
    """A row's cells, each followed by its difference from MLE in brackets (MLE's own row: the cells alone)."""
    cells = row_cells(label, row, columns, best)
    if label == BASELINE:
        return cells
    return [f"{cell} ({differences.cell(label, key)})" for cell, (key, _, _) in zip(cells, columns, strict=True)]


def frequency_table(done: dict[str, Row], differences: Differences) -> str | None:
    """NLL and ECE by the gold token's frequency in the train split, each with its difference from MLE."""
    columns = present(FREQUENCY_COLUMNS, done)
    if not columns:
        return None
    return (
        "### By the gold token's frequency in the train split\n\nThe test tokens whose gold token is frequent (the "
        "most frequent types, covering half of the train tokens), middle (the next 40%) or rare (the last 10%, and "
        "types never seen); in brackets the difference from MLE, paired by seed.\n\n"
        + with_headers(delta_rows(done, columns, differences), columns)
    )


def memorisation_keys(done: dict[str, Row]) -> list[str]:
    """The canary metrics (mem/<measure>_x<c>) some run has: every measure, insertion counts ascending."""
    present = {k for row in done.values() for r in row.runs.values() for k in r.metrics if k.startswith("mem/")}
    counts = sorted({int(k.rsplit("_x", 1)[1]) for k in present if "_x" in k})
    keys = [f"mem/{measure}_x{c}" for measure, _ in MEMORISATION_MEASURES for c in counts]
    return [k for k in keys if k in present]


def memorisation_tables(done: dict[str, Row], differences: Differences) -> list[str]:
    """Per measure (exposure, extraction): a column per insertion count, each with its difference from MLE."""
    keys = memorisation_keys(done)
    tables = []
    for measure, title in MEMORISATION_MEASURES:
        columns = [(k, f"×{k.rsplit('_x', 1)[1]}", "min") for k in keys if k.startswith(f"mem/{measure}_x")]
        columns = present(columns, done)
        if not columns:
            continue
        about = (
            "exposure of the canaries inserted that many times into the train split (Carlini et al. 2019; bits, "
            "extrapolated from a skew-normal fit to never-inserted reference sequences; about 1.4 for a sequence "
            "never seen)"
            if measure == "exposure"
            else "share of the canaries inserted that many times whose second part greedy decoding reproduces from "
            "their first"
        )
        tables.append(
            f"### Memorisation: {title}\n\nBy insertions: the {about}; in brackets the difference from MLE, paired "
            "by seed (Holm within the memorisation family).\n\n"
            + with_headers(delta_rows(done, columns, differences), columns)
        )
    return tables


def generation_columns(done: dict[str, Row], decodings: list[str]) -> list[tuple[str, str, str]]:
    return [
        c
        for c in DECODING_COLUMNS
        if any(c[0].format(d=d) in row.intervals for row in done.values() for d in decodings)
    ]


def generation_table(done: dict[str, Row], decodings: list[str]) -> str | None:
    """Generation metrics: one row per (objective, decoding), and the human continuations' row."""
    columns = generation_columns(done, decodings)
    if not columns:
        return None
    human_row = done.get(BASELINE) or next(iter(done.values()), None)
    human = {key: human_row.intervals.get(key.format(d="human")) for key, _, _ in columns} if human_row else {}
    best = {}
    for d in decodings:
        for key, _, rule in columns:
            target = human.get(key).mean if human.get(key) is not None else None
            best[key.format(d=d)] = _bold_best(done, key.format(d=d), rule, target)
    table = []
    for label, row in done.items():
        for d in decodings:
            cells = []
            for key, _, _ in columns:
                text = fmt_interval(row.intervals.get(key.format(d=d)))
                cells.append(f"**{text}**" if best.get(key.format(d=d)) == label else text)
            table.append([label, d, *cells])
    table.append(["*human*", "real text", *[fmt(human[key].mean) if human.get(key) else "–" for key, _, _ in columns]])
    header = ["objective", "decoding", *[h for _, h, _ in columns]]
    return "### Generation (continuations of held-out prompts)\n\n" + markdown_table(header, table)


def difference_tables(done: dict[str, Row], decodings: list[str], differences: Differences) -> list[str]:
    """Differences from MLE paired by seed (and by prompt for generation metrics)."""
    if BASELINE not in done or len(done) == 1:
        return []
    others = [label for label in done if label != BASELINE]
    columns, gen_columns = model_columns(done), generation_columns(done, decodings)
    table = [[label, *[differences.cell(label, key) for key, _, _ in columns]] for label in others]
    parts = [
        "### Difference from MLE (paired by seed)\n\n"
        + markdown_table(["objective", *[f"Δ {h}" for _, h, _ in columns]], table)
    ]
    table = [
        [label, d, *[differences.cell(label, key.format(d=d)) for key, _, _ in gen_columns]]
        for label in others
        for d in decodings
    ]
    if table and gen_columns:
        parts.append(
            "### Generation: difference from MLE (paired by seed and prompt)\n\n"
            + markdown_table(["objective", "decoding", *[f"Δ {h}" for _, h, _ in gen_columns]], table)
        )
    return parts


HEADLINE_MODEL = [("tf/nll", "NLL"), ("tf/entropy", "entropy"), ("tf/ece", "ECE")]
HEADLINE_GENERATION = ("gen/greedy/seq_rep_4", "greedy seq-rep-4")


def headline_table(done: dict[str, Row], differences: Differences, entropy_rate: float | None) -> str | None:
    """The README's table: per objective its NLL, entropy and ECE, greedy text's repetition, and the NLL and
    repetition differences from MLE; the source's and the human continuations' rows for reference."""
    if not done:
        return None
    rep_key, rep_header = HEADLINE_GENERATION
    has_rep = any(rep_key in row.intervals for row in done.values())
    header = ["objective", *[h for _, h in HEADLINE_MODEL], "Δ NLL"] + ([rep_header, f"Δ {rep_header}"] * has_rep)
    table = []
    for label, row in done.items():
        cells = [fmt_interval(row.intervals.get(key)) for key, _ in HEADLINE_MODEL]
        cells.append("–" if label == BASELINE else differences.cell(label, "tf/nll"))
        if has_rep:
            cells += [
                fmt_interval(row.intervals.get(rep_key)),
                "–" if label == BASELINE else differences.cell(label, rep_key),
            ]
        table.append([label, *cells])
    if entropy_rate is not None:
        table.append(["*source*", fmt(entropy_rate), fmt(entropy_rate), "–", "–"] + ["–", "–"] * has_rep)
    human = done.get(BASELINE, next(iter(done.values()))).intervals.get("gen/human/seq_rep_4")
    if has_rep and human is not None:
        table.append(["*human text*", "–", "–", "–", "–", fmt(human.mean), "–"])
    return markdown_table(header, table)
