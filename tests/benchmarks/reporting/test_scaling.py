"""The scaling sweep's fit: a known L(N) = E + A·N^(−α) is recovered from runs laid out as suite=scaling writes
them; too few sizes is one line; the CPU sweep spans 0.1M-10M, its GPU preset 0.1M-85M on one pass of its data."""

import json

import pytest
from omegaconf import OmegaConf

from benchmarks.reporting.scaling import fit_power_law, non_embedding_params, power_law
from benchmarks.runner.config import CONFIG_DIR, available, compose, load_option
from benchmarks.scaling import main


def scale_models() -> dict[str, dict]:
    return {n: load_option("model", n) for n in available("model") if n.startswith("scale_")}


def swept_models(suite: str) -> list[str]:
    return OmegaConf.load(CONFIG_DIR / "suite" / f"{suite}.yaml").hydra.sweeper.params.model.split(",")


def test_the_sweep_runs_from_about_0_1m_to_10m_parameters_and_its_gpu_preset_to_85m():
    models = scale_models()
    assert set(swept_models("scaling")) | set(swept_models("scaling_gpu")) == set(models)  # no preset unused
    for suite, smallest, largest in [("scaling", 2.5e4, 1.06e7), ("scaling_gpu", 1.0e5, 8.5e7)]:
        sizes = sorted(non_embedding_params(models[m]) for m in swept_models(suite))
        assert len(sizes) >= 4 and sizes == sorted(set(sizes))
        assert sizes[0] == pytest.approx(smallest, rel=0.1) and sizes[-1] == pytest.approx(largest, rel=0.1)


def test_the_gpu_preset_trains_on_one_pass_of_its_data():
    cfg = compose(["suite=scaling_gpu"])
    trained = cfg.trainer.max_steps * cfg.data.batch_size * (cfg.data.block_size + 1)
    assert trained <= cfg.data.train_tokens < 1.05 * trained  # no block seen twice, little sampled for nothing
    assert {scale_models()[m]["context"] for m in swept_models("scaling_gpu")} == {cfg.data.block_size}


def fake_scaling_runs(root, objective, floor, scale, alpha, rate=3.179):
    for name in swept_models("scaling"):
        model = scale_models()[name]
        n = non_embedding_params(model)
        folder = root / objective / name / "seed_1"
        folder.mkdir(parents=True)
        metrics = {"tf/nll": float(power_law(n, floor, scale, alpha)), "gt/entropy_rate": rate}
        results = {"objective": objective, "config": {"seed": 1, "model": model}, "metrics": metrics,
                   "history": {"val/nll": []}}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(results))


def test_a_known_power_law_is_recovered(tmp_path):
    fake_scaling_runs(tmp_path, "mle", 3.25, 40.0, 0.35)
    fake_scaling_runs(tmp_path, "label_smoothing", 3.40, 25.0, 0.30)
    assert main([str(tmp_path)]) == 0
    table = (tmp_path / "scaling.md").read_text()
    assert "| mle | 5 | 3.250 ± 0.000 | 0.350 ± 0.000 | 40 | +0.071 |" in table
    assert "| label_smoothing | 5 | 3.400 ± 0.000 | 0.300 ± 0.000 | 25 | +0.221 |" in table
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


def test_noisy_points_give_standard_errors():
    sizes = [2.5e4, 1e5, 8e5, 3.2e6, 1.06e7]
    losses = [power_law(n, 3.3, 30.0, 0.3) + e for n, e in zip(sizes, [0.01, -0.01, 0.005, -0.004, 0.003], strict=True)]
    fit = fit_power_law(sizes, losses)
    assert abs(fit.floor - 3.3) < 0.1 and fit.floor_se > 0 and fit.alpha_se > 0


def test_too_few_sizes_is_an_error():
    with pytest.raises(ValueError, match="needs at least 4 model sizes, got 3"):
        fit_power_law([1e5, 1e6, 1e7], [4.0, 3.6, 3.4])
