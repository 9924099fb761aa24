"""`python -m workflow`: list the registered datasets, backbones and losses."""

from workflow.backbones import BACKBONES
from workflow.datasets import DATASETS
from workflow.losses import LOSSES

for title, registry in [("datasets", DATASETS), ("backbones", BACKBONES), ("losses", LOSSES)]:
    print(f"{title}: {', '.join(registry.names())}")
