import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.figures import critical_difference_figure
from workflow.io import read_csv, save_figure, save_text
from workflow.logs import log_to
from workflow.rankings import build_ranking, ranking_note, render_ranking
from workflow.report import METRICS_COLUMNS

with log_to(snakemake.log[0]):
    name = snakemake.wildcards.ranking
    declaration = snakemake.params.declaration
    ranking = build_ranking(
        name, declaration, read_csv(snakemake.input[0], METRICS_COLUMNS)
    )
    ranks_csv, blocks_csv, markdown = render_ranking(name, declaration, ranking)
    save_text(snakemake.output.csv, ranks_csv)
    save_text(snakemake.output.blocks, blocks_csv)
    save_text(snakemake.output.md, markdown)
    fig = critical_difference_figure(
        ranking["average"],
        ranking["posthoc"],
        declaration.get("caption", name),
        ranking_note(declaration, ranking),
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)
    print(markdown)
