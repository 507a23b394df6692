"""Minimum risk training (Shen et al. 2016; the sequence-level risk of Edunov et al. 2018).

For each prefix x of the batch, K candidate continuations y_1..y_K are sampled from the model, and

    Q(y_k) = p(y_k | x)^α / Σ_j p(y_j | x)^α          (the model's distribution, sharpened by α, over the candidates)
    risk   = Σ_k Q(y_k) · cost(y_k)                     (mean over prefixes)
    loss   = risk + λ · NLL(batch)

cost "bleu": 1 − sentence BLEU-4 of y_k against the real continuation (token ids; Lin & Och 2004 smoothing);
cost "oracle_nll": the continuation's mean per-token NLL under the true source, −(1/C) Σ_t log P(y_t | x, y_<t):
an oracle utility, only on the synthetic source, whose conditionals are known. ∂risk/∂log p(y_k) =
α·Q(y_k)·(cost(y_k) − risk): candidates cheaper than the expected cost gain probability. It fine-tunes an MLE
model (as both papers do): plain MLE before ``start_step``.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_modules.core.decoding import DecodingConfig, generate
from objectives.base import (
    FineTuning,
    LossOutput,
    ObjectiveContext,
    check_batch_room,
    check_knob,
    check_prefix_fits,
    split_batch,
)

COSTS = ("bleu", "oracle_nll")
BLEU_ORDER = 4


def ngram_ids(seqs: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(N, L) token ids -> (N, L − n + 1) one integer per n-gram (base-``vocab_size`` digits; exact in int64 up
    to vocab_size^n < 2^63)."""
    grams = seqs.unfold(1, n, 1)  # (N, G, n)
    weights = vocab_size ** torch.arange(n - 1, -1, -1, device=seqs.device, dtype=torch.int64)
    return (grams * weights).sum(-1)


