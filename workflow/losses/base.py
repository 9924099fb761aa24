"""The interface every registered loss implements (:class:`Loss`)."""

from __future__ import annotations

import torch
from torch import nn


class Loss(nn.Module):
    """The base class of every loss: ``loss(embeddings, labels) -> scalar``.

    After each forward, a loss reports the parts it is made of in
    ``last_terms`` (name -> detached 0-d tensor, weighted as it enters the
    loss; e.g. CAM's attractor, repeller and min_norm) and what it measures
    on the batch without it entering the loss in ``last_diagnostics`` (e.g.
    CAM's fraction of anchor pairs within the margin). Both start empty and
    stay empty for a loss without parts; training averages each over the
    epoch into its history (:func:`workflow.training.loop.train_epoch`).
    """

    last_terms: dict[str, torch.Tensor]
    last_diagnostics: dict[str, torch.Tensor]

    def __init__(self):
        super().__init__()
        self.last_terms = {}
        self.last_diagnostics = {}
