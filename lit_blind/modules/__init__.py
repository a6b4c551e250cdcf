"""Thin LightningModules (the Lightning layer; the math lives in the rest of the package)."""

from lit_blind.modules.prior_evaluation import PriorEvaluationModule

__all__ = ["PriorEvaluationModule"]
