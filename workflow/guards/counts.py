"""Checks of sizes the config gives, before any data is prepared:

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
"""

from __future__ import annotations

from workflow.config import ConfigError


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
    from workflow.splits import class_disjoint_boundary_problem
    from workflow.validation_split import class_fraction_problem, held_out_classes

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