def sentence_bleu(hypotheses: torch.Tensor, references: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Sentence BLEU-4 of each row of ``hypotheses`` (N, L) against the same row of ``references`` (N, R) -> (N,).

    Clipped n-gram precisions p_n (matches m_n over hypothesis n-grams c_n), uniform weights; smoothing of Lin &
    Och (2004): p_n = (m_n + 1)/(c_n + 1) for n ≥ 2; BLEU 0 without a unigram match; brevity penalty
    exp(1 − R/L) when L < R. (torchmetrics' ``bleu_score(smooth=True)`` smooths the same way but returns 0 as soon
    as any order has no match, which would make most candidates' cost 1; and it reads strings one sentence at a
    time, where this counts a whole batch of token ids at once.)
    """
    N, L = hypotheses.shape
    log_precision = torch.zeros(N, dtype=torch.float64, device=hypotheses.device)
    unigram_matches = None
    for n in range(1, BLEU_ORDER + 1):
        c = max(L - n + 1, 0)
        if c == 0 or references.shape[1] < n:
            matches = torch.zeros(N, dtype=torch.float64, device=hypotheses.device)
        else:
            hyp, ref = ngram_ids(hypotheses, n, vocab_size), ngram_ids(references, n, vocab_size)
            _, ids = torch.unique(torch.cat([hyp, ref], 1), return_inverse=True)
            ids_hyp, ids_ref = ids[:, :c], ids[:, c:]
            size = int(ids.max()) + 1
            count_hyp = torch.zeros(N, size, device=ids.device).scatter_add_(
                1, ids_hyp, torch.ones_like(ids_hyp, dtype=torch.float32)
            )
            count_ref = torch.zeros(N, size, device=ids.device).scatter_add_(
                1, ids_ref, torch.ones_like(ids_ref, dtype=torch.float32)
            )
            matches = torch.minimum(count_hyp, count_ref).sum(1).double()  # clipped by the reference's counts
        if n == 1:
            unigram_matches = matches
            log_precision += (matches.clamp_min(1e-300) / max(c, 1)).log()
        else:
            log_precision += ((matches + 1) / (c + 1)).log()
    brevity = min(0.0, 1.0 - references.shape[1] / max(L, 1))
    bleu = (log_precision / BLEU_ORDER + brevity).exp()
    return bleu.masked_fill(unigram_matches == 0, 0.0)


def expected_risk(logp: torch.Tensor, cost: torch.Tensor, alpha: float) -> torch.Tensor:
    """Σ_k Q_k·cost_k per prefix, Q = softmax(α·log p) over the K candidates: logp (B, K) -> (B,)."""
    return ((alpha * logp).softmax(-1) * cost).sum(-1)


class MinimumRisk(FineTuning):
    name = "mrt"
    full_work_knobs = {"start_step": 0}

    def __init__(
        self,
        cost: str = "bleu",
        candidates: int = 4,
        alpha: float = 0.005,
        lam: float = 0.0,
        prefix_len: int = 32,
        cont_len: int = 32,
        temperature: float = 1.0,
        start_step: int = 200,
    ) -> None:
        super().__init__()
        check_knob("cost", cost, cost in COSTS, f"choose one of {', '.join(COSTS)}")
        check_knob("candidates", candidates, isinstance(candidates, int) and candidates >= 2, "use an integer >= 2")
        check_knob("alpha", alpha, isinstance(alpha, (int, float)) and alpha > 0, "use alpha > 0")
        check_knob("lam", lam, isinstance(lam, (int, float)) and lam >= 0, "use lam >= 0")
        check_knob("temperature", temperature, temperature > 0, "use temperature > 0")
        for knob, value in (("prefix_len", prefix_len), ("cont_len", cont_len)):
            check_knob(knob, value, isinstance(value, int) and value >= 1, "use an integer >= 1")
        self.init_fine_tuning(start_step)
        self.cost, self.candidates, self.alpha, self.lam = cost, candidates, alpha, lam
        self.prefix_len, self.cont_len, self.temperature = prefix_len, cont_len, temperature
        self.vocab_size, self.source = 0, None

    def check_fits(self, length: int) -> None:
        check_prefix_fits(self.prefix_len, self.cont_len, length)

    def reads_true_source(self) -> bool:
        return self.cost == "oracle_nll"

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        self.check_fits(context.context)
        if self.cost == "oracle_nll" and context.source is None:
            check_knob("cost", self.cost, False, "oracle_nll needs the true source (data=synthetic); use bleu")
        self.vocab_size, self.source = context.vocab_size, context.source
        super().setup(model, context)

    def sample_candidates(self, model: nn.Module, prefix: torch.Tensor) -> torch.Tensor:
        """K sampled continuations of each prefix (B, P) -> (B·K, C), candidates of a prefix adjacent."""
        sampling = DecodingConfig(strategy="sample", temperature=self.temperature)
        return generate(model, prefix.repeat_interleave(self.candidates, 0), self.cont_len, sampling)

    def costs(self, prefix: torch.Tensor, candidates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """cost of each candidate (B·K, C) given its prefix (B, P) and real continuation (B, C') -> (B, K)."""
        B = prefix.shape[0]
        if self.cost == "bleu":
            refs = reference.repeat_interleave(self.candidates, 0)
            return (1.0 - sentence_bleu(candidates, refs, self.vocab_size)).view(B, -1).float()
        seq = torch.cat([prefix.repeat_interleave(self.candidates, 0), candidates], 1).cpu()
        nll = -self.source.target_log_probs(seq)[:, prefix.shape[1] :].mean(-1)  # (B·K,)
        return nll.view(B, -1).float().to(prefix.device)

    def sequence_risk(
        self, model: nn.Module, prefix: torch.Tensor, candidates: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """The risk of given candidates (B·K, C) of prefixes (B, P) against their real continuations (B, C')."""
        B = prefix.shape[0]
        seq = torch.cat([prefix.repeat_interleave(self.candidates, 0), candidates], 1)
        h = model.hidden(seq[:, :-1])[:, prefix.shape[1] - 1 :]  # states that predict the candidates
        logp = -model.nll(h, candidates).sum(-1).view(B, -1)  # (B, K) log p(y_k | x)
        with torch.no_grad():
            cost = self.costs(prefix, candidates, reference)
        risk = expected_risk(logp, cost, self.alpha).mean()
        return risk, {"risk": risk.detach(), "cost": cost.mean(), "cost_min": cost.min(-1).values.mean()}

    def fine_tune(self, model: nn.Module, batch: torch.Tensor, step: int, terms: tuple = ()) -> LossOutput:
        check_batch_room(self.prefix_len, self.cont_len, batch)
        prefix = batch[:, : self.prefix_len]
        reference = batch[:, self.prefix_len : self.prefix_len + self.cont_len]
        candidates = self.sample_candidates(model, prefix)
        risk, logs = self.sequence_risk(model, prefix, candidates, reference)
        loss = risk
        if self.lam > 0:
            inputs, targets = split_batch(batch)
            nll = model.nll(model.hidden(inputs), targets).mean()
            loss = risk + self.lam * nll
            logs["nll"] = nll.detach()
        return LossOutput(loss, logs)
