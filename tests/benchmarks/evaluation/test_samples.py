"""score.py: saved continuations scored again; malformed samples are one line naming their line."""

import json

import pytest


def test_score_malformed_line_names_its_number(tmp_path, capsys):
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    good = json.dumps({"decoding": "greedy", "continuation": [1, 2, 3]})
    path.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f'error: {path}:3: malformed sample; expected a JSON object with "decoding" (a name), "continuation" (a '
        "list of at least 2 token ids, integers in [0, 2^31)) and numbers for entropy, sample_nll, copy_rate_8 "
        "where present"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"continuation": [1, -2, 3]},
        {"continuation": [1, True, 3]},
        {"continuation": []},
        {"continuation": [5]},
        {"continuation": [1, 10**30]},
        {"continuation": [1, 2, 3], "entropy": "high"},
    ],
    ids=["negative id", "boolean id", "empty", "one token", "huge id", "text entropy"],
)
def test_score_refuses_bad_ids_and_values_in_one_line(bad, tmp_path, capsys):
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps({"decoding": "greedy", "continuation": [1, 2, 3]})
        + "\n"
        + json.dumps({"decoding": "greedy", **bad})
        + "\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {path}:2: malformed sample")


def test_score_json_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"decoding": "greedy", "continuation": [1, 2, 3, 1]}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--json", str(path / "s.json")])  # under a file: no directory can be made there
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --json {path / 's.json'}: cannot write it (")
    assert len(err.splitlines()) == 1


def test_score_says_how_many_samples_of_which_decodings_it_read(tmp_path, capsys):
    """A truncated samples.jsonl (whole lines cut off) is scored, and the count per decoding is printed, with a
    word when the decodings' counts differ (was: metrics of 3 samples with no word of it). Continuations shorter
    than an n-gram (2 tokens: no 3- or 4-grams) are scored too (was: a RuntimeError from unfold)."""
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    lines = [{"decoding": "greedy", "continuation": [1, 2, 3, 1]}] * 3 + [{"decoding": "top_p", "continuation": [4, 5]}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: 4 samples (greedy 3, top_p 1)"
    assert "different counts" in out[1]
