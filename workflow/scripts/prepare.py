from workflow.logs import log_to
from workflow.prepare import prepare

with log_to(snakemake.log[0]):
    spec = snakemake.params.spec
    prepare(
        spec["source"],
        spec.get("params", {}),
        images_path=snakemake.output.images,
        labels_path=snakemake.output.labels,
        classes_path=snakemake.output.classes,
    )
