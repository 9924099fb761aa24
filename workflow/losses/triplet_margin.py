"""Triplet margin loss with semi-hard or batch-hard mining.

Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face
Recognition and Clustering", CVPR 2015 (loss, distance, margin, semi-hard
negatives); batch-hard mining from Hermans, Beyer & Leibe, "In Defense of the
Triplet Loss for Person Re-Identification", arXiv:1703.07737 (2017). Loss and
miners from pytorch-metric-learning (PML).
"""

from pytorch_metric_learning import distances, losses, miners, reducers

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.registry import Number, OneOf
from workflow.search import Range

MINING = ("semihard", "batch_hard")


@register_loss(
    "triplet",
    geometry="cosine",
    anchors=False,
    classifies=False,
    params={"margin": Number(gt=0), "mining": OneOf(MINING)},
    search={
        "params.margin": Range(
            0.05, 0.8, 0.2, "FaceNet paper (alpha = 0.2); range ours"
        )
    },
)
class TripletMarginLoss(Loss):
    """``mean over mined triplets (a, p, n) of max(0, d(a, p) - d(a, n) + alpha)``

    with, as in FaceNet, ``d(u, v) = ||u^ - v^||^2`` the squared Euclidean
    distance of L2-normalised embeddings and the margin ``alpha = 0.2``.
    Triplets come from the batch (a and p of one class, n of another):

    - ``mining: semihard`` (FaceNet): every anchor-positive pair with every
      negative that is farther than the positive but inside the margin,
      ``d(a, p) < d(a, n) <= d(a, p) + alpha`` (PML ``TripletMarginMiner``);
    - ``mining: batch_hard`` (Hermans et al.): per anchor, its farthest
      positive and its nearest negative (PML ``BatchHardMiner``).

    The mean runs over all mined triplets (PML ``MeanReducer``; FaceNet sums).
    No triplet mined gives a zero loss (with a zero gradient). Needs several
    images per class in a batch: set ``losses.<name>.sampler``.

    Args:
        num_classes, embedding_size: unused (no learnable state).
        margin: alpha.
        mining: ``semihard`` or ``batch_hard``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.2,
        mining: str = "semihard",
    ):
        super().__init__()
        if mining not in MINING:
            raise ValueError(
                f"triplet loss parameter mining: {mining!r} is not one of {', '.join(MINING)}"
            )
        distance = distances.LpDistance(normalize_embeddings=True, p=2, power=2)
        if mining == "semihard":
            self.miner = miners.TripletMarginMiner(
                margin=margin, type_of_triplets="semihard", distance=distance
            )
        else:
            self.miner = miners.BatchHardMiner(distance=distance)
        self.loss = losses.TripletMarginLoss(
            margin=margin, distance=distance, reducer=reducers.MeanReducer()
        )

    def forward(self, embeddings, labels):
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
