"""Config checks that the schema cannot express, run by ``rules/common.smk``
before any job is planned, so a bad input stops ``snakemake -n`` with the
culprit named instead of failing hours later inside a job:

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

import difflib
import inspect
import re
from pathlib import Path

import yaml

from workflow.config import ConfigError, laid_out, number_hint, ranked_losses
from workflow.registry import did_you_mean, unknown_parameter

# The schema's name rule ($defs/name_pattern): also no suffix repeated 20
# times, which Snakemake's periodic-wildcard guard would take for a runaway
# recursion (and skip the cell), and at most 100 characters.
NAME = re.compile(r"^(?!.*?(.+)\1{19}$)[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAMED_SECTIONS = ["datasets", "regimes", "backbones", "losses", "tables", "rankings"]
# Arguments the pipeline passes itself; never from ``params``.
PIPELINE_ARGUMENTS = {
    "losses": {"num_classes", "embedding_size"},
    "backbones": {"in_channels", "image_size", "embedding_size"},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses two equal keys in one mapping."""

    path = "<config>"

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"config file {self.path}, line {line}: key {key!r} appears twice in one "
                    f"mapping (first on line {seen[key]}); YAML would silently keep only the "
                    "last one. Rename or remove one of them."
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def check_config_file(path) -> None:
    """Raise :class:`ConfigError` naming the file ``path`` unless it is a
    YAML (or JSON) file holding a mapping with no key twice in any of its
    mappings: a missing file, a syntax error (with its line and column),
    an empty file and a list or a single value each get their message.
    (Snakemake's own reader names neither the file nor the line.)"""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path}: "
            + ("is a folder" if path.is_dir() else "no such file")
            + "; give the path of a YAML or JSON config file (relative to the folder Snakemake runs in)"
        )
    loader_class = type("Loader", (_UniqueKeyLoader,), {"path": str(path)})
    try:
        with open(path, encoding="utf-8") as f:
            loader = loader_class(f)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        context = (
            f" ({error.context}, line {error.context_mark.line + 1})"
            if error.context and error.context_mark
            else ""
        )
        raise ConfigError(
            f"config file {path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
            f"{error.problem}{context}; fix the file there (YAML indents with spaces, never tabs; "
            "a value holding ': ' or starting with a special character needs quotes)"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"config file {path}: not a YAML or JSON text file ({error})"
        ) from None
    if data is None:
        raise ConfigError(
            f"config file {path} is empty (or only comments); a config is a mapping of keys "
            '(datasets:, regimes:, backbones:, losses:, seeds:, ...): see README "Configuration"'
        )
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the single value {data!r}"
        raise ConfigError(
            f"config file {path} holds {kind}, not a mapping of keys; a config is a mapping at its top "
            'level (datasets:, regimes:, backbones:, losses:, seeds:, ...): see README "Configuration"'
        )


def check_protocols(config: dict) -> None:
    """A dataset's ``train_classes`` needs protocol class_disjoint, which
    takes no database from the training pool (``workflow/splits.py``)."""
    for name, spec in config["datasets"].items():
        protocol = spec.get("protocol", "closed_set")
        if protocol != "class_disjoint" and spec.get("train_classes") is not None:
            raise ConfigError(
                f"config key datasets.{name}.train_classes: applies only with protocol class_disjoint (it moves "
                f"the boundary between training and test classes); set datasets.{name}.protocol: class_disjoint "
                "or remove it"
            )
        if protocol == "class_disjoint" and spec.get("database_from") == "train":
            raise ConfigError(
                f"config key datasets.{name}.database_from: 'train' would put training classes into the "
                "database; protocol class_disjoint evaluates the test classes among themselves: remove it"
            )


def check_user_files(config: dict) -> None:
    """The loader parameter naming a dataset's own file or folder (its
    registration's ``user_files``: ``path`` of imagefolder and npz) is a
    path, neither empty nor the folder Snakemake runs in or one above it:
    "" and "." would read the workflow itself (its code, ``results/``) as
    the dataset."""
    from workflow.datasets import DATASETS

    for name, spec in config["datasets"].items():
        param, params = (
            DATASETS.metadata(spec["source"]).get("user_files"),
            spec.get("params") or {},
        )
        if param not in params:
            continue
        key, value = f"config key datasets.{name}.params.{param}", params[param]
        advice = "set it to your dataset's folder or file (a path relative to the folder Snakemake runs in)"
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}: {value!r} is no path; {advice}")
        if Path.cwd().resolve().is_relative_to(Path(value).resolve()):
            raise ConfigError(
                f"{key}: {value!r} is the folder Snakemake runs in, or one above it, which holds the workflow "
                f"itself (and results/); {advice}"
            )


