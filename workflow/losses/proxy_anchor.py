"""Proxy-Anchor loss.

Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR
2020. Loss from pytorch-metric-learning (PML).
"""

import torch.nn.functional as F
from pytorch_metric_learning import losses

from workflow.losses import ShippedDefault, register_loss
from workflow.losses.base import Loss
from workflow.registry import Number
from workflow.search import Range


@register_loss(
    "proxy_anchor",
    geometry="cosine",
    anchors=True,
    classifies=True,
    params={"alpha": Number(gt=0), "margin": Number(ge=0)},
    shipped={
        "lr_multiplier": ShippedDefault(
            100.0, "paper (proxies at 100x the learning rate)"
        )
    },
    search={
        "params.alpha": Range(8.0, 128.0, 32.0, "paper (alpha = 32); range ours"),
        "params.margin": Range(0.025, 0.4, 0.1, "paper (delta = 0.1); range ours"),
        "lr_multiplier": Range(
            1.0, 1.0e4, 100.0, "paper (proxies at 100x); range ours"
        ),
    },
)
class ProxyAnchorLoss(Loss):
    """One learnable proxy ``p`` per class, cosine similarity ``s(x, p)``:

    ``L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} e^{-alpha (s(x, p) - delta)})
        + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} e^{ alpha (s(x, p) + delta)})``

    with P all proxies, P+ the proxies of the classes in the batch, X_p+ the
    batch's embeddings of p's class and X_p- the others. Defaults from the
    paper: ``alpha = 32``, ``delta = 0.1``; proxies start from a Kaiming normal
    (PML, as in the authors' code). The paper trains the proxies with a 100x
    larger learning rate: set ``losses.<name>.lr_multiplier: 100``.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; proxies have shape (C, D).
        alpha: scale alpha.
        margin: delta.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        alpha: float = 32.0,
        margin: float = 0.1,
    ):
        super().__init__()
        self.loss = losses.ProxyAnchorLoss(
            num_classes, embedding_size, margin=margin, alpha=alpha
        )

    def forward(self, embeddings, labels):
        return self.loss(embeddings, labels)

    def predict(self, embeddings):
        """Cosine similarity to each proxy, shape (N, C)."""
        return self.loss.get_logits(embeddings)

    def class_anchors(self):
        """The unit-normalised proxies, shape (C, D), detached."""
        return F.normalize(self.loss.proxies.detach(), dim=1)
