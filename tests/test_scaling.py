"""The scaling sweep's fit: a known L(N) = E + A·N^(−α) is recovered from runs laid out as suite=scaling writes
them; too few sizes is one line; every scale_* model preset is in the sweep and they span 0.1M-10M."""

import json

import pytest
from omegaconf import OmegaConf

from benchmarks.cli import CONFIG_DIR, available
from benchmarks.scaling import fit_power_law, main, non_embedding_params, power_law


def scale_models() -> dict[str, dict]:
    return {n: OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / f"{n}.yaml"))
            for n in available("model") if n.startswith("scale_")}  # fmt: skip


def test_the_sweep_runs_every_scale_preset_from_about_0_1m_to_10m_parameters():
    sweep = OmegaConf.load(CONFIG_DIR / "suite" / "scaling.yaml").hydra.sweeper.params.model.split(",")
    assert sorted(sweep) == sorted(scale_models())
    sizes = sorted(non_embedding_params(m) for m in scale_models().values())
    assert len(sizes) >= 4 and sizes[1] <= 1.2e5 and sizes[-1] >= 1e7


def fake_scaling_runs(root, objective, floor, scale, alpha, rate=3.179):
    for name, model in scale_models().items():
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
