"""The ``Trainer`` of ``lit-blind fit|test|…``: Lightning's, with its batch limits typed so that the command line
reads ``--trainer.limit_test_batches 1`` as one batch.

Lightning annotates ``limit_{train,val,test,predict}_batches`` and ``overfit_batches`` as
``Optional[Union[int, float]]`` (an int: a count of batches; a float: a fraction). ``typing`` caches unions
under keys that compare equal whatever the order of their members, so a ``Union[float, int]`` built earlier in
the process (as happens on importing Lightning) is what the annotation becomes; jsonargparse tries the members
in order and turned ``1`` into ``1.0``, i.e. every batch instead of one. ``int | float`` (``types.UnionType``)
is not cached and keeps its order. Nothing else changes.
"""

from __future__ import annotations

import lightning.pytorch as pl

BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


class Trainer(pl.Trainer):
    """:class:`lightning.pytorch.Trainer` with the batch limits typed ``int | float`` (module docstring)."""

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            overfit_batches=overfit_batches,
            **kwargs,
        )
