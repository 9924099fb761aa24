"""`python -m workflow`: list the registered datasets, backbones, losses and
metrics (`python -m workflow.retrieval.metrics` prints the metric reference's table)."""

from workflow.backbones import BACKBONES
from workflow.datasets import DATASETS
from workflow.losses import LOSSES
from workflow.retrieval.metrics import METRICS

for title, registry in [
    ("datasets", DATASETS),
    ("backbones", BACKBONES),
    ("losses", LOSSES),
]:
    print(f"{title}: {', '.join(registry.names())}")
print(f"metrics: {', '.join(m.name for m in METRICS)}")
print("\nshipped defaults (the keys a loss entry leaves out; docs/losses.md):")
from workflow.losses import shipped_defaults  # noqa: E402

for impl in LOSSES.names():
    for key, shipped in shipped_defaults(impl).items():
        print(f"{impl:<13} {key:<22} {shipped.value!s:<8} {shipped.source}")
print("\nsearch spaces (losses.<name>.search: default; docs/selection.md):")
from workflow.search import search_table  # noqa: E402

print(f"{'loss':<13} {'key':<22} {'values':<40} source")
for row in search_table():
    print(f"{row['loss']:<13} {row['key']:<22} {row['values']:<40} {row['source']}")
