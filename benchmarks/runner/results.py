"""A run's results: the summary it prints, the check that a sweep job already finished, a failed job's record."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.runner.cli import one_line, unwrap
from lit_modules.core.files import atomic_write, atomic_write_json
from objectives.registry import with_knob_defaults

SUMMARY_KEYS = (
    "val/nll",
    "tf/nll",
    "tf/ppl",
    "tf/entropy",
    "tf/ece",
    "tf/acc",
    "gt/entropy_rate",
    "gt/forward_kl",
    "gt/reverse_kl",
)


def versions() -> dict[str, str]:
    import lightning
    import torchmetrics

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "platform": platform.platform(),
    }


def print_summary(results: dict, run_dir: Path) -> None:
    m, t = results["metrics"], results["timing"]
    rows = [(k, m[k]) for k in SUMMARY_KEYS if k in m]
    rows += [(k, v) for k, v in m.items() if k.endswith(("seq_rep_4", "distinct_4", "sample_nll"))]
    width = max(len(k) for k, _ in rows)
    print(
        f"\n{results['objective']}: {t['steps']} steps, {t['train_tokens']:,} tokens, "
        f"train {t['train_s']:.1f}s ({t['tokens_per_s']:,.0f} tok/s, {t['precision']}), eval {t['eval_s']:.1f}s"
    )
    for k, v in rows:
        print(f"  {k:<{width}}  {v:10.4f}")
    print(f"results: {run_dir / 'results.json'}\n")


def finished_results(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The results of an earlier run of the same config in ``run_dir``, if it finished."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    # suite.seeds lists the sweep's seeds, not this job's: a job done for suite.seeds=[1,2,3] is the same
    # job under suite.seeds=[1,2,3,4,5] (make results adds seeds to make bench's runs)
    wanted = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "suite"}
    saved = {k: v for k, v in (results.get("config") or {}).items() if k != "suite"}
    if isinstance(saved.get("objective"), dict):  # a run from before some of its objective's knobs existed
        saved["objective"] = with_knob_defaults(saved["objective"])
    return results if saved == wanted else None


def record_failure(run_dir: Path, objective_name: str, cfg: DictConfig, error: Exception) -> None:
    """A failed job of a sweep: ``failed.json`` with its error line (the report lists it), a line on stderr."""
    inner = unwrap(error)
    line = one_line(error)
    if line is None:
        line = f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
    print(f"error: {objective_name}: {line}", file=sys.stderr)
    atomic_write_json(
        run_dir / "failed.json",
        {"objective": objective_name, "error": line, "config": OmegaConf.to_container(cfg, resolve=True)},
    )


def collect_results(
    config: dict,
    objective_name: str,
    metrics: dict,
    timing: dict,
    evaluated: dict,
    history: dict[str, list],
    init_from: dict | None = None,
) -> dict:
    """results.json's content: the config, the metrics, timing and versions, the reliability bins, the
    validation history (val/nll, and val/entropy and val/ece where measured), and the weights the run started
    from (``init_from``: path, content hash, step; null for random weights)."""
    # every process of a distributed run reads its own data.batch_size rows a step
    data = config["data"]
    train_tokens = timing["steps"] * data["batch_size"] * data["block_size"] * timing.get("world_size", 1)
    return {
        "objective": objective_name,
        "config": config,
        "init_from": init_from,
        "metrics": metrics,
        "timing": {
            "train_s": timing["train_s"],
            "eval_s": timing["eval_s"],
            "train_tokens": train_tokens,
            "tokens_per_s": train_tokens / timing["train_s"],
            "steps": timing["steps"],
            "world_size": timing.get("world_size", 1),
            "precision": timing["precision"],
        },
        "versions": versions(),
        "reliability": evaluated["reliability"],
        "history": history,
    }


def write_run_files(
    run_dir: Path, results: dict, samples: list | None, datamodule, more_samples: dict[str, list] | None = None
) -> None:
    """tokenizer.json (so that samples.jsonl's ids can be read with it alone) with tokenizer_config.json (its
    end-of-text token, as Hugging Face's tokenizers name it), samples.jsonl (and ``more_samples``, {file name:
    records}) and, last, results.json: each written atomically."""
    if getattr(datamodule, "tokenizer", None) is not None:
        atomic_write(run_dir / "tokenizer.json", datamodule.tokenizer.to_str())
        atomic_write_json(run_dir / "tokenizer_config.json", {"eos_token": datamodule.eos})
    if samples is not None:
        write_samples(run_dir / "samples.jsonl", samples)
    for name, records in (more_samples or {}).items():
        write_samples(run_dir / name, records)
    atomic_write_json(run_dir / "results.json", results)


def write_samples(path: Path, samples: list) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in samples))
