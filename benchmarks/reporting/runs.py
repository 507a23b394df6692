"""The runs under a directory, read back: one ``Run`` per results.json (or failed.json of a failed sweep job),
grouped into rows of one objective (and knob setting) over seeds."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.reporting.stats import Interval
from lit_modules.core.configs import config_differences
from lit_modules.core.errors import DataError
from objectives.base import objective_knobs, run_label
from objectives.registry import objective_class, reads_true_source

# Config parts every compared run must share (the seed, and data.seed that follows it, may differ).
SHARED = ("data", "model", "optim", "eval", "trainer.max_steps", "trainer.precision", "trainer.gradient_clip_val")


class Run:
    def __init__(self, path: Path, data: dict, failed: bool = False, samples: str = "samples.jsonl") -> None:
        self.path, self.data, self.failed, self.samples = path, data, failed, samples
        self.config: dict = data.get("config") or {}
        folder = path.parent  # a suite's layout: <objective>/seed_<s>/
        self.objective = data.get("objective", folder.parent.name if folder.name.startswith("seed_") else folder.name)
        self.seed = self.config.get("seed")
        self.metrics: dict[str, float] = data.get("metrics", {})
        self._per_prompt: dict[str, list[float]] | None = None

    @property
    def regime(self) -> str:
        """ "fine-tuning" for a run that started from trained weights (init_from), else "from scratch"."""
        return "fine-tuning" if self.data.get("init_from") else "from scratch"

    @property
    def papers_regimes(self) -> tuple[str, ...]:
        """How the objective's papers train with it (its class's ``papers_regimes``); () when unknown."""
        try:
            return objective_class(self.config["objective"]["_target_"]).papers_regimes
        except Exception:  # a run of an objective this checkout does not have
            return ()

    @functools.cached_property
    def reads_true_source(self) -> bool:
        """Whether its objective read the synthetic source's truth in training (an oracle: a bound, not a method)."""
        return reads_true_source(self.config.get("objective") or {})

    @property
    def decodings(self) -> list[str]:
        return list(self.config.get("eval", {}).get("decodings", []))

    def per_prompt(self) -> dict[str, list[float]]:
        """Per-continuation values from samples.jsonl, by metric name (empty where not saved)."""
        if self._per_prompt is None:
            self._per_prompt = {}
            path = self.path.parent / self.samples
            if path.is_file():
                values: dict[str, list[float]] = defaultdict(list)
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    for key, value in record.get("metrics", {}).items():
                        values[key].append(value)
                self._per_prompt = dict(values)
        return self._per_prompt


def newer(a: Path, b: Path) -> bool:
    """Whether file ``a`` was written after file ``b`` (``b`` absent: True)."""
    return not b.exists() or a.stat().st_mtime > b.stat().st_mtime


UNFINISHED = "unfinished: a checkpoint but no results.json (killed, or still running)"
AT = ("end", "best")  # which model of each run a report compares: the final one, or the best validation step's


def collect(root: Path, at: str = "end") -> list[Run]:
    """Every run below ``root``: a results.json; a failed.json (a failed sweep job), which wins over a results.json
    written before it (a later rerun that failed); a run directory with a checkpoint but neither (a job killed or
    still running), which counts as unfinished. ``at="best"``: each run's model at its lowest validation NLL
    (its results.json's ``at_best``, written with eval.at_best=true) in place of its final one."""
    if not root.is_dir():
        raise DataError(f"{root} is not a directory of runs")
    if at not in AT:
        raise DataError(f"--at {at} is not allowed; use one of: {', '.join(AT)}")
    runs = []
    for path in sorted(root.rglob("results.json")):
        if not newer(path, path.parent / "failed.json"):
            continue  # a later rerun failed: its failed.json is the job's outcome
        data = read_results(path)
        if at == "best":
            runs.append(Run(path, at_best(path, data), samples="samples_at_best.jsonl"))
        else:
            runs.append(Run(path, data))
    for path in sorted(root.rglob("failed.json")):
        if not newer(path, path.parent / "results.json"):
            continue  # a later rerun succeeded
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = {"error": "failed (unreadable failed.json)"}
        if not isinstance(data, dict):
            data = {"error": "failed (failed.json holds no JSON object)"}
        runs.append(Run(path, data, failed=True))
    for checkpoint in sorted(root.rglob("checkpoints/last.ckpt")):
        run_dir = checkpoint.parent.parent
        if not (run_dir / "results.json").exists() and not (run_dir / "failed.json").exists():
            runs.append(unfinished_run(run_dir))
    if not runs:
        raise DataError(f"{root} holds no runs (no results.json or failed.json below it)")
    return runs


