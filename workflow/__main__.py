"""`python -m workflow`: list the registered datasets, backbones, losses and
metrics (`python -m workflow.retrieval.metrics` prints README's metric table)."""

from workflow.backbones import BACKBONES
from workflow.datasets import DATASETS
from workflow.losses import LOSSES
from workflow.retrieval.metrics import METRICS

for title, registry in [("datasets", DATASETS), ("backbones", BACKBONES), ("losses", LOSSES)]:
    print(f"{title}: {', '.join(registry.names())}")
print(f"metrics: {', '.join(m.name for m in METRICS)}")
