"""DFT (Wu et al. 2025, "On the Generalization of SFT: A Reinforcement Learning Perspective with Reward
Rectification"; released code yongliang-wu/DFT): ℓ_t = −sg(p_t(y_t))·log p_t(y_t), each token's NLL weighted by
the model's own detached probability of it. That is MixCE at η = 0 (``objectives/mixce.py``; tested equal), here
as its paper uses it: a fine-tuning loss (supervised fine-tuning of a pretrained model), MLE until ``start_step``.
"""

from __future__ import annotations

from objectives.base import FineTuning
from objectives.mixce import MixCE


class DFT(FineTuning, MixCE):
    name = "dft"
    papers_regimes = ("fine-tuning",)
    full_work_knobs = {"start_step": 0}

    def __init__(self, start_step: int = 200) -> None:
        super().__init__(eta=0.0)
        self.init_fine_tuning(start_step)
