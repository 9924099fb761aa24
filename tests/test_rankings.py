"""Rankings over blocks (workflow/rankings.py, config key ``rankings``):
ranks, Friedman test and post-hoc p-values against a hand-computed case and
scipy, every degenerate input (ties, one block, two losses) defined, and
the critical-difference figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow.config import ConfigError
from workflow.rankings import (
    block_ranks,
    build_ranking,
    critical_difference,
    friedman,
    posthoc,
    ranking_note,
    render_ranking,
)

# A hand-computed case: 4 datasets (blocks) x 3 losses, map (higher is better).
VALUES = {
    "d1": {"a": 0.90, "b": 0.80, "c": 0.70},
    "d2": {"a": 0.85, "b": 0.86, "c": 0.60},
    "d3": {"a": 0.70, "b": 0.60, "c": 0.60},  # b and c tie
    "d4": {"a": 0.90, "b": 0.50, "c": 0.40},
}


def metrics_frame(
    values: dict, metric: str = "map", seeds=(0, 1), spread: float = 0.0
) -> pd.DataFrame:
    """results/metrics.csv rows: each block a dataset, each value per seed
    (value + spread * (seed - mean seed), so the mean over seeds is value)."""
    centre = np.mean(seeds)
    return pd.DataFrame(
        [
            dict(
                dataset=block,
                regime="full",
                backbone="b",
                loss=loss,
                seed=seed,
                geometry="euclidean",
                distance="euclidean",
                retrieval="exact",
                metric=metric,
                value=v + spread * (seed - centre),
            )
            for block, by_loss in values.items()
            for loss, v in by_loss.items()
            for seed in seeds
        ]
    )


def test_ranks_statistic_and_p_values_match_the_hand_computed_case():
    ranking = build_ranking(
        "t",
        {"blocks": ["dataset"], "metric": "map"},
        metrics_frame(VALUES, spread=0.01),
    )
    # Ranks per block, 1 the best (highest map), the tie of d3 shared.
    expected_ranks = [[1, 2, 3], [2, 1, 3], [1, 2.5, 2.5], [1, 2, 3]]
    assert ranking["ranks"].to_numpy().tolist() == expected_ranks
    assert ranking["average"].to_dict() == {"a": 1.25, "b": 1.875, "c": 2.875}
    # Friedman by hand: rank sums 5, 7.5, 11.5; n = 4, k = 3;
    # 12 / (n k (k+1)) sum R^2 - 3 n (k+1) = 0.25 * 213.5 - 48 = 5.375,
    # tie correction 1 - sum(t^3 - t) / (n k (k^2 - 1)) = 1 - 6/96 = 0.9375.
    chi2 = 5.375 / 0.9375
    assert ranking["chi2"] == pytest.approx(chi2)
    assert ranking["p"] == pytest.approx(np.exp(-chi2 / 2))  # chi-square sf with 2 df
    scipy_result = stats.friedmanchisquare(
        *np.array([list(v.values()) for v in VALUES.values()]).T
    )
    assert ranking["chi2"] == pytest.approx(scipy_result.statistic)
    assert ranking["p"] == pytest.approx(scipy_result.pvalue)
    # Nemenyi by hand: q = |R_i - R_j| / sqrt(k(k+1) / 6n), p from the
    # studentized range (k groups, infinite df) at q sqrt(2).
    se = np.sqrt(3 * 4 / (6 * 4))
    for x, y in [("a", "b"), ("a", "c"), ("b", "c")]:
        q = abs(ranking["average"][x] - ranking["average"][y]) / se
        assert ranking["posthoc"].loc[x, y] == pytest.approx(
            stats.studentized_range.sf(q * np.sqrt(2), 3, np.inf)
        )
        assert ranking["posthoc"].loc[x, y] == ranking["posthoc"].loc[y, x]
    assert np.isnan(ranking["posthoc"].loc["a", "a"])
    # Critical difference: q_0.05 (3 groups) / sqrt(2) * sqrt(k(k+1)/6n) = 2.343 * 0.7071.
    assert ranking["cd"] == pytest.approx(2.3437 * se, rel=1e-3)
    assert ranking["cd"] == pytest.approx(critical_difference(3, 4))


def test_conover_is_holm_corrected_and_lower_is_better_is_respected():
    ranking = build_ranking(
        "t",
        {"blocks": ["dataset"], "metric": "map", "posthoc": "conover"},
        metrics_frame(VALUES),
    )
    import scikit_posthocs as sp

    raw = sp.posthoc_conover_friedman(
        -np.array([list(v.values()) for v in VALUES.values()])
    )
    pairs = [(0, 1), (0, 2), (1, 2)]
    holm = np.minimum(
        1,
        np.maximum.accumulate(np.sort([raw.iloc[i, j] for i, j in pairs]) * [3, 2, 1]),
    )
    by_size = np.argsort([raw.iloc[i, j] for i, j in pairs])
    for rank, index in enumerate(by_size):
        i, j = pairs[index]
        assert ranking["posthoc"].loc["abc"[i], "abc"[j]] == pytest.approx(holm[rank])
    # top1_error: lower is better, so the ranks turn round.
    errors = metrics_frame(VALUES, metric="top1_error")
    ranks = build_ranking("t", {"blocks": ["dataset"], "metric": "top1_error"}, errors)[
        "ranks"
    ]
    assert ranks.loc["d1"].tolist() == [3, 2, 1]


def test_every_degenerate_input_gives_a_documented_nan_never_p_zero():
    # One block (the default config's one seed): ranks, but no test.
    one = build_ranking(
        "t",
        {"blocks": ["dataset"], "metric": "map"},
        metrics_frame({"d1": VALUES["d1"]}),
    )
    assert one["average"].to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert (
        np.isnan(one["chi2"])
        and np.isnan(one["p"])
        and one["posthoc"].isna().all().all()
    )
    assert "no Friedman or post-hoc test (fewer than 2 blocks)" in ranking_note(
        {"blocks": ["dataset"], "metric": "map"}, one
    )
    # Two losses: Friedman needs 3.
    two = build_ranking(
        "t",
        {"blocks": ["dataset"], "metric": "map", "losses": ["a", "b"]},
        metrics_frame(VALUES),
    )
    assert np.isnan(two["p"]) and two["average"].to_dict() == {"a": 1.25, "b": 1.75}
    # Every block ties every loss: no test (scipy would give NaN with a warning).
    ties = {d: {"a": 0.5, "b": 0.5, "c": 0.5} for d in ["d1", "d2", "d3"]}
    tied = build_ranking(
        "t", {"blocks": ["dataset"], "metric": "map"}, metrics_frame(ties)
    )
    assert np.isnan(tied["p"]) and tied["average"].tolist() == [2.0, 2.0, 2.0]
    assert "every block ties every loss" in ranking_note(
        {"blocks": ["dataset"], "metric": "map"}, tied
    )
    # Every block ranks alike: Friedman and Nemenyi are defined (p > 0);
    # Conover's variance is 0, where scikit-posthocs returns p = 0: NaN here.
    alike = {d: {"a": 0.9, "b": 0.8, "c": 0.7} for d in ["d1", "d2", "d3"]}
    frame = metrics_frame(alike)
    nemenyi = build_ranking("t", {"blocks": ["dataset"], "metric": "map"}, frame)
    assert 0 < nemenyi["p"] < 1 and (nemenyi["posthoc"].stack().dropna() > 0).all()
    conover = build_ranking(
        "t", {"blocks": ["dataset"], "metric": "map", "posthoc": "conover"}, frame
    )
    assert 0 < conover["p"] < 1 and conover["posthoc"].isna().all().all()
    values = pd.DataFrame(alike).T
    assert friedman(values)[1] > 0
    assert posthoc(values, "map", "conover").isna().all().all()
    assert (block_ranks(values, "map").to_numpy() == [[1, 2, 3]] * 3).all()


def test_a_loss_without_a_value_in_a_block_is_named():
    frame = metrics_frame(VALUES)
    frame.loc[(frame["dataset"] == "d2") & (frame["loss"] == "c"), "value"] = np.nan
    with pytest.raises(
        ConfigError, match=r"rankings.t: map has no finite value for loss c in block d2"
    ):
        build_ranking("t", {"blocks": ["dataset"], "metric": "map"}, frame)
    with pytest.raises(ConfigError, match=r"rankings.t.losses: no values of map for z"):
        build_ranking(
            "t",
            {"blocks": ["dataset"], "metric": "map", "losses": ["a", "z"]},
            metrics_frame(VALUES),
        )
    # Two regimes of one seed would be averaged as if they were seeds.
    pooled = pd.concat(
        [metrics_frame(VALUES), metrics_frame(VALUES).assign(regime="few")]
    )
    with pytest.raises(
        ConfigError,
        match=r"rankings.t: row 'd1 / a' would average several results of one seed "
        r"that differ in regime \(full, few\)",
    ):
        build_ranking("t", {"blocks": ["dataset"], "metric": "map"}, pooled)


def test_blocks_over_seeds_rank_each_seed_and_the_outputs_render():
    frame = metrics_frame(
        {"digits": VALUES["d1"]}, seeds=(0, 1, 2), spread=0.2
    )  # seeds disagree
    decl = {"blocks": ["seed"], "metric": "map", "caption": "over seeds"}
    ranking = build_ranking("r", decl, frame)
    assert list(ranking["values"].index) == [0, 1, 2]
    ranks_csv, blocks_csv, markdown = render_ranking("r", decl, ranking)
    assert ranks_csv.splitlines()[0] == (
        "loss,average_rank,blocks,friedman_chi2,friedman_p,posthoc,critical_difference"
    )
    assert blocks_csv.splitlines()[0] == "seed,loss,value,rank"
    assert (
        "blocks over seeds illustrate the method" in markdown and "| loss" in markdown
    )


def test_the_critical_difference_figure_draws_with_and_without_a_test():
    from workflow.figures import critical_difference_figure

    for values in [VALUES, {"d1": VALUES["d1"]}]:
        decl = {"blocks": ["dataset"], "metric": "map"}
        ranking = build_ranking("t", decl, metrics_frame(values))
        fig = critical_difference_figure(
            ranking["average"], ranking["posthoc"], "t", ranking_note(decl, ranking)
        )
        labels = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert all(loss in labels for loss in "abc"), labels


RANKING_BASE = {
    "datasets": {"digits": {"source": "sklearn_digits"}},
    "regimes": {"full": {}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}, "lm": {"impl": "lm"}},
    "seeds": [0, 1],
}


@pytest.mark.parametrize(
    "ranking, message",
    [
        (
            {"blocks": ["loss"], "metric": "map"},
            "config key rankings.r.blocks: 'loss' cannot make blocks",
        ),
        (
            {"blocks": ["sed"], "metric": "map"},
            "config key rankings.r.blocks: 'sed' cannot make blocks (did you mean 'seed'?)",
        ),
        (
            {"blocks": ["seed"], "metric": "mAP"},
            "config key rankings.r.metric: no metric 'mAP' is computed",
        ),
        (
            {"blocks": ["seed"], "metric": "map", "losses": ["ce", "triplet"]},
            "config key rankings.r.losses: 'triplet' is no loss this ranking selects (ce, cam, lm)",
        ),
        (
            {
                "blocks": ["seed"],
                "metric": "map",
                "select": {"loss": ["ce", "cam"]},
                "losses": ["ce", "lm"],
            },
            "config key rankings.r.losses: 'lm' is no loss this ranking selects (ce, cam)",
        ),
        (
            {"blocks": ["seed"], "metric": "map", "select": {"loss": "ce"}},
            "config key rankings.r: only ce would be ranked",
        ),
        (
            {"blocks": ["seed"], "metric": "map", "select": {"dataset": "cifar"}},
            "config key rankings.r.select.dataset: 'cifar' matches no dataset of this config",
        ),
    ],
)
def test_a_bad_ranking_declaration_stops_before_any_job_naming_the_key(
    ranking, message
):
    from workflow.config_loader import load_config
    from workflow.guards import check_config

    with pytest.raises(ConfigError) as error:
        check_config(load_config({**RANKING_BASE, "rankings": {"r": ranking}}))
    assert message in str(error.value)


def test_a_good_ranking_declaration_passes():
    from workflow.config_loader import load_config
    from workflow.guards import check_config

    config = load_config(
        {
            **RANKING_BASE,
            "rankings": {"r": {"blocks": ["seed", "dataset"], "metric": "map"}},
        }
    )
    check_config(config)
    assert config["rankings"]["r"]["posthoc"] == "nemenyi"


def test_a_ranking_compares_losses_trained_alike_within_each_block():
    """The fixed factors (workflow.config.FIXED_FACTORS) are the same for
    every loss within a block, unless the ranking makes them blocks (as a
    table must lay them out)."""
    from workflow.config_loader import load_config

    longer = {
        **RANKING_BASE,
        "losses": {
            **RANKING_BASE["losses"],
            "lm": {"impl": "lm", "training": {"epochs": 7}},
        },
    }
    with pytest.raises(
        ConfigError,
        match=r"config key rankings.r: the compared cells differ in epochs \(.*7 \(lm\)\).*"
        r"make 'epochs' one of the ranking's blocks",
    ):
        load_config(
            {**longer, "rankings": {"r": {"blocks": ["seed"], "metric": "map"}}}
        )
    # Ranking only the losses trained alike is fair; so is a select that keeps one value.
    load_config(
        {
            **longer,
            "rankings": {
                "r": {"blocks": ["seed"], "metric": "map", "losses": ["ce", "cam"]}
            },
        }
    )
    swept = {
        **RANKING_BASE,
        "losses": {
            **RANKING_BASE["losses"],
            "lm": {"impl": "lm", "training": {"epochs": [15, 7]}},
        },
    }
    with pytest.raises(
        ConfigError, match=r"differ in epochs \(15 \(ce\), 7 \(lm-epochs7\)\)"
    ):
        load_config({**swept, "rankings": {"r": {"blocks": ["seed"], "metric": "map"}}})
    load_config(
        {
            **swept,
            "rankings": {
                "r": {"blocks": ["seed"], "metric": "map", "select": {"epochs": 15}}
            },
        }
    )
    # Two backbones trained for different epochs: fair only within a backbone's block.
    two = {
        **RANKING_BASE,
        "backbones": {
            "a": {"arch": "small_cnn", "embedding_size": 8},
            "b": {"arch": "small_cnn", "embedding_size": 16, "training": {"epochs": 7}},
        },
    }
    with pytest.raises(
        ConfigError, match=r"rankings.r: the compared cells differ in backbone"
    ):
        load_config({**two, "rankings": {"r": {"blocks": ["seed"], "metric": "map"}}})
    load_config(
        {**two, "rankings": {"r": {"blocks": ["seed", "backbone"], "metric": "map"}}}
    )
