import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.logs import log_to
from workflow.prepare import prepare

with log_to(snakemake.log[0]):
    prepare(
        snakemake.params.spec,
        images_path=snakemake.output.images,
        labels_path=snakemake.output.labels,
        classes_path=snakemake.output.classes,
        root=snakemake.input.get("raw"),
        threads=snakemake.threads,
        name=snakemake.wildcards.dataset,
    )
