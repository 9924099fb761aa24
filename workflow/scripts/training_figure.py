import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.cell_files import MODEL_ADVICE
from workflow.checkpoints import load_checkpoint
from workflow.figures import history_frame, training_curves_figure
from workflow.io import save_figure
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    histories = [
        (
            cell.loss,
            cell.seed,
            load_checkpoint(
                path,
                "model.pt of the train rule",
                keys=("history",),
                advice=MODEL_ADVICE,
            )["history"],
        )
        for cell, path in zip(snakemake.params.cells, snakemake.input)
    ]
    w = snakemake.wildcards
    fig = training_curves_figure(
        history_frame(histories), title=f"{w.dataset} ({w.regime}, {w.backbone})"
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)