def check_names(config: dict) -> None:
    for section in NAMED_SECTIONS:
        for name in config.get(section) or {}:
            if not NAME.match(str(name)):
                raise ConfigError(
                    f"config key {section}.{name}: {name!r} becomes a folder name and a "
                    "wildcard, so it may hold only 1 to 100 letters, digits, '_', '.' and '-', "
                    "starting with a letter or digit and not ending in a piece repeated 20 times; "
                    "rename it"
                    + (
                        " (a swept parameter's value is part of the name)"
                        if section == "losses"
                        else ""
                    )
                )


def _check_arguments(
    key: str, kind: str, builder, params: dict, reserved: set[str]
) -> None:
    signature = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return  # takes anything
    accepted = [p for p in signature if p not in reserved and p != "self"]
    for name in params:
        if name in reserved:
            raise ConfigError(
                f"config key {key}.{name}: the pipeline sets {name!r} itself; remove it from params"
                + (
                    " (embedding_size belongs to the backbone entry)"
                    if name == "embedding_size"
                    else ""
                )
            )
        if name not in accepted:
            raise ConfigError(
                f"config key {key}.{name}: {kind} {unknown_parameter(name, accepted)}"
            )


def _check_ranges(key: str, kind: str, registry, name: str, params: dict) -> None:
    """The values of ``params`` against the ranges the entry declared with
    its registration (``workflow/registry.py``)."""
    from workflow.registry import ParameterError

    try:
        registry.check_params(name, params)
    except ParameterError as error:
        raise ConfigError(
            f"config key {key}.{error.param}: {error.value!r} {error.problem}{number_hint(error.value)}; "
            f"{kind} takes {error.rule} for it; change the value"
        ) from None


def _loss_entries(config: dict):
    """(config key of its params, entry) of every loss setting that may be
    trained: the losses, and with ``selection`` every trial of each. Swept
    settings are named by the key written in the config."""
    sweeps = config.get("sweeps") or {}
    named = list(config["losses"].items())
    for trials in (config.get("trials") or {}).values():
        named += list(trials.items())
    for name, entry in named:
        base = sweeps.get(name, {}).get("base", name)
        swept = sweeps.get(name, {}).get("values") or {}
        where = (
            f" (the sweep's setting {', '.join(f'{k}={v!r}' for k, v in swept.items())})"
            if swept
            else ""
        )
        yield f"losses.{base}.params", entry, where


def check_parameters(config: dict) -> None:
    """Every ``params`` key is an argument of the loss or backbone, every
    value lies in the range its registration declares, and every loss
    setting builds (on 2 classes and a 2-dimensional embedding: cheap, so
    a constructor's own ValueError or TypeError also stops here, before any
    job, naming the key). Backbones are not built here: a pretrained one
    would read its weights."""
    from workflow.backbones import BACKBONES
    from workflow.losses import LOSSES, build_loss

    for key, entry, where in _loss_entries(config):
        impl, params = entry["impl"], entry.get("params") or {}
        kind = f"loss {impl!r}"
        _check_arguments(
            key, kind, LOSSES.get(impl), params, PIPELINE_ARGUMENTS["losses"]
        )
        _check_ranges(key, kind, LOSSES, impl, params)
        try:
            build_loss(impl, num_classes=2, embedding_size=2, **params)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"config key {key}: loss {impl!r} cannot be built with {params!r}{where}: {error}; "
                "change the value"
            ) from None
    for name, entry in config["backbones"].items():
        key, kind, params = (
            f"backbones.{name}.params",
            f"backbone {entry['arch']!r}",
            entry.get("params") or {},
        )
        _check_arguments(
            key,
            kind,
            BACKBONES.get(entry["arch"]),
            params,
            PIPELINE_ARGUMENTS["backbones"],
        )
        _check_ranges(key, kind, BACKBONES, entry["arch"], params)


def check_pretrained(config: dict) -> None:
    from workflow.backbones.weights import resolve

    for name, entry in config["backbones"].items():
        params = entry.get("params") or {}
        if params.get("pretrained") is not None:
            resolve(
                params["pretrained"],
                entry["arch"],
                f"backbones.{name}.params.pretrained",
            )


