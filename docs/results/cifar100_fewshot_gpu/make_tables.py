"""metrics.csv and tables of the GPU run from the cells that finished (the
run was stopped at the device tool's time limit with 28 of 30 cells done):
the same ``aggregate`` the pipeline's rule calls, over the metrics.csv
files under RESULTS, then the tables as ``python -m workflow.regenerate``
writes them (every caption names the losses with fewer seeds).

    python docs/results/cifar100_fewshot_gpu/make_tables.py RESULTS

Tables again from the committed metrics.csv alone:
``python -m workflow.regenerate docs/results/cifar100_fewshot_gpu``.
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from workflow.config import cell_factors, cells  # noqa: E402
from workflow.config_loader import load_config  # noqa: E402
from workflow.regenerate import regenerate  # noqa: E402
from workflow.report import aggregate  # noqa: E402

results = Path(sys.argv[1])
config = load_config(yaml.safe_load((HERE / "config.yaml").read_text()))
files = {c: results / "cells" / c.dataset / c.regime / c.backbone / c.loss / f"seed{c.seed}" / "metrics.csv"
         for c in cells(config)}
done = [c for c, path in files.items() if path.exists()]
print(f"{len(done)} cells with metrics; missing: {sorted(set(files) - set(done))}")
metrics = aggregate(done, [files[c] for c in done], [cell_factors(config, c) for c in done])
metrics.to_csv(HERE / "metrics.csv", index=False)
for path in regenerate(HERE):
    print(path)
