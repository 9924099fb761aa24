"""Contrastive loss on the pairs of a batch.

Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
Mapping", CVPR 2006. Pairs, distances and reduction come from
pytorch-metric-learning (PML).
"""

from pytorch_metric_learning import distances, losses

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.registry import Number
from workflow.search import Range


class _SquaredContrastive(losses.ContrastiveLoss):
    """PML's ContrastiveLoss penalises ``max(0, d - m_pos)`` and
    ``max(0, m_neg - d)``; Hadsell et al. square both and halve them."""

    def pos_calc(self, pos_pair_dist, margin):
        return 0.5 * super().pos_calc(pos_pair_dist, margin).pow(2)

    def neg_calc(self, neg_pair_dist, margin):
        return 0.5 * super().neg_calc(neg_pair_dist, margin).pow(2)


@register_loss(
    "contrastive",
    geometry="euclidean",
    anchors=False,
    classifies=False,
    params={"margin": Number(gt=0)},
    search={
        "params.margin": Range(
            0.25, 4.0, 1.0, "ours (the paper gives no general margin)"
        )
    },
)
class ContrastiveLoss(Loss):
    """Contrastive loss over every pair of the batch.

    For a pair (i, j) with Euclidean distance ``d = ||x_i - x_j||`` of the raw
    (not normalised) embeddings, as in the paper:

    - same class: ``1/2 d^2``;
    - different classes: ``1/2 max(0, m - d)^2``.

    The loss is the mean over the positive pairs with a non-zero loss plus
    the mean over the negative pairs with a non-zero loss (PML's
    ``AvgNonZeroReducer``: the paper sums over pairs; in a batch, negatives
    far outnumber positives and most are already beyond the margin, so this
    keeps both terms at the same scale). Every ordered pair of the batch is
    used (pairs "mined" from the batch's labels); a class-balanced batch
    (``losses.<name>.sampler``) guarantees positives.

    The paper gives the form but no general default for the margin m; the
    default 1.0 is PML's.

    Args:
        num_classes, embedding_size: unused (no learnable state).
        margin: m.
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 1.0):
        super().__init__()
        self.loss = _SquaredContrastive(
            pos_margin=0.0,
            neg_margin=margin,
            distance=distances.LpDistance(normalize_embeddings=False, p=2, power=1),
        )

    def forward(self, embeddings, labels):
        return self.loss(embeddings, labels)