def check_table_metrics(config: dict) -> None:
    from workflow.config import dataset_evaluation
    from workflow.retrieval.metrics import METRICS

    # What some dataset's cells compute (the datasets' protocols fill in
    # their own Recall@k and clustering defaults).
    known = list(
        dict.fromkeys(
            name
            for dataset in config["datasets"]
            for name in METRICS.names(dataset_evaluation(config, dataset))
        )
    )
    named = [
        (f"tables.{table}.metrics", metric)
        for table, declaration in (config.get("tables") or {}).items()
        for metric in declaration.get("metrics", [])
    ]
    named += [
        (f"rankings.{name}.metric", decl["metric"])
        for name, decl in (config.get("rankings") or {}).items()
    ]
    if config.get("selection"):
        named.append(("selection.metric", config["selection"]["metric"]))
    for key, metric in named:
        if metric not in known:
            close = [m for m in known if m.lower() == metric.lower()]
            close = close or difflib.get_close_matches(metric, known, n=1)
            raise ConfigError(
                f"config key {key}: no metric {metric!r} is computed"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; with these evaluation settings the metrics are: {', '.join(known)} ("
                + ", ".join(
                    [
                        f"{m.name} exists for the k in evaluation.{m.cutoffs}"
                        for m in METRICS
                        if m.cutoffs
                    ]
                    + [
                        f"{m.name} with evaluation.{m.enabled_by}: true"
                        for m in METRICS
                        if m.enabled_by
                    ]
                )
                + "; python -m workflow lists the registered metrics)"
            )


# Cell attributes whose values the config names, and the section naming them.
CELL_SECTIONS = {
    "dataset": "datasets",
    "regime": "regimes",
    "backbone": "backbones",
    "loss": "losses",
}


def _table_values(config: dict) -> dict[str, list]:
    """The values each table attribute can take with this config (those
    whose values are known before any job)."""
    from workflow.geometry import DISTANCES

    values = {
        attribute: [str(n) for n in config[section]]
        for attribute, section in CELL_SECTIONS.items()
    }
    classes = ((config.get("evaluation") or {}).get("two_stage") or {}).get(
        "classes", [1, 2]
    )
    values["retrieval"] = ["exact", *(f"two_stage_c{c}" for c in classes)]
    values["distance"] = list(DISTANCES)
    return values


def _swept_hint(config: dict, value) -> str:
    names = [
        n
        for n, sweep in (config.get("sweeps") or {}).items()
        if sweep["base"] == value and n != value
    ]
    return (
        f"; its sweep made {', '.join(names)}"
        if names and not config.get("trials")
        else ""
    )


def _check_selectors(config: dict, key: str, selectors: dict, values: dict) -> None:
    for attribute, wanted in selectors.items():
        if attribute not in values:
            continue
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if str(value) not in values[attribute]:
                raise ConfigError(
                    f"config key {key}.{attribute}: {value!r} matches no {attribute} of this config "
                    f"({', '.join(values[attribute])}){_swept_hint(config, value)}, so it would select "
                    "nothing; name one of those"
                )


def _check_attributes(table: str, decl: dict) -> None:
    """Every attribute a table selects by (``select``, explicit rows) or
    lays out (``rows``, ``columns``, ``blocks``) is one that
    results/metrics.csv has (``TABLE_ATTRIBUTES``)."""
    from workflow.config import TABLE_ATTRIBUTES

    named = [(f"tables.{table}.select.{a}", a) for a in decl.get("select") or {}]
    for key in ["rows", "columns", "blocks"]:
        for i, entry in enumerate(decl.get(key) or []):
            if isinstance(entry, dict):
                named += [
                    (f"tables.{table}.{key}[{i}].{a}", a) for a in entry if a != "label"
                ]
            else:
                named.append((f"tables.{table}.{key}", entry))
    for key, attribute in named:
        if attribute not in TABLE_ATTRIBUTES:
            raise ConfigError(
                f"config key {key}: {attribute!r} is not a cell attribute"
                f"{did_you_mean(str(attribute), TABLE_ATTRIBUTES)}; a table selects by and lays out "
                f"{', '.join(TABLE_ATTRIBUTES)}"
            )
    layout = [
        (key, entry)
        for key in ["rows", "columns", "blocks"]
        for entry in decl.get(key) or []
        if not isinstance(entry, dict)
    ]
    _check_laid_out_once(f"tables.{table}", layout)


def _check_laid_out_once(key: str, layout: list[tuple[str, str]]) -> None:
    """No attribute is laid out twice ((place, attribute) pairs): its values
    would make two equal index levels, so rows repeat their label
    (``a / a``) or a block its value, and the writers meet two columns of
    one name."""
    seen: dict[str, str] = {}
    for place, attribute in layout:
        if attribute in seen:
            where = (
                f"twice in {key}.{place}"
                if seen[attribute] == place
                else f"in both {key}.{seen[attribute]} and {key}.{place}"
            )
            raise ConfigError(
                f"config key {key}.{place}: {attribute!r} is laid out {where}, which would repeat its value in "
                "every row and block; name each attribute once"
            )
        seen[attribute] = place


def _as_strings(value) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _has_two_stage_rows(spec: dict) -> bool:
    """Whether evaluate can write two-stage rows for a dataset: it needs a
    database apart from the queries, which protocol class_disjoint has only
    on official query and database sides (registered ``query_database``:
    In-Shop's query and gallery, without ``train_classes``); otherwise its
    test classes are evaluated all against all (``workflow.evaluate``)."""
    from workflow.datasets import DATASETS

    if spec.get("protocol", "closed_set") != "class_disjoint":
        return True
    return spec.get("train_classes") is None and bool(
        DATASETS.metadata(spec["source"]).get("query_database")
    )


def _check_two_stage(
    config: dict, key: str, selectors: dict, losses: list | None = None
) -> None:
    """A selection of only two-stage retrievals (``selectors``: a table's or
    ranking's ``select``, or an explicit row with its table's ``select``)
    keeps a dataset that can have two-stage rows and a loss that learns
    class anchors; otherwise it could never match, and the table or
    ranking would stop for want of rows after the whole grid trained."""
    from workflow.losses import LOSSES, loss_has_anchors

    wanted = _as_strings(selectors["retrieval"]) if "retrieval" in selectors else []
    if not wanted or not all(w.startswith("two_stage_") for w in wanted):
        return
    datasets = (
        _as_strings(selectors["dataset"])
        if "dataset" in selectors
        else list(map(str, config["datasets"]))
    )
    datasets = [d for d in datasets if d in config["datasets"]]
    if datasets and not any(
        _has_two_stage_rows(config["datasets"][d]) for d in datasets
    ):
        raise ConfigError(
            f"config key {key}.retrieval: {', '.join(wanted)} can never match: dataset "
            f"{', '.join(datasets)} {'is' if len(datasets) == 1 else 'are'} of protocol class_disjoint, whose "
            "test classes are evaluated all against all (no database apart from the queries, and no anchors of "
            "the test classes), so evaluate writes no two-stage rows; select retrieval exact, or a dataset of "
            "protocol closed_set"
        )
    kept = losses or (
        _as_strings(selectors["loss"])
        if "loss" in selectors
        else list(map(str, config["losses"]))
    )
    kept = [loss for loss in kept if loss in config["losses"]]
    if kept and not any(
        loss_has_anchors(config["losses"][loss]["impl"]) for loss in kept
    ):
        raise ConfigError(
            f"config key {key}.retrieval: {', '.join(wanted)} can never match: no loss selected "
            f"({', '.join(kept)}) learns class anchors, and two-stage retrieval runs only for losses that do "
            f"({', '.join(n for n in LOSSES.names() if loss_has_anchors(n))}); select retrieval exact, or a loss "
            "with anchors"
        )


def check_tables(config: dict) -> None:
    """What a declared table selects must exist, so that nothing silently
    drops out or is mislabelled: every value of ``select`` and of an
    explicit row names a configured dataset, regime, backbone, loss (or a
    retrieval or distance that is evaluated); an explicit row asks only for
    values ``select`` keeps; explicit rows have distinct labels; a table
    laying out losses has a row for every loss its ``select`` keeps (no
    distance, retrieval or fixed factor that leaves one out); and
    ``baseline`` is an explicit row's label or a loss the table shows."""
    values = _table_values(config)
    for table, decl in (config.get("tables") or {}).items():
        _check_attributes(table, decl)
        select = decl.get("select") or {}
        _check_selectors(config, f"tables.{table}.select", select, values)
        _check_two_stage(config, f"tables.{table}.select", select)
        shown = {
            a: [str(v) for v in (w if isinstance(w, list) else [w])]
            for a, w in select.items()
        }
        rows = decl.get("rows") or []
        explicit = [row for row in rows if isinstance(row, dict)]
        labels: dict[str, int] = {}
        for i, row in enumerate(explicit):
            selectors = {k: v for k, v in row.items() if k != "label"}
            key = f"tables.{table}.rows[{i}]"
            _check_selectors(config, key, selectors, values)
            _check_two_stage(config, key, {**select, **selectors})
            for attribute, wanted in selectors.items():
                wanted = [
                    str(v) for v in (wanted if isinstance(wanted, list) else [wanted])
                ]
                if attribute in shown and not set(wanted) & set(shown[attribute]):
                    raise ConfigError(
                        f"config key {key}.{attribute}: {', '.join(wanted)} is not among what "
                        f"tables.{table}.select.{attribute} keeps ({', '.join(shown[attribute])}), so "
                        "the row would be empty; change the row or the select"
                    )
            label = str(row.get("label", " / ".join(map(str, selectors.values()))))
            if label in labels:
                raise ConfigError(
                    f"config key {key}.label: rows {labels[label]} and {i} are both labelled {label!r}, "
                    "so one would hide the other; give every row its own label"
                )
            labels[label] = i
        if not explicit and "loss" in laid_out(decl):
            for loss in ranked_losses(config, {"select": select}):
                problem = _loss_rows_problem(config, loss, select)
                if problem:
                    raise ConfigError(
                        f"config key tables.{table}.select: the row of loss {loss!r} would be empty: {problem}; "
                        f"change the select, or name the losses to show in tables.{table}.select.loss"
                    )
        if decl.get("reference"):
            _check_reference(table, decl, explicit, labels, shown, values)
        baseline = decl.get("baseline")
        if baseline is None or str(baseline) in labels:
            continue
        losses = [
            loss
            for loss in values["loss"]
            if "loss" not in shown or loss in shown["loss"]
        ]
        if str(baseline) not in losses:
            raise ConfigError(
                f"config key tables.{table}.baseline: {baseline!r} is "
                + (
                    f"no row label ({', '.join(map(repr, labels))}) and "
                    if explicit
                    else ""
                )
                + f"no loss this table shows ({', '.join(losses)}){_swept_hint(config, baseline)}, so "
                "nothing would be compared with it; name one of those, or null for no significance marker"
            )


def _check_reference(
    table: str, decl: dict, explicit: list, labels: dict, shown: dict, values: dict
) -> None:
    """Every row and metric of a table with ``reference`` has a published
    value (``workflow.tables.reference_problem``). The rows are known here
    when they are explicit, or laid out by dataset, regime, backbone and
    loss (the values the table's ``select`` keeps); otherwise the table's
    job checks them against the rows it builds."""
    import itertools

    from workflow.tables import reference_problem

    rows = decl.get("rows") or ["loss"]
    if explicit:
        labels_ = list(labels)
    elif all(attribute in CELL_SECTIONS for attribute in rows):
        kept = [[v for v in values[a] if a not in shown or v in shown[a]] for a in rows]
        labels_ = [" / ".join(combination) for combination in itertools.product(*kept)]
    else:
        labels_ = None
    problem = reference_problem(table, decl, labels_)
    if problem:
        raise ConfigError(problem)


def check_rankings(config: dict) -> None:
    """A ranking's blocks and ``select`` name attributes of
    results/metrics.csv (``seed`` too for blocks, ``loss`` never: the losses
    are what is ranked), its ``select`` values and its ``losses`` exist in
    the config, and its losses are distinct and kept by its ``select``."""
    from workflow.config import TABLE_ATTRIBUTES

    values = _table_values(config)
    for name, decl in (config.get("rankings") or {}).items():
        key = f"rankings.{name}"
        allowed = [a for a in TABLE_ATTRIBUTES if a != "loss"] + ["seed"]
        for attribute in decl["blocks"]:
            if attribute not in allowed:
                raise ConfigError(
                    f"config key {key}.blocks: {attribute!r} cannot make blocks{did_you_mean(str(attribute), allowed)}"
                    f"; blocks are combinations of {', '.join(allowed)} (the losses are what is ranked)"
                )
        _check_laid_out_once(
            key, [("blocks", attribute) for attribute in decl["blocks"]]
        )
        for attribute in decl.get("select") or {}:
            if attribute not in TABLE_ATTRIBUTES:
                raise ConfigError(
                    f"config key {key}.select.{attribute}: {attribute!r} is not a cell attribute; a ranking "
                    f"selects by {', '.join(TABLE_ATTRIBUTES)}"
                )
        select = decl.get("select") or {}
        _check_selectors(config, f"{key}.select", select, values)
        _check_two_stage(config, f"{key}.select", select, decl.get("losses"))
        kept = ranked_losses(config, {"select": select})
        losses = ranked_losses(config, decl)
        for loss in losses:
            if loss not in kept:
                raise ConfigError(
                    f"config key {key}.losses: {loss!r} is no loss this ranking selects ({', '.join(kept)})"
                    f"{_swept_hint(config, loss)}; name one of those"
                )
        if len(set(losses)) != len(losses):
            raise ConfigError(
                f"config key {key}.losses: {losses} names a loss twice; name each once"
            )
        if len(losses) < 2:
            raise ConfigError(
                f"config key {key}: only {', '.join(losses)} would be ranked; a ranking needs 2 losses or more"
            )
        for loss in losses:
            problem = _loss_rows_problem(config, loss, select, decl["metric"])
            if problem:
                raise ConfigError(
                    f"config key {key}: loss {loss!r} would have no values of {decl['metric']}: "
                    f"{problem}; a ranking never ranks the other losses without it: change "
                    f"{key}.select or {key}.metric, or leave {loss!r} out of {key}.losses"
                )


def _loss_rows_problem(
    config: dict, loss: str, select: dict, metric: str | None = None
) -> str | None:
    """Why ``select`` would leave ``loss`` without a row (of ``metric``) in
    results/metrics.csv, as far as the config tells before any job: a
    distance it is not evaluated in, a retrieval it has not (two-stage
    needs anchors), a fixed factor (epochs, ...) that no setting of the
    loss has; with ``metric``, also a metric that retrieval does not write
    or accuracy of a loss that cannot classify. None when it may have rows."""
    from workflow.config import (
        FIXED_FACTORS,
        candidate_settings,
        cells,
        dataset_evaluation,
    )
    from workflow.geometry import resolve_distances
    from workflow.losses import loss_classifies, loss_geometry, loss_has_anchors
    from workflow.retrieval.metrics import METRICS

    def wanted(attribute: str) -> list[str] | None:
        value = select.get(attribute)
        return (
            None
            if value is None
            else [str(v) for v in (value if isinstance(value, list) else [value])]
        )

    impl = config["losses"][loss]["impl"]
    evaluation = config.get("evaluation") or {}
    distances = resolve_distances(
        evaluation.get("distances", ["own"]), loss_geometry(impl)
    )
    if wanted("distance") and not set(wanted("distance")) & set(distances):
        return (
            f"it is evaluated in {', '.join(distances)} only (its geometry and evaluation.distances), "
            f"not in {', '.join(wanted('distance'))}"
        )
    classes = (evaluation.get("two_stage") or {}).get("classes", [1, 2])
    retrievals = ["exact"] + (
        [f"two_stage_c{c}" for c in classes] if loss_has_anchors(impl) else []
    )
    kept = [r for r in wanted("retrieval") or ["exact"] if r in retrievals]
    if not kept:
        asked = ", ".join(wanted("retrieval"))
        return (
            f"{impl} exports no anchors, so its only retrieval is exact, not {asked}"
            if not loss_has_anchors(impl)
            else f"its retrievals are {', '.join(retrievals)} (evaluation.two_stage.classes), not {asked}"
        )
    # The metrics of the datasets the select keeps (their protocols fill in
    # recall_at and clustering).
    evaluations = [
        dataset_evaluation(config, d)
        for d in wanted("dataset") or config["datasets"]
        if d in config["datasets"]
    ]
    if metric and not any(
        metric in METRICS.names(e, retrieval=r) for e in evaluations for r in kept
    ):
        return (
            f"{metric} is written for exact retrieval only, not for {', '.join(kept)}"
        )
    if metric == "accuracy" and not (loss_classifies(impl) or loss_has_anchors(impl)):
        return f"{impl} neither classifies nor exports anchors, so its accuracy is NaN"
    factors = [f for f in FIXED_FACTORS if f != "backbone" and wanted(f)]
    if factors:
        grid = [
            c
            for c in cells(config)
            if c.loss == loss
            and all(
                str(getattr(c, a)) in (wanted(a) or [str(getattr(c, a))])
                for a in ("dataset", "regime", "backbone")
            )
        ]
        settings = [s for c in grid for s in candidate_settings(config, c).values()]
        if not any(
            all(str(FIXED_FACTORS[f](s)) in wanted(f) for f in factors)
            for s in settings
        ):
            has = "; ".join(
                f"{f} {', '.join(sorted({str(FIXED_FACTORS[f](s)) for s in settings}))}"
                for f in factors
            )
            asked = "; ".join(f"{f} {', '.join(wanted(f))}" for f in factors)
            return f"it is trained with {has}, not {asked}"
    return None


def example_queries_problem(
    wanted: int, dataset: str, queries: int, how: str = ""
) -> str | None:
    """Why ``figures.example_queries`` (``wanted``) cannot be drawn from the
    ``queries`` queries of ``dataset`` (``how``: how that number is known),
    or None. The figure itself also asks (for the other datasets)."""
    if wanted <= queries:
        return None
    return (
        f"config key figures.example_queries: {wanted} queries asked for the retrieval-examples figure, "
        f"but dataset {dataset} has {queries} queries{how}; lower figures.example_queries to at most "
        f"{queries} (or raise datasets.{dataset}.query_per_class)"
    )


def check_figures(config: dict) -> None:
    """The retrieval-examples figure can draw its queries from every
    dataset whose number of queries the config gives: query_per_class
    times the listed ``classes`` (otherwise the number of classes is known
    once the dataset is prepared, and the figure checks it)."""
    wanted = (config.get("figures") or {}).get("example_queries", 3)
    for dataset, spec in config["datasets"].items():
        if spec.get("classes"):
            per_class, classes = spec.get("query_per_class", 10), len(spec["classes"])
            how = f" ({per_class} per class x {classes} classes)"
            problem = example_queries_problem(wanted, dataset, per_class * classes, how)
            if problem:
                raise ConfigError(problem)


def known_classes(name: str, spec: dict) -> tuple[int, str] | None:
    """(number of classes, how it is known) of dataset ``name`` where the
    config gives it: the ``classes`` it lists, or the number its source's
    registration fixes (``DATASETS.metadata``: ``classes``); None where only
    prepare finds it out (then the split jobs check the counts)."""
    from workflow.datasets import DATASETS

    if spec.get("classes"):
        return len(spec["classes"]), f"the classes datasets.{name}.classes lists"
    count = DATASETS.metadata(spec["source"]).get("classes")
    return (count, f"dataset {spec['source']!r} has {count}") if count else None


def check_class_counts(config: dict) -> None:
    """At least ``workflow.splits.MIN_CLASSES`` classes wherever classes are
    trained, retrieved, clustered or selected on, before any job where the
    config gives the numbers (:func:`known_classes`): the training and test
    classes of protocol class_disjoint (``train_classes``, or the dataset's
    registered boundary), and with ``selection`` the classes class-disjoint
    validation holds out and those its trials train on
    (``validation.class_fraction``); and the classes per batch of a
    class-balanced sampler, at most those trained on. The split jobs check the same with the
    prepared labels (``workflow.splits``)."""
    from workflow.config import protocol_spec
    from workflow.splits import (
        class_disjoint_boundary_problem,
        class_fraction_problem,
        held_out_classes,
    )

    validation = config.get("validation") or {}
    for name, spec in config["datasets"].items():
        known = known_classes(name, spec)
        protocol = protocol_spec(spec)
        train_classes = protocol.get("train_classes")
        if protocol.get("protocol") == "class_disjoint":
            default = (
                ""
                if spec.get("train_classes") is not None
                else (
                    f" (the official boundary of {spec['source']!r}, taken while the key is not set)"
                )
            )
            if known and train_classes is not None:
                problem = class_disjoint_boundary_problem(
                    train_classes, known[0], name, f" ({known[1]})", default
                )
                if problem:
                    raise ConfigError(problem)
            trained = (
                (train_classes, f"datasets.{name}.train_classes")
                if train_classes is not None
                else None
            )
        else:
            trained = known
        if trained is None:
            continue
        _check_classes_per_batch(config, name, "its cells", *trained)
        if not config.get("selection"):
            continue
        if protocol.get("protocol") == "class_disjoint" or validation.get(
            "class_disjoint"
        ):
            fraction = validation.get("class_fraction", 0.5)
            problem = class_fraction_problem(
                fraction, trained[0], f" of dataset {name} ({trained[1]})"
            )
            if problem:
                raise ConfigError(problem)
            held = held_out_classes(fraction, trained[0])
            trained = (
                trained[0] - held,
                f"{trained[1]}, less {held} held out by validation.class_fraction",
            )
        _check_classes_per_batch(config, name, "its selection trials", *trained)


def _check_classes_per_batch(
    config: dict, dataset: str, what: str, classes: int, how: str
) -> None:
    """A class-balanced sampler's batch_size / m_per_class classes per batch
    are at most the ``classes`` that ``what`` of ``dataset`` train on (the
    sampler checks the same when training starts)."""
    from workflow.config import training_settings

    entries = [(name, entry) for name, entry in config["losses"].items()]
    entries += [
        (base, entry)
        for base, trials in config["trials"].items()
        for entry in trials.values()
    ]
    for loss, entry in entries:
        m = (entry.get("sampler") or {}).get("m_per_class")
        for backbone in config["backbones"] if m else []:
            batch_size = training_settings(config, backbone, entry)["batch_size"]
            if batch_size // m > classes:
                raise ConfigError(
                    f"config key losses.{loss}.sampler.m_per_class: {m} with training.batch_size {batch_size} "
                    f"(backbone {backbone}) needs {batch_size // m} classes per batch, but {what} of dataset "
                    f"{dataset} train on {classes} classes ({how}); raise m_per_class to at least "
                    f"{-(-batch_size // classes)} (dividing the batch size) or lower the batch size"
                )


def _known_databases(config: dict):
    """(dataset, its label, database size, how it is known, the key that sets it) of
    every database whose size the config gives: closed-set test databases
    of ``database_per_class`` per class, and with ``selection`` the
    closed-set validation databases (``validation.database_per_class``),
    where the number of classes is known (:func:`known_classes`). All
    against all, the database is the other test images (known once
    prepared; evaluate checks it)."""
    validation = config.get("validation") or {}
    for name, spec in config["datasets"].items():
        known = known_classes(name, spec)
        if not known or spec.get("protocol", "closed_set") == "class_disjoint":
            continue
        n, how = known
        per_class = spec.get("database_per_class")
        if per_class is not None:
            key = f"datasets.{name}.database_per_class"
            yield (
                name,
                name,
                per_class * n,
                f"{per_class} per class x {n} classes; {how}",
                key,
            )
        if config.get("selection") and not validation.get("class_disjoint"):
            per_class = validation.get("database_per_class", 20)
            yield (
                name,
                f"{name} (the validation split, on which selection trials are scored)",
                per_class * n,
                f"{per_class} per class x {n} classes; {how}",
                "validation.database_per_class",
            )


def check_cutoffs(config: dict) -> None:
    """Every cutoff of ``evaluation`` (precision_at, recall_at,
    top_k_error) is at most the database it ranks, wherever the config
    gives that size (:func:`_known_databases`); evaluate checks the others
    with the images it has."""
    from workflow.config import dataset_evaluation
    from workflow.retrieval.metrics import METRICS

    for dataset, label, size, how, key in _known_databases(config):
        # The dataset's own cutoffs (its protocol fills in recall_at).
        for evaluation_key, ks in METRICS.cutoffs(
            dataset_evaluation(config, dataset)
        ).items():
            if ks and max(ks) > size:
                raise ConfigError(
                    f"config key evaluation.{evaluation_key}: cutoff {max(ks)} exceeds the database of dataset "
                    f"{label}: {size} images ({how}); use cutoffs up to {size}, or raise {key}"
                )


def check_config_files(paths) -> None:
    """Every config file that exists, by :func:`check_config_file` (before
    anything reads it)."""
    for path in paths:
        if Path(path).is_file():
            check_config_file(path)


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


if __name__ == "__main__":
    # `python -m workflow.guards FILE...`: check config files as the workflow
    # does. For a file given with --configfile, Snakemake's own reader runs
    # before the workflow and names neither the file nor the line.
    import sys

    try:
        for config_file in sys.argv[1:]:
            check_config_file(config_file)
            print(
                f"config file {config_file}: a mapping of keys; `snakemake -n` checks its values"
            )
    except ConfigError as error:
        sys.exit(str(error))
