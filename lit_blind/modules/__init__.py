"""Thin LightningModules (the Lightning layer; the math lives in the rest of the package)."""

from lit_blind.modules.blind_deconv import BlindDeconvModule
from lit_blind.modules.prior_evaluation import PriorEvaluationModule
from lit_blind.modules.score_training import ScoreTrainingModule

__all__ = ["BlindDeconvModule", "PriorEvaluationModule", "ScoreTrainingModule"]
