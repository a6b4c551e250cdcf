"""Bounds and choices that the library checks and the command line checks too, before it imports torch.

One definition each, in a module without imports, so that ``lit-blind deblur`` rejects a bad flag at once and
the library's own check can never disagree with it.
"""

SIGMA_Y_MAX = 0.5  # a noise σ above half the [0, 1] range leaves no image to deblur
COVARIANCES = ("full", "kept", "tweedie", "hqs", "none")  # marginal_em's covariance terms (lit_blind.marginal)
# the level of marginal_em's covariance term when polishing (lit_blind.marginal)
POLISH_COVARIANCES = ("noise", "denoiser")
ATTENTIONS = ("local", "global")  # marginal_em's denoiser attention (Prior.local_attention or the network's own)
# a prior's arithmetic inside Prior.precision, Lightning's names; "auto": bf16-mixed where the device runs bfloat16 natively
PRECISIONS = ("auto", "32-true", "bf16-mixed")
