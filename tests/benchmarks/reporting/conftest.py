"""Runs of known values for the report's tests."""

import json

import pytest


@pytest.fixture
def fake_run():
    """Write a results.json as run.py does, with only what the report reads: fake_run(root, objective, seed, nll)."""

    def fake_run(root, objective, seed, nll, max_steps=450, metrics=None, objective_config=None, **config):
        """A results.json as run.py writes it, with only what the report reads; ``objective_config`` its objective's
        config (a class of its own name in ``objectives/`` unless given)."""
        folder = root / objective / f"seed_{seed}"
        folder.mkdir(parents=True)
        cfg = {
            "seed": seed,
            "objective": objective_config or {"_target_": f"objectives.{objective}.X"},
            "data": {"seed": seed, "block_size": 128},
            "model": {"d_model": 128},
            "optim": {"lr": 0.003},
            "eval": {"decodings": []},
            "trainer": {"max_steps": max_steps, "precision": "auto", "gradient_clip_val": 1.0},
            **config,
        }
        results = {
            "objective": objective,
            "config": cfg,
            "metrics": {"tf/nll": nll, "tf/ppl": 2.718**nll, **(metrics or {})},
            "timing": {"steps": max_steps, "train_tokens": 1000, "train_s": 1.0, "eval_s": 1.0},
            "history": {"val/nll": [[max_steps, nll]]},
        }
        (folder / "results.json").write_text(json.dumps(results))

    return fake_run
