"""Tables of the GPU run from the cells that finished (the run was stopped
at the device tool's time limit with 28 of 30 cells done): the same
``aggregate`` and ``build_table`` the pipeline's rules call, over the
metrics.csv files under RESULTS.

    python docs/results/cifar100_fewshot_gpu/make_tables.py RESULTS
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from workflow.config import cell_factors, cells, load_config  # noqa: E402
from workflow.report import aggregate  # noqa: E402
from workflow.tables import build_table, render  # noqa: E402

results = Path(sys.argv[1])
config = load_config(yaml.safe_load((HERE.parents[2] / "config" / "cifar100_fewshot_gpu.yaml").read_text()))
files = {c: results / "cells" / c.dataset / c.regime / c.backbone / c.loss / f"seed{c.seed}" / "metrics.csv"
         for c in cells(config)}
done = [c for c, path in files.items() if path.exists()]
print(f"{len(done)} cells with metrics; missing: {sorted(set(files) - set(done))}")
metrics = aggregate(done, [files[c] for c in done], [cell_factors(config, c) for c in done])
(HERE / "tables").mkdir(exist_ok=True)
metrics.to_csv(HERE / "metrics.csv", index=False)
seeds = metrics.groupby("loss")["seed"].nunique()
short = ", ".join(f"{loss} {n}" for loss, n in seeds.items() if n < seeds.max())
for name, declaration in config["tables"].items():
    if short:  # say which rows have fewer seeds than the caption's
        declaration = {**declaration, "caption": f"{declaration['caption']} (seeds per loss where fewer: {short})"}
    frame = build_table(name, declaration, metrics)
    csv, markdown, _ = render(name, declaration, frame)
    (HERE / "tables" / f"{name}.csv").write_text(csv)
    (HERE / "tables" / f"{name}.md").write_text(markdown)
    print(markdown)
