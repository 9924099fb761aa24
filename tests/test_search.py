"""Search spaces declared with each loss and the equal-budget trial design
(workflow/search.py, issue 27)."""

from __future__ import annotations

import copy
import json
import math

import pytest
from conftest import REPO, TINY_CONFIG
from scipy.stats import qmc

from workflow.config import ConfigError
from workflow.config_loader import load_config
from workflow.losses import LOSSES, loss_has_parameters
from workflow.registry import ParameterError
from workflow.search import COMMON, Choice, Range, design, loss_space, search_table


def test_every_declared_space_passes_the_loss_parameter_checks():
    """The ends and centre of every declared range (every choice) are
    values the loss accepts, so no trial can fail its parameter check; each
    dimension names its source; every loss with parameters of its own has
    an lr_multiplier dimension and none without."""
    for impl in LOSSES.names():
        space = loss_space(impl)
        assert set(COMMON) <= set(space), impl
        assert ("lr_multiplier" in space) == loss_has_parameters(impl), impl
        for key, dim in space.items():
            assert dim.source and (
                "paper" in dim.source or "ours" in dim.source or "code" in dim.source
            ), (impl, key)
            values = (
                dim.values
                if isinstance(dim, Choice)
                else (dim.low, dim.high, dim.centre)
            )
            for value in values:
                if key.startswith("params."):
                    LOSSES.check_params(impl, {key.split(".", 1)[1]: value})
                else:
                    assert (
                        isinstance(value, float) and value > 0 and math.isfinite(value)
                    ), (impl, key)
    # The loss's own keyword arguments: every params.* key is one of them.
    import inspect

    for impl in LOSSES.names():
        accepted = set(inspect.signature(LOSSES.get(impl)).parameters)
        for key in loss_space(impl):
            if key.startswith("params."):
                assert key.split(".", 1)[1] in accepted, (impl, key)


def test_a_check_catches_a_bad_declared_range():
    """The check above fails on a range outside the loss's parameter rule."""
    bad = Range(-1.0, 4.0, 1.0, "ours", scale="linear")
    with pytest.raises(ParameterError):
        LOSSES.check_params("cam", {"margin": bad.low})


def test_the_design_is_the_centre_then_scrambled_sobol_points():
    space = {
        "params.margin": Range(0.25, 4.0, 1.0, "ours"),
        "params.reduction": Choice(("mean", "sum"), "mean", "ours"),
        "training.lr": Range(1.0e-4, 1.0e-2, 1.0e-3, "ours", scale="log"),
    }
    settings = design(space, 12, seed=3)
    assert len(settings) == 12
    assert settings[0] == {
        "params.margin": 1.0,
        "params.reduction": "mean",
        "training.lr": 1.0e-3,
    }
    # The other 11: scipy's scrambled Sobol points (seeded), mapped on each scale.
    with pytest.warns(UserWarning, match="power of 2"):
        points = qmc.Sobol(3, scramble=True, rng=3).random(11)
    for setting, (u_margin, u_reduction, u_lr) in zip(settings[1:], points):
        assert setting["params.margin"] == pytest.approx(
            0.25 * 16**u_margin, rel=5e-3
        )  # 3 significant digits
        assert setting["params.reduction"] == ("mean" if u_reduction < 0.5 else "sum")
        assert setting["training.lr"] == pytest.approx(
            1.0e-4 * 100**u_lr, rel=5e-3
        )  # 3 significant digits
    assert design(space, 12, seed=3) == settings  # reproducible
    assert design(space, 12, seed=4) != settings
    # Spread: every value inside its range, both choices drawn.
    assert all(0.25 <= s["params.margin"] <= 4.0 for s in settings)
    assert {s["params.reduction"] for s in settings} == {"mean", "sum"}


SEARCHED = {
    **TINY_CONFIG,
    "losses": {
        "ce": {"impl": "ce", "search": "default"},
        "cam": {
            "impl": "cam",
            "search": {
                "params.reduction": None,
                "params.margin": {"range": [0.5, 2.0]},
            },
            "params": {"min_norm": 2.0},
        },
        "lm": {"impl": "lm", "search": "default"},
    },
    "selection": {"budget": 12, "seed": 0},
}


