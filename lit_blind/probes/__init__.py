"""Probes for ``PriorEvaluationModule`` (``lit-blind test``): the protocol in :mod:`~lit_blind.probes.base`,
one module per kind of experiment. Configs name them as ``lit_blind.probes.<Name>``."""

from lit_blind.probes.base import Probe, hardware, image_generator
from lit_blind.probes.deblur import DeblurProbe
from lit_blind.probes.landscape import CriticalPointProbe, HessianSpectrumProbe, ProfileProbe
from lit_blind.probes.likelihood import BlurLikelihoodProbe, TimingProbe

__all__ = [
    "BlurLikelihoodProbe",
    "CriticalPointProbe",
    "DeblurProbe",
    "HessianSpectrumProbe",
    "Probe",
    "ProfileProbe",
    "TimingProbe",
    "hardware",
    "image_generator",
]
