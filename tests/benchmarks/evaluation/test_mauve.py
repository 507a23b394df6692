"""MAUVE offline: the packaged encoder, its pinned hash, and scores that order sets as they should."""

import numpy as np
import pytest

from benchmarks.evaluation import mauve
from lit_modules.core.errors import ConfigError

needs_extra = pytest.mark.skipif(not mauve.installed(), reason=f"the mauve extra is not installed ({mauve.INSTALL})")

WEATHER = [
    f"The weather on day {i} was cold and windy, with rain in the {w}."
    for i, w in enumerate(["morning", "evening"] * 10)
]
MARKETS = [
    f"Shares of company {i} rose after the bank reported {w} profits." for i, w in enumerate(["strong", "weak"] * 10)
]


@needs_extra
def test_identical_sets_score_higher_than_disjoint_ones():
    weather, markets = mauve.features(WEATHER), mauve.features(MARKETS)
    assert weather.shape == (20, 384)
    assert np.allclose(np.linalg.norm(weather, axis=1), 1.0, atol=1e-5)
    same, same_sd = mauve.mauve_score(weather, weather, seeds=(1, 2))
    apart, _ = mauve.mauve_score(weather, markets, seeds=(1, 2))
    assert same == pytest.approx(1.0, abs=1e-6) and same_sd == pytest.approx(0.0, abs=1e-6)
    assert apart < 0.5


@needs_extra
def test_too_few_continuations_is_one_line():
    few = mauve.features(WEATHER[:4])
    with pytest.raises(ConfigError, match=f"at least {mauve.MIN_TEXTS} generated continuations, got 4"):
        mauve.mauve_score(few, mauve.features(WEATHER))


@needs_extra
def test_a_wrong_encoder_file_is_refused(monkeypatch):
    mauve.encoder.cache_clear()
    monkeypatch.setattr(mauve, "ENCODER_SHA256", "0" * 64)
    try:
        with pytest.raises(ConfigError, match="does not match the pinned 0000"):
            mauve.encoder()
    finally:
        mauve.encoder.cache_clear()


def test_without_the_extra_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mauve, "installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[mauve\]'"):
        mauve.require()


@needs_extra
def test_the_curve_over_numbers_of_continuations_and_seeds(tmp_path, capsys):
    """score.py --mauve-sizes: MAUVE at each n of each file's continuations, its mean and interval over the files;
    a copy of the human text scores 1, another topic far less; sizes above the files' rows are left out."""
    import json

    from benchmarks.score import main

    files = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        other = [MARKETS[i] for i in rng.permutation(20)]
        records = [*(("human", t) for t in WEATHER), *(("copy", t) for t in WEATHER), *(("other", t) for t in other)]
        path = tmp_path / f"seed_{seed}.jsonl"
        path.write_text(
            "".join(json.dumps({"decoding": d, "continuation": [1, 2, 3], "text": t}) + "\n" for d, t in records)
        )
        files.append(str(path))
    assert main([*files, "--mauve-sizes", "10,20,64", "--json", str(tmp_path / "curve.json")]) == 0
    curve = json.loads((tmp_path / "curve.json").read_text())["mauve_curve"]
    assert set(curve["copy"]) == set(curve["other"]) == {"10", "20"}  # 64 > the 20 rows: left out
    assert curve["copy"]["20"] == pytest.approx([1.0, 1.0], abs=1e-6)  # at 10, one k-means bucket: MAUVE is coarse
    assert all(min(curve["copy"][n]) > max(curve["other"][n]) + 0.5 for n in ("10", "20"))
    assert "other        n=20" in capsys.readouterr().out
