"""Config checks that the schema cannot express, run by the config loader
(``workflow.config_loader.load_config``, which ``rules/common.smk`` calls)
before any job is planned, so a bad input stops ``snakemake -n`` with the
culprit named instead of failing hours later inside a job. One module per
stage of what is checked:

- :mod:`workflow.guards.files`: the config files, before anything reads them;
- :mod:`workflow.guards.entries`: the entries of datasets, backbones and
  losses (names, parameters, pretrained weights, protocols, user files);
- :mod:`workflow.guards.declarations`: declared tables and rankings;
- :mod:`workflow.guards.counts`: class counts, cutoffs and the figures'
  queries, where the config gives the numbers.

What is checked:

- **config files**: a missing file, a YAML syntax error (named with its
  line and column), an empty file or one holding a list or a single value;
  and **duplicate keys**: PyYAML (and Snakemake's loader)
  silently keep the last of two equal keys, so a second ``cam:`` under
  ``losses`` would replace the first without a word;
- **names** of datasets, regimes, backbones, losses (also those made by
  sweeps), tables and rankings: they become folder names and Snakemake wildcards, so
  only letters, digits, ``_``, ``.``, ``-``, starting with a letter or
  digit (no ``/``, no ``..``, nothing a shell would interpret);
- **parameters** of losses and backbones: every key of ``params`` must be
  an argument of the registered class or builder (a typo would otherwise
  stop the training job), and every value must lie in the range the entry
  declared with its registration (``workflow/registry.py``); each loss
  setting is also built once on a tiny size;
- **table metrics**: every metric a declared table shows must be one that
  ``evaluate`` writes with the configured ``evaluation`` settings;
- **table selections**: the attributes a declared table selects by and
  lays out (those of results/metrics.csv), what it selects, its explicit rows
  (distinct labels) and its ``baseline`` must exist in the config, so no
  row silently drops out (nor a loss the select leaves without rows) and no
  marker claims a test that was not done;
- **published values**: a table's ``reference`` gives a value for every
  row and metric it shows, and for nothing else, each in its ``scale``
  and in the metric's range (``workflow.tables.reference_value_problem``);
- **rankings**: blocks and ``select`` name attributes of results/metrics.csv
  (blocks may be seeds, never losses), the ranked metric is computed, and
  the losses ranked (``losses``, else every loss the ``select`` keeps) are
  at least two distinct losses the ranking selects, none of which the
  ``select`` leaves without a value (a distance, retrieval or fixed factor
  it does not have, accuracy of a loss that cannot classify);
- **class counts**: at least 2 classes wherever classes are trained,
  retrieved, clustered or selected on (the test and training classes of
  protocol class_disjoint, the held-out and trial classes of class-disjoint
  validation), where the config gives the number of classes;
- **cutoffs**: every ``evaluation`` cutoff at most the database it ranks,
  where the config gives its size (``database_per_class`` times the
  listed classes);
- **figures**: ``figures.example_queries`` at most the queries of each
  dataset whose number the config gives (``query_per_class`` times the
  listed ``classes``);
- **pretrained weights**: ``backbones.<name>.params.pretrained`` must name
  a weights record for the backbone's arch, or a file of your own with its
  checksum and normalisation (``workflow.backbones.weights.resolve``; no
  file is read here).
"""

from __future__ import annotations

from workflow.guards.counts import check_class_counts, check_cutoffs, check_figures
from workflow.guards.declarations import (
    check_rankings,
    check_table_metrics,
    check_tables,
)
from workflow.guards.entries import (
    check_names,
    check_parameters,
    check_pretrained,
    check_protocols,
    check_user_files,
)


def check_config(config: dict) -> None:
    """The other checks of this module, on the validated, expanded config."""
    check_names(config)
    check_user_files(config)
    check_protocols(config)
    check_class_counts(config)
    check_parameters(config)
    check_pretrained(config)
    check_table_metrics(config)
    check_tables(config)
    check_rankings(config)
    check_figures(config)
    check_cutoffs(config)
