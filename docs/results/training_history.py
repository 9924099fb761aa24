"""The training histories of a run's cells as one long CSV (loss, seed,
epoch, term, value, part: what the training figure plots, e.g. CAM's
``pairs_within_margin`` per epoch), written beside a committed run:

    python docs/results/training_history.py <run>/results docs/results/<folder>/training_history.csv

It reads every ``results/cells/*/*/*/<loss>/seed<k>/model.pt`` with the
pipeline's own readers (workflow.checkpoints, workflow.figures)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.checkpoints import load_checkpoint  # noqa: E402
from workflow.figures import history_frame  # noqa: E402


def main(results: str, out: str) -> None:
    histories = []
    for path in sorted(Path(results).glob("cells/*/*/*/*/seed*/model.pt")):
        loss, seed = path.parts[-3], int(path.parts[-2].removeprefix("seed"))
        history = load_checkpoint(path, "model.pt", keys=("history",))["history"]
        histories.append((loss, seed, history))
    frame = history_frame(histories).sort_values(
        ["loss", "seed", "epoch", "part", "term"]
    )
    frame.to_csv(out, index=False, float_format="%.6g")
    print(f"{out}: {len(histories)} cells, {len(frame)} rows")


if __name__ == "__main__":
    main(*sys.argv[1:])
