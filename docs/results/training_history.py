"""The training histories of a run's cells as one long CSV (loss, seed,
epoch, term, value, part: what the training figure plots, e.g. CAM's
``pairs_within_margin`` per epoch), written beside a committed run:

    python docs/results/training_history.py <run>/results docs/results/<folder>/training_history.csv [figure.png "title"]

It reads every ``results/cells/*/*/*/<loss>/seed<k>/model.pt`` with the
pipeline's own readers (workflow.checkpoints, workflow.figures); with a
figure path it also draws the training figure from them with today's
code (``training_curves_figure``, what rule ``training_figure`` draws)."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflow.checkpoints import load_checkpoint  # noqa: E402
from workflow.figures import history_frame, training_curves_figure  # noqa: E402


def main(results: str, out: str, figure: str | None = None, title: str = "") -> None:
    # Cells in the order of the folder's config (losses, then seeds), as the
    # pipeline lists them.
    losses = list(
        yaml.safe_load((Path(out).parent / "config.yaml").read_text())["losses"]
    )
    cells = sorted(
        (losses.index(path.parts[-3]), int(path.parts[-2].removeprefix("seed")), path)
        for path in Path(results).glob("cells/*/*/*/*/seed*/model.pt")
    )
    histories = [
        (
            losses[loss],
            seed,
            load_checkpoint(path, "model.pt", keys=("history",))["history"],
        )
        for loss, seed, path in cells
    ]
    frame = history_frame(histories)
    frame.to_csv(out, index=False, float_format="%.6g")
    print(f"{out}: {len(histories)} cells, {len(frame)} rows")
    if figure:
        training_curves_figure(frame, title=title).savefig(figure)
        print(figure)


if __name__ == "__main__":
    main(*sys.argv[1:])