def read_results(path: Path) -> dict:
    """A results.json, checked for what the report reads; one DataError naming the file if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise DataError("no metrics")
        bad = [k for k, v in data["metrics"].items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise DataError(f"metric {bad[0]!r} is {data['metrics'][bad[0]]!r}, not a number")
        history = data.get("history", {}).get("val/nll", [])
        if not isinstance(history, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, (int, float)) for x in h) for h in history
        ):
            raise DataError("history/val/nll is not a list of [step, value] pairs")
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path} is not a valid results file ({str(e).splitlines()[0][:80]}); delete it or rerun that job"
        ) from None
    return data


def at_best(path: Path, data: dict) -> dict:
    """A run's results with the metrics of its best validation step's model in place of the final ones."""
    best = data.get("at_best")
    if not isinstance(best, dict) or not isinstance(best.get("metrics"), dict):
        raise DataError(
            f"{path} has no evaluation at its best validation step; rerun it with eval.at_best=true, or report --at end"
        )
    return {**data, "metrics": best["metrics"], "best_step": best.get("step")}


def unfinished_run(run_dir: Path) -> Run:
    """A run directory with a checkpoint and no outcome: the objective and seed from Hydra's saved config."""
    from omegaconf import OmegaConf

    config, objective = {}, run_dir.parent.name if run_dir.name.startswith("seed_") else run_dir.name
    with contextlib.suppress(Exception):  # an unreadable .hydra/ leaves the directory's own names
        config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
        objective = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices.objective
    data = {"objective": objective, "error": UNFINISHED, "config": config}
    return Run(run_dir / "checkpoints" / "last.ckpt", data, failed=True)


def outcome(error: str) -> str:
    """What a job without results came to: "unfinished" (killed, or still running) or "failed"."""
    return "unfinished" if error == UNFINISHED else "failed"


def jobs_by_outcome(rows: Iterable[Row]) -> dict[str, list[str]]:
    """Every job without results, as "objective seed N", by what it came to ("failed", "unfinished")."""
    jobs: dict[str, list[str]] = {"failed": [], "unfinished": []}
    for row in rows:
        for seed, error in sorted(row.failed.items()):
            jobs[outcome(error)].append(f"{row.objective} seed {seed}")
    return jobs


def _pick(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def shared_config(config: dict) -> dict:
    out = {key: _pick(config, key) for key in SHARED}
    if isinstance(out["data"], dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "seed"}
    return out


def check_comparable(runs: list[Run]) -> None:
    """Every finished run shares SHARED, or a ValueError names two runs and what differs."""
    done = [r for r in runs if not r.failed]
    if not done:
        return
    first = shared_config(done[0].config)
    for r in done[1:]:
        diff = [f"{key}: {a!r} vs {b!r}" for key, a, b in config_differences(first, shared_config(r.config))]
        if diff:
            raise DataError(
                f"{done[0].path.parent} and {r.path.parent} were run with different configs "
                f"({'; '.join(diff[:3])}); report them separately"
            )


def _knobs(run: Run, per_seed: frozenset[str] = frozenset()) -> dict:
    """The run's objective knobs; those in ``per_seed`` with the run's seed written back as ``${seed}``."""
    knobs = objective_knobs(run.config.get("objective", {}))
    return {k: _seed_as_placeholder(v, run.seed) if k in per_seed else v for k, v in knobs.items()}


def _seed_as_placeholder(value: object, seed: object) -> object:
    """``runs/x/mle/seed_2`` at seed 2 -> ``runs/x/mle/seed_${seed}``: the value the override was before Hydra
    resolved it (a knob that names the run's own seed, as selective LM's per-seed reference run does)."""
    if not isinstance(value, str) or not isinstance(seed, int):
        return value
    return re.sub(rf"(?<![0-9]){seed}(?![0-9])", "${seed}", value)


def _per_seed_knobs(runs: list[Run]) -> frozenset[str]:
    """The string knobs whose values differ between one objective's runs by the seed they name: one setting run
    at every seed (``objective.reference=runs/x/mle/seed_${seed}``), not one setting per seed. Such a knob has
    fewer distinct values with each run's seed written as ``${seed}``; one that has not (a fixed path that happens
    to hold a seed's digits) is left as it is."""
    knobs = [(_knobs(r), r.seed) for r in runs]
    keys = {k for run_knobs, _ in knobs for k, v in run_knobs.items() if isinstance(v, str)}

    def distinct(key: str, placeholder: bool) -> int:
        return len({_seed_as_placeholder(k.get(key), s) if placeholder else k.get(key) for k, s in knobs})

    return frozenset(k for k in keys if distinct(k, placeholder=True) < distinct(k, placeholder=False))


@dataclass
class Row:
    """One objective (and knob setting): its runs by seed, and what the report computed."""

    objective: str  # the row's name: the objective, with its knobs where one objective has several settings
    base: str  # the objective's name
    runs: dict[int, Run] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)

    # what the plots read, as from one run: means, interval half-widths, decodings, history, reliability
    @property
    def metrics(self) -> dict[str, float]:
        return {k: v.mean for k, v in self.intervals.items()}

    @property
    def half(self) -> dict[str, float]:
        return {k: v.half for k, v in self.intervals.items()}

    @property
    def decodings(self) -> list[str]:
        return next(iter(self.runs.values())).decodings if self.runs else []

    @property
    def oracle(self) -> bool:
        """Whether the row's objective reads the synthetic source's truth in training (``Run.reads_true_source``)."""
        return any(run.reads_true_source for run in self.runs.values())

    @property
    def as_in_papers(self) -> str:
        """Whether this row trains as its objective's papers do (from scratch, or fine-tuning a trained model)."""
        run = next(iter(self.runs.values()), None)
        regimes = run.papers_regimes if run is not None else ()
        if not regimes:
            return "–"
        if run.regime in regimes:
            return "yes"
        start = (run.config.get("objective") or {}).get("start_step")
        if run.regime == "from scratch" and isinstance(start, int) and start > 0:
            return f"in part: MLE to step {start}, then fine-tunes"
        return f"no: {' or '.join(regimes)}"

    @property
    def data(self) -> dict:
        mean_history = {key: self.mean_curve(key) for key in ("val/nll", "val/entropy", "val/ece")}
        bins = [r.data.get("reliability") for r in self.runs.values() if r.data.get("reliability")]
        reliability = {}
        if bins:
            count = np.sum([b["count"] for b in bins], axis=0)
            weighted = {
                k: np.sum([np.multiply(b[k], b["count"]) for b in bins], axis=0) for k in ("confidence", "accuracy")
            }
            reliability = {k: (v / np.maximum(count, 1)).tolist() for k, v in weighted.items()}
            reliability["count"] = count.tolist()
        return {"history": {k: v for k, v in mean_history.items() if v}, "reliability": reliability}

    def mean_curve(self, key: str) -> list[list[float]]:
        """[step, mean over seeds] of a validation curve (val/nll, val/entropy, val/ece), at the steps every run
        has; [] when a run lacks it."""
        histories = [r.data.get("history", {}).get(key) for r in self.runs.values()]
        if not histories or any(not h for h in histories):
            return []
        steps = sorted(set.intersection(*(set(s for s, _ in h) for h in histories)))
        by_step = [dict(map(tuple, h)) for h in histories]
        return [[s, float(np.mean([h[s] for h in by_step]))] for s in steps]


