"""Supervised contrastive loss (SupCon).

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu & Krishnan,
"Supervised Contrastive Learning", NeurIPS 2020. Loss from
pytorch-metric-learning (PML).
"""

from pytorch_metric_learning import losses

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.registry import Number
from workflow.search import Range


@register_loss(
    "supcon",
    geometry="cosine",
    anchors=False,
    classifies=False,
    params={"temperature": Number(gt=0)},
    search={
        "params.temperature": Range(0.025, 0.4, 0.1, "paper (tau = 0.1); range ours")
    },
)
class SupConLoss(Loss):
    """With ``z`` the L2-normalised embeddings, ``P(i)`` the other images of
    i's class in the batch and ``A(i)`` all images but i (the paper's
    ``L^sup_out``):

    ``L_i = -1/|P(i)| sum_{p in P(i)} log( e^{z_i . z_p / tau} / sum_{a in A(i)} e^{z_i . z_a / tau} )``

    averaged over the anchors with a non-zero loss (PML's
    ``AvgNonZeroReducer``; anchors without a positive contribute nothing).
    Default from the paper: ``tau = 0.1``. The paper's positives include a
    second augmented view of each image; here they are the other images of
    the class in the batch, so set ``losses.<name>.sampler``.

    Args:
        num_classes, embedding_size: unused (no learnable state).
        temperature: tau.
    """

    def __init__(self, num_classes: int, embedding_size: int, temperature: float = 0.1):
        super().__init__()
        self.loss = losses.SupConLoss(temperature=temperature)

    def forward(self, embeddings, labels):
        return self.loss(embeddings, labels)
