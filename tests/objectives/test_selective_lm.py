"""Selective language modelling (Rho-1): the mean NLL of the top share of tokens by excess loss over the true source
(the oracle) or a reference model read from a checkpoint; MLE at ratio 1 and before its start step; one-line
errors for a reference it cannot use."""

import math

import pytest
import torch

from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.synthetic import HMMSource, SourceConfig
from objectives.base import KnobError, ObjectiveContext
from objectives.mle import MLE
from objectives.selective_lm import SelectiveLM

V = 23


def selected_mean(model, batch, reference_nll: torch.Tensor, ratio: float) -> torch.Tensor:
    """The paper's L_SLM, written out: the top ratio·N tokens by ℓ_θ − ℓ_ref, their NLL summed over that count."""
    logp = model(batch[:, :-1]).float().log_softmax(-1)
    nll = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1)
    k = math.ceil(ratio * nll.numel())
    top = (nll.detach() - reference_nll).flatten().topk(k).indices
    return nll.flatten()[top].sum() / k


def test_with_the_oracle_it_is_the_papers_loss_on_the_true_sources_excess(model, batch, assert_same_gradients):
    source = HMMSource(SourceConfig(vocab_size=V, n_states=4, emit=4, seed=5))
    objective = SelectiveLM(ratio=0.4, start_step=0)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    out = objective(model, batch, 0)
    true_nll = -source.log_conditionals(batch, torch.float64).gather(-1, batch[..., None]).squeeze(-1)[:, 1:]
    expected = selected_mean(model, batch, true_nll.float(), 0.4)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert_same_gradients(model, out.loss, expected)
    everything = SelectiveLM(ratio=1.0, start_step=0)
    everything.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    assert everything(model, batch, 0).loss.item() == pytest.approx(MLE()(model, batch, 0).loss.item(), rel=1e-6)
    late = SelectiveLM(ratio=0.4, start_step=2)
    late.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    assert late(model, batch, 1).loss.item() == pytest.approx(MLE()(model, batch, 1).loss.item(), rel=1e-6)


def save_checkpoint(path, model: GPT) -> None:
    """An objbench run's checkpoint as read_start_weights reads it: model.* weights and the model settings."""
    settings = {k: getattr(model.cfg, k) for k in ("vocab_size", "context", "n_layer", "n_head", "d_model")}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": settings}, "global_step": 7}, path)


def test_a_reference_model_from_a_checkpoint_scores_the_excess(tmp_path, model, batch, assert_same_gradients):
    torch.manual_seed(3)
    reference = GPT(GPTConfig(vocab_size=V, context=32, n_layer=2, n_head=2, d_model=8))  # another shape
    save_checkpoint(tmp_path / "ref.ckpt", reference)
    objective = SelectiveLM(ratio=0.5, reference=str(tmp_path / "ref.ckpt"), start_step=0)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    out = objective(model, batch, 0)
    with torch.no_grad():
        reference_nll = reference.nll(reference.hidden(batch[:, :-1]), batch[:, 1:]).float()
    expected = selected_mean(model, batch, reference_nll, 0.5)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert_same_gradients(model, out.loss, expected)
    assert not any(name.startswith("_reference") for name in objective.state_dict())  # not in checkpoints


def test_a_reference_it_cannot_use_is_one_line(tmp_path, model):
    with pytest.raises(KnobError, match=r"objective.reference=oracle needs the true source \(data=synthetic\)"):
        SelectiveLM().setup(model, ObjectiveContext(vocab_size=V, context=32))
    with pytest.raises(KnobError, match="objective.reference=/no/such/run does not exist"):
        SelectiveLM(reference="/no/such/run").setup(model, ObjectiveContext(vocab_size=V, context=32))
    save_checkpoint(tmp_path / "other.ckpt", GPT(GPTConfig(vocab_size=31, context=32, n_layer=1, n_head=2, d_model=8)))
    with pytest.raises(KnobError, match="has a vocabulary of 31 tokens, this run's data 23"):
        SelectiveLM(reference=str(tmp_path / "other.ckpt")).setup(model, ObjectiveContext(vocab_size=V, context=32))
    for knob, value in (("ratio", 0.0), ("ratio", 1.5), ("reference", "")):
        with pytest.raises(KnobError, match=f"objective.{knob}="):
            SelectiveLM(**{knob: value})
