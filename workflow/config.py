"""Config handling that needs no Snakemake: sweep expansion, registry checks,
the list of cells and each cell's resolved settings and hash.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types and
ranges; this module checks what the schema cannot know (registered names)
and names the offending key in every error.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is wrong; the message names its key."""


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    regime: str
    backbone: str
    loss: str
    seed: int

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.regime}/{self.backbone}/{self.loss}/seed{self.seed}"


def _value_tag(value) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def expand_losses(losses: dict) -> dict:
    """Expand list-valued loss parameters into one entry per combination.

    ``cam: {impl: cam, params: {margin: [1, 2]}}`` becomes ``cam-margin1`` and
    ``cam-margin2``. Entries without lists are returned unchanged.
    """
    expanded = {}
    for name, entry in losses.items():
        params = entry.get("params", {})
        swept = {k: v for k, v in params.items() if isinstance(v, list)}
        if not swept:
            expanded[name] = entry
            continue
        for values in itertools.product(*swept.values()):
            choice = dict(zip(swept, values))
            tag = "-".join(f"{k}{_value_tag(v)}" for k, v in choice.items())
            new = copy.deepcopy(entry)
            new["params"] = {**params, **choice}
            new_name = f"{name}-{tag}"
            if new_name in losses or new_name in expanded:
                raise ConfigError(
                    f"losses.{name}: expanding the list gives {new_name!r}, "
                    "which already exists"
                )
            expanded[new_name] = new
    return expanded


def check_registered(config: dict) -> None:
    """Every dataset source, backbone arch and loss impl must be registered."""
    from workflow.backbones import BACKBONES
    from workflow.datasets import DATASETS
    from workflow.losses import LOSSES

    checks = [
        ("datasets", "source", DATASETS),
        ("backbones", "arch", BACKBONES),
        ("losses", "impl", LOSSES),
    ]
    for section, key, registry in checks:
        for name, entry in config[section].items():
            if entry[key] not in registry.names():
                raise ConfigError(
                    f"config key {section}.{name}.{key}: unknown {registry.kind} "
                    f"{entry[key]!r}; registered: {', '.join(registry.names())}"
                )


def validate_config(config: dict) -> dict:
    """Check ``config`` against the schema with ``snakemake.utils.validate``
    and fill in defaults (in place and returned). A violation raises
    :class:`ConfigError` naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA))
    except WorkflowError as error:
        raise ConfigError(describe_schema_error(error)) from error
    return config


def describe_schema_error(error: Exception) -> str:
    """One line naming the config key of a schema violation (the jsonschema
    error inside Snakemake's WorkflowError), then the schema's description."""
    import jsonschema

    inner = error  # Snakemake raises its WorkflowError while handling it
    while inner is not None and not isinstance(inner, jsonschema.ValidationError):
        inner = inner.__cause__ or inner.__context__
    if inner is None:
        return str(error)
    key = ".".join(str(part) for part in inner.absolute_path) or "(top level)"
    message = f"config key {key}: {inner.message}"
    description = inner.schema.get("description") if isinstance(inner.schema, dict) else None
    if description:
        message += f"\n  {key}: {description}"
    return message


def load_config(config: dict) -> dict:
    """Schema check, defaults, sweep expansion and registry check."""
    return prepare_config(validate_config(copy.deepcopy(config)))


def prepare_config(config: dict) -> dict:
    """Validated config -> config with sweeps expanded and names checked.

    Returns a deep copy: the schema fills defaults with shared objects.
    """
    config = copy.deepcopy(config)
    config["losses"] = expand_losses(config["losses"])
    check_registered(config)
    check_samplers(config)
    return config


def check_samplers(config: dict) -> None:
    """A class-balanced sampler's m_per_class must divide the batch size of
    every cell of its loss, with at least two classes per batch. (Whether
    the dataset has batch_size/m classes is checked when training starts.)"""
    for loss, entry in config["losses"].items():
        m = (entry.get("sampler") or {}).get("m_per_class")
        if m is None:
            continue
        for backbone in config["backbones"]:
            batch_size = training_settings(config, backbone, loss)["batch_size"]
            if batch_size % m or batch_size < 2 * m:
                raise ConfigError(
                    f"config key losses.{loss}.sampler.m_per_class: {m} must divide "
                    f"training.batch_size ({batch_size} for backbone {backbone!r}) into "
                    "at least two classes per batch; change one of them"
                )


def cells(config: dict) -> list[Cell]:
    return [
        Cell(*values)
        for values in itertools.product(
            config["datasets"],
            config["regimes"],
            config["backbones"],
            config["losses"],
            config["seeds"],
        )
    ]


def training_settings(config: dict, backbone: str, loss: str) -> dict:
    """Global training settings, overridden by the backbone's, then the loss's."""
    return {
        **config["training"],
        **config["backbones"][backbone].get("training", {}),
        **config["losses"][loss].get("training", {}),
    }


def cell_settings(config: dict, cell: Cell) -> dict:
    """Everything that determines a cell's trained model, as plain data."""
    backbone = config["backbones"][cell.backbone]
    loss = config["losses"][cell.loss]
    return {
        "dataset": cell.dataset,
        "regime": cell.regime,
        "backbone": cell.backbone,
        "loss": cell.loss,
        "seed": int(cell.seed),
        "dataset_spec": config["datasets"][cell.dataset],
        "regime_spec": config["regimes"][cell.regime],
        "arch": backbone["arch"],
        "embedding_size": backbone["embedding_size"],
        "backbone_params": backbone.get("params", {}),
        "loss_impl": loss["impl"],
        "loss_params": loss.get("params", {}),
        "loss_lr_multiplier": loss.get("lr_multiplier", 1.0),
        "sampler": loss.get("sampler"),
        "training": training_settings(config, cell.backbone, cell.loss),
    }


def settings_hash(settings: dict) -> str:
    """A short stable hash of a cell's settings (recorded in its outputs)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
