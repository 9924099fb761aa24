import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.download import OfficialFile, fetch_files
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    # The mirror is read from the config, not passed as a param: where the
    # verified files come from does not change them, so it triggers no re-run.
    fetch_files(
        [OfficialFile.from_dict(f) for f in snakemake.params.files],
        snakemake.output[0],
        mirror=snakemake.config.get("data_mirror"),
        cache="results/downloads",
    )