def test_search_gives_every_loss_the_budget_and_fixes_what_the_entry_sets():
    config = load_config(copy.deepcopy(SEARCHED))
    assert {base: len(trials) for base, trials in config["trials"].items()} == {
        "ce": 12,
        "cam": 12,
        "lm": 12,
    }
    assert list(config["trials"]["cam"])[:2] == ["cam-t00", "cam-t01"]
    cam = config["trials"]["cam"]
    values = [config["sweeps"][name]["values"] for name in cam]
    # min_norm fixed by the entry, reduction dropped by the override, the
    # margin's range replaced (centre: the geometric middle, 1.0).
    assert all(entry["params"]["min_norm"] == 2.0 for entry in cam.values())
    assert all(
        "params.reduction" not in v and "params.min_norm" not in v for v in values
    )
    assert values[0]["params.margin"] == 1.0
    assert all(0.5 <= v["params.margin"] <= 2.0 for v in values)
    assert set(values[0]) == {
        "params.margin",
        "params.init_norm",
        "lr_multiplier",
        "training.lr",
        "training.weight_decay",
    }
    # Trial values reach the trial's settings: lr, weight decay, lr multiplier.
    t03 = cam["cam-t03"]
    assert t03["training"]["lr"] == values[3]["training.lr"]
    assert t03["lr_multiplier"] == values[3]["lr_multiplier"]
    # CE: lr multiplier of its classifier, lr and weight decay only.
    assert set(config["sweeps"]["ce-t05"]["values"]) == {
        "lr_multiplier",
        "training.lr",
        "training.weight_decay",
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c.pop("selection"),
            "config key losses.ce.search: a search needs selection.budget",
        ),
        (
            lambda c: c["losses"]["ce"].update(search="wide"),
            "config key losses.ce.search: 'default'",
        ),
        (
            lambda c: c["losses"]["ce"].update(search={"margin": {"range": [1, 2]}}),
            "config key losses.ce.search.margin: a dimension is params.<name>, training.<name> or lr_multiplier",
        ),
        (
            lambda c: c["losses"]["ce"].update(
                search={"training.lr": {"range": [0.1]}}
            ),
            "config key losses.ce.search.training.lr: range must be two numbers [low, high], got [0.1]",
        ),
        (
            lambda c: c["losses"]["ce"].update(
                search={"training.lr": {"range": [-1.0, 1.0], "scale": "log"}}
            ),
            "config key losses.ce.search.training.lr: a log range needs positive ends",
        ),
        (
            lambda c: c["losses"]["lm"].update(params={"beta": [0.1, 0.2]}),
            "config key losses.lm.params.beta: a sweep cannot be combined with losses.lm.search",
        ),
    ],
)
def test_search_errors_name_the_key(change, message):
    config = copy.deepcopy(SEARCHED)
    change(config)
    with pytest.raises(ConfigError, match=None) as error:
        load_config(config)
    assert message in str(error.value)


def test_python_m_workflow_lists_every_loss_search_space():
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run(
        [sys.executable, "-m", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = search_table()
    assert {r["loss"] for r in rows} == set(LOSSES.names())
    for row in rows:
        assert (
            f"{row['loss']:<13} {row['key']:<22} {row['values']:<40} {row['source']}"
            in out
        )


def test_a_loss_entry_without_lr_multiplier_gets_its_shipped_default():
    """Issue 27, item 5: Proxy-Anchor's proxies at the paper's 100x, CAM's
    anchors at 5.92x (the searches' setting; at 1x they never left the margin in a short run),
    1x for the others; a value the entry writes wins, and searched trials
    keep their own."""
    from workflow.config import Cell, cell_settings
    from workflow.losses import shipped_defaults

    config = copy.deepcopy(TINY_CONFIG)
    config["losses"] = {
        "ce": {"impl": "ce"},
        "cam": {"impl": "cam"},
        "proxy_anchor": {"impl": "proxy_anchor"},
        "cam_1x": {"impl": "cam", "lr_multiplier": 1.0},
    }
    config = load_config(config)
    dataset, regime, backbone = (
        next(iter(config[k])) for k in ("datasets", "regimes", "backbones")
    )

    def multiplier(loss):
        cell = Cell(dataset, regime, backbone, loss, config["seeds"][0])
        return cell_settings(config, cell)["loss_lr_multiplier"]

    assert [multiplier(x) for x in config["losses"]] == [1.0, 5.92, 100.0, 1.0]
    assert "paper" in shipped_defaults("proxy_anchor")["lr_multiplier"].source
    assert "ours" in shipped_defaults("cam")["lr_multiplier"].source
    searched = load_config(copy.deepcopy(SEARCHED))["trials"]["cam"]
    values = [entry["lr_multiplier"] for entry in searched.values()]
    assert values[0] == 31.6 and len(set(values)) == len(values)


def test_every_shipped_default_passes_its_losss_checks():
    """Every shipped parameter is one the loss declares, with a value its
    checks accept (the check build_loss runs), and every shipped
    lr_multiplier is positive."""
    from workflow.losses import LOSSES, shipped_defaults

    for impl in LOSSES.names():
        shipped = shipped_defaults(impl)
        assert shipped["lr_multiplier"].value > 0, impl
        params = {
            key.removeprefix("params."): default.value
            for key, default in shipped.items()
            if key != "lr_multiplier"
        }
        assert all(
            key.startswith("params.") or key == "lr_multiplier" for key in shipped
        )
        LOSSES.check_params(impl, params)
        assert all(default.source for default in shipped.values()), impl


def test_cams_shipped_setting_is_the_searches_best_on_both_protocols():
    """CAM ships the trial with the best mean rank over the two fair-fight
    searches' committed selection records (ties: the better mean score
    relative to each protocol's best), every value as searched."""
    from workflow.losses import shipped_defaults

    records = [
        json.loads((REPO / "docs/results" / path).read_text())
        for path in [
            "fair_cifar100_closed/selection/cifar100/fewshot20/small_cnn/cam.json",
            "fair_cifar100_disjoint/selection/cifar100/k50/small_cnn/cam.json",
        ]
    ]
    scores = [{s["trial"]: s["score"] for s in r["scores"]} for r in records]
    assert scores[0].keys() == scores[1].keys() and len(scores[0]) == 12

    def rank(trial, protocol):
        return 1 + sum(v > protocol[trial] for v in protocol.values())

    def key(trial):
        mean_rank = sum(rank(trial, p) for p in scores) / 2
        relative = sum(p[trial] / max(p.values()) for p in scores) / 2
        return (mean_rank, -relative)

    best = min(scores[0], key=key)
    values = next(s["values"] for s in records[0]["scores"] if s["trial"] == best)
    shipped = {k: d.value for k, d in shipped_defaults("cam").items()}
    assert shipped == {k: v for k, v in values.items() if not k.startswith("training.")}