def group(runs: list[Run]) -> dict[str, Row]:
    """Rows by label; one objective with several knob settings gets one row per setting, labelled with the knobs
    in which its settings differ: ``preference (divergence=js_divergence)``."""
    by_objective: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_objective[r.objective].append(r)
    per_seed = {objective: _per_seed_knobs(rs) for objective, rs in by_objective.items()}
    knobs_of = [_knobs(r, per_seed[r.objective]) for r in runs]
    settings: dict[str, list[dict]] = defaultdict(list)
    for r, knobs in zip(runs, knobs_of, strict=True):
        if not r.failed and knobs not in settings[r.objective]:
            settings[r.objective].append(knobs)
    differing = {
        objective: sorted({k for s in knobs for k in s if any(t.get(k) != s[k] for t in knobs)})
        for objective, knobs in settings.items()
    }
    rows: dict[str, Row] = {}
    for r, knobs in zip(runs, knobs_of, strict=True):
        keys = differing.get(r.objective, [])
        label = run_label(r.objective, knobs={k: knobs.get(k) for k in keys}) if keys else r.objective
        row = rows.setdefault(label, Row(label, r.objective))
        seed = r.seed if isinstance(r.seed, int) else -1
        if r.failed:
            row.failed[seed] = r.data.get("error", "?")
        elif seed in row.runs:
            raise DataError(
                f"{row.runs[seed].path.parent} and {r.path.parent} are both {label} at seed {seed}; report one of them"
            )
        else:
            row.runs[seed] = r
    return dict(sorted(rows.items()))


def common_seeds(rows: dict[str, Row]) -> tuple[list[int], list[str]]:
    """Seeds every row finished, and the (row, seed) jobs missing from that full set."""
    done = [row for row in rows.values() if row.runs]
    every = sorted({s for row in rows.values() for s in (*row.runs, *row.failed)})
    common = sorted(set.intersection(*(set(row.runs) for row in done))) if done else []
    missing = []
    for row in rows.values():
        for s in every:
            if s not in row.runs:
                why = outcome(row.failed[s]) if s in row.failed else "absent"
                missing.append(f"{row.objective} seed {s} ({why})")
    return common, missing


def metric_values(row: Row, key: str, seeds: list[int]) -> np.ndarray | None:
    """(S, P) per-prompt values where every seed saved them, else (S,) per-run values; None if absent."""
    runs = [row.runs[s] for s in seeds]
    per_prompt = [r.per_prompt().get(key) for r in runs]
    if all(p is not None for p in per_prompt) and len({len(p) for p in per_prompt}) == 1:
        return np.array(per_prompt, dtype=np.float64)
    values = [r.metrics.get(key) for r in runs]
    if any(v is None for v in values):
        return None
    return np.array(values, dtype=np.float64)
