"""ArcFace: additive angular margin loss.

Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep
Face Recognition", CVPR 2019. Loss from pytorch-metric-learning (PML).
"""

import math

import torch.nn.functional as F
from pytorch_metric_learning import losses

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.registry import Number
from workflow.search import Range


@register_loss(
    "arcface",
    geometry="cosine",
    anchors=True,
    classifies=True,
    params={"margin": Number(gt=0, lt=math.pi / 2), "scale": Number(gt=0)},
    search={
        "params.margin": Range(
            0.1, 0.9, 0.5, "paper (m = 0.5); range ours", scale="linear"
        ),
        "params.scale": Range(16.0, 256.0, 64.0, "paper (s = 64); range ours"),
    },
)
class ArcFaceLoss(Loss):
    """Softmax cross-entropy on scaled cosines with an angular margin on the
    target class:

    ``L = mean_i -log( e^{s cos(theta_{y_i} + m)} / (e^{s cos(theta_{y_i} + m)} + sum_{k != y_i} e^{s cos theta_k}) )``

    where ``theta_k`` is the angle between the embedding and the learnable
    class weight vector ``W_k``. Where ``theta + m`` would pass pi, the target
    logit is ``cos theta - m sin m`` instead (so it keeps decreasing, as in the
    authors' code). Defaults from the paper: ``s = 64``, ``m = 0.5``
    (radians; PML takes degrees, converted here).

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; class weights ``W`` (D, C)
            start from a standard normal distribution (PML).
        margin: m in radians.
        scale: s.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.5,
        scale: float = 64.0,
    ):
        super().__init__()
        self.loss = losses.ArcFaceLoss(
            num_classes, embedding_size, margin=math.degrees(margin), scale=scale
        )

    def forward(self, embeddings, labels):
        return self.loss(embeddings, labels)

    def predict(self, embeddings):
        """Cosine to each class weight vector (no margin), shape (N, C)."""
        return self.loss.get_cosine(embeddings)

    def class_anchors(self):
        """The unit-normalised class weight vectors, shape (C, D), detached."""
        return F.normalize(self.loss.W.detach().T, dim=1)
