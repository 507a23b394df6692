"""Out-of-distribution evaluation on real text: each file of eval.ood_files, in the run's tokenizer, gets the
teacher-forced metrics of the test split under ood/<its stem>/; bad files and synthetic data are one line each."""

from __future__ import annotations

import torch

from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import build

TEXT = [
    "data=text",
    "data.vocab_size=300",
    "data.block_size=16",
    "eval.prefix_len=4",
    "eval.cont_len=8",
    "eval.mauve=false",
]


def other_corpus(folder):
    path = folder / "manual.txt"
    lines = [f"Section {i}: install the package, then call render() with the options you need." for i in range(40)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_text_run_is_evaluated_on_each_ood_file(tmp_path, text_corpus, run_tiny):
    manual = other_corpus(tmp_path)
    overrides = [
        *TEXT,
        f"data.files=[{text_corpus / 'corpus.txt'}]",
        f"eval.ood_files=[{manual}]",
        "eval.ood_tokens=85",
    ]
    metrics = run_tiny(overrides, tmp_path / "run")["metrics"]
    for metric in ("nll", "entropy", "ece", "rms_ce", "mce", "brier"):
        assert f"ood/manual/{metric}" in metrics
    assert not any(k.startswith("ood/shift") for k in metrics)  # shifts need the synthetic source
    # the NLL of the file's first whole blocks in the run's tokenizer, computed directly from the final model
    datamodule, system = build(plan(compose(["debug=tiny", *overrides]), "mle"))
    datamodule.setup("fit")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model = system.model
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items() if "model." in k})
    blocks, source = datamodule.ood_splits([0.25], [str(manual)], 85)["manual"]
    assert source is None and blocks.shape == (5, 17)  # 85 tokens: 5 rows of block_size + 1
    ids = datamodule.tokenizer.encode(manual.read_text().splitlines()[0]).ids
    assert blocks.flatten()[: len(ids)].tolist() == ids and blocks.flatten()[len(ids)] == datamodule.special_ids()[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = model.hidden(blocks[:, :-1])
    logits = h.float() @ model.output_embedding.float().T + model.output_bias.float()
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), blocks[:, 1:].flatten()).item()
    assert abs(metrics["ood/manual/nll"] - nll) < 1e-3
    assert metrics["ood/manual/nll"] > metrics["tf/nll"]  # another kind of text is harder


def test_bad_ood_files_are_one_line(tmp_path, text_corpus, cli_error):
    text = [*TEXT, f"data.files=[{text_corpus / 'corpus.txt'}]"]
    empty, binary = tmp_path / "empty.txt", tmp_path / "latin1.txt"
    empty.write_text("")
    binary.write_bytes("caf\xe9\n".encode("latin-1"))
    assert f"eval.ood_files: '{empty}' is empty" in cli_error([*text, f"eval.ood_files=[{empty}]"], tmp_path / "a")
    line = cli_error([*text, f"eval.ood_files=[{binary}]"], tmp_path / "b")
    assert f"eval.ood_files: '{binary}' is not UTF-8" in line
    line = cli_error([*text, f"eval.ood_files=[{tmp_path / 'missing.txt'}]"], tmp_path / "c")
    assert "does not exist" in line
    manual = other_corpus(tmp_path)
    line = cli_error([f"eval.ood_files=[{manual}]"], tmp_path / "d")  # debug=tiny: the synthetic source
    assert "eval.ood_files=" in line and "synthetic source" in line
