"""Rankings of losses over blocks, declared in the config (``rankings:``).

A declaration names the blocks (cell attributes whose combinations are the
"datasets" of Demšar 2006: e.g. dataset x backbone x regime), one metric and
the losses::

    cam_ranks:
      caption: Losses ranked over the CAM grid
      select: {retrieval: exact}           # filters, as a table's
      blocks: [dataset, backbone, regime]  # one block per combination
      metric: map
      losses: [ce, cam, lm]                # default: every loss of the config
      posthoc: nemenyi                     # or conover (Holm-corrected)

In each block, each loss's value is its mean over seeds (unless ``seed`` is
a block attribute) and the losses are ranked, 1 the best in the metric's
registered direction, ties sharing their average rank. Then:

* **Friedman test** over the blocks (:func:`scipy.stats.friedmanchisquare`,
  chi-square with k - 1 degrees of freedom, tie-corrected): needs at least
  2 blocks and 3 losses; below, or when every block ties every loss, the
  statistic and p are NaN (no test), never 0;
* **average rank** of each loss over the blocks (defined for any number);
* a **post-hoc** test of every pair (scikit-posthocs, on the same ranks):
  ``nemenyi`` (the default; a studentized-range test that controls the
  family-wise error itself, the test of the critical difference CD =
  q_alpha sqrt(k(k+1) / 6N)), or ``conover`` (Conover's t-test,
  Holm-corrected over the pairs); NaN wherever the Friedman test is, and
  Conover's NaN too when every block ranks the losses the same way (its
  variance term is 0, where scikit-posthocs would give p = 0).

Every block must have a finite value for every loss (a NaN metric, e.g.
accuracy of a loss that cannot classify, stops naming the loss and block).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats

from workflow.config import ConfigError
from workflow.retrieval.metrics import METRICS
from workflow.table_text import markdown_escape
from workflow.tables import check_no_pooling, declared_selection

ALPHA = 0.05
POSTHOC = ("nemenyi", "conover")


def block_values(name: str, decl: dict, metrics: pd.DataFrame) -> pd.DataFrame:
    """Blocks (rows, a MultiIndex of the block attributes) x losses (columns):
    each loss's mean over seeds in each block. The losses are ``losses``
    (the rule fills in those of the config, :func:`workflow.config.ranked_losses`;
    without it, those the rows have): one without a value stops the job,
    never leaving the others ranked alone."""
    blocks, metric = decl["blocks"], decl["metric"]
    key = f"rankings.{name}"
    selected = declared_selection(
        metrics, {"select": decl.get("select", {}), "blocks": blocks}
    )
    losses = decl.get("losses") or list(dict.fromkeys(selected["loss"]))
    selected = selected[(selected["metric"] == metric) & selected["loss"].isin(losses)]
    if selected.empty:
        raise ConfigError(
            f"config key {key}: no values of {metric} match {decl.get('select', {})}"
        )
    for keys, part in selected.groupby(blocks + ["loss"], sort=False):
        check_no_pooling(name, " / ".join(map(str, keys)), part, section="rankings")
    # Each loss's mean over the seeds of a block (one seed when blocks name it).
    wide = (
        selected.groupby(blocks + ["loss"], sort=False)["value"].mean().unstack("loss")
    )
    missing = [loss for loss in losses if loss not in wide.columns]
    if missing:
        raise ConfigError(
            f"config key {key}.losses: no values of {metric} for {', '.join(missing)} among the rows "
            f"{key}.select ({decl.get('select') or {}}) keeps in results/metrics.csv, so "
            f"{'it' if len(missing) == 1 else 'they'} cannot be ranked with the others; change "
            f"{key}.select, or name the losses to rank in {key}.losses"
        )
    wide = wide[losses]
    holes = wide.isna()
    if holes.any().any():
        block, loss = next(
            (b, c) for b, row in holes.iterrows() for c in row.index if row[c]
        )
        raise ConfigError(
            f"config key {key}: {metric} has no finite value for loss {loss} in block {block} "
            "(every loss needs one in every block: leave the loss out of "
            f"{key}.losses, or select blocks where it has one)"
        )
    return wide


def block_ranks(values: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rank of each loss (columns) within each block (rows): 1 the best in
    the metric's direction, ties sharing their average rank."""
    sign = 1.0 if METRICS.lower_is_better(metric) else -1.0
    return (sign * values).rank(axis=1, method="average")


def friedman(values: pd.DataFrame) -> tuple[float, float]:
    """Friedman's chi-square and p over the blocks (rows); NaN, NaN below 2
    blocks or 3 losses, or when every block ties every loss."""
    n, k = values.shape
    if n < 2 or k < 3 or (values.nunique(axis=1) == 1).all():
        return float("nan"), float("nan")
    result = stats.friedmanchisquare(*values.to_numpy(float).T)
    return float(result.statistic), float(result.pvalue)


def posthoc(values: pd.DataFrame, metric: str, test: str = "nemenyi") -> pd.DataFrame:
    """Losses x losses p-values of the post-hoc test (diagonal NaN); all NaN
    where :func:`friedman` is, and for Conover when its variance term is 0."""
    losses = list(values.columns)
    out = pd.DataFrame(np.nan, index=losses, columns=losses)
    if np.isnan(friedman(values)[0]):
        return out
    # scikit-posthocs ranks ascending: orient so that rank 1 is the best.
    oriented = (1.0 if METRICS.lower_is_better(metric) else -1.0) * values.to_numpy(
        float
    )
    if test == "nemenyi":
        p = sp.posthoc_nemenyi_friedman(oriented)
    elif test == "conover":
        # Conover's residual variance is proportional to 1 - T1 / (n(k-1))
        # (Conover 1999, T1 the tie-corrected Friedman statistic): 0 when
        # every block ranks the losses alike, and its t statistics infinite.
        ranks = block_ranks(values, metric).to_numpy()
        n, k = ranks.shape
        a, c = (ranks**2).sum(), n * k * (k + 1) ** 2 / 4
        t1 = (k - 1) * ((ranks.sum(axis=0) - n * (k + 1) / 2) ** 2).sum() / (a - c)
        if np.isclose(t1, n * (k - 1)):
            return out
        p = sp.posthoc_conover_friedman(oriented, p_adjust="holm")
    else:
        raise ValueError(
            f"unknown post-hoc test {test!r}; use one of {', '.join(POSTHOC)}"
        )
    p = np.array(p, dtype=float)
    np.fill_diagonal(p, np.nan)
    out.loc[:, :] = p
    return out


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks for k losses over n
    blocks (Demšar 2006): q_alpha sqrt(k(k+1) / 6n), q_alpha the studentized
    range quantile over sqrt(2); NaN below 2 blocks or 2 losses."""
    if n < 2 or k < 2:
        return float("nan")
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * n)))


def build_ranking(name: str, decl: dict, metrics: pd.DataFrame) -> dict:
    """Everything a ranking reports: ``values`` and ``ranks`` (blocks x
    losses), ``average`` (average rank per loss, best first), Friedman's
    ``chi2`` and ``p``, the ``posthoc`` p-values (losses x losses), the
    ``test`` and (Nemenyi) the critical difference ``cd``."""
    values = block_values(name, decl, metrics)
    ranks = block_ranks(values, decl["metric"])
    chi2, p = friedman(values)
    test = decl.get("posthoc", "nemenyi")
    pairs = posthoc(values, decl["metric"], test)
    n, k = values.shape
    cd = (
        critical_difference(k, n)
        if test == "nemenyi" and not np.isnan(chi2)
        else float("nan")
    )
    average = ranks.mean().sort_values(kind="stable")
    return {
        "values": values,
        "ranks": ranks,
        "average": average,
        "chi2": chi2,
        "p": p,
        "posthoc": pairs.loc[average.index, average.index],
        "test": test,
        "cd": cd,
    }


def ranking_note(decl: dict, ranking: dict) -> str:
    """What the ranking tests, and why there is no test where there is none."""
    n, k = ranking["values"].shape
    blocks = " x ".join(decl["blocks"])
    note = f"{k} losses ranked by {decl['metric']} in {n} block{'s' if n != 1 else ''} ({blocks}; 1 = best)"
    caveat = (
        "; blocks over seeds illustrate the method, they are no claim across datasets"
        if "seed" in decl["blocks"]
        else ""
    )
    if np.isnan(ranking["chi2"]):
        why = (
            "fewer than 2 blocks"
            if n < 2
            else "fewer than 3 losses"
            if k < 3
            else "every block ties every loss"
        )
        return note + f"; no Friedman or post-hoc test ({why})" + caveat
    test = "Nemenyi" if ranking["test"] == "nemenyi" else "Conover, Holm-corrected"
    note += f"; Friedman chi2 = {ranking['chi2']:.3g} (df {k - 1}), p = {ranking['p']:.3g}; post-hoc: {test}"
    if not np.isnan(ranking["cd"]):
        note += f", critical difference {ranking['cd']:.3g} at alpha {ALPHA:g}"
    if ranking["posthoc"].isna().all().all():
        note += " (undefined: every block ranks the losses the same way)"
    return note + caveat


def render_ranking(name: str, decl: dict, ranking: dict) -> tuple[str, str, str]:
    """CSV of the average ranks (loss, average_rank, blocks, then Friedman's
    chi2 and p on every row), CSV of the per-block values and ranks (long),
    and Markdown: the average ranks and the post-hoc p-values."""
    average = ranking["average"]
    n = len(ranking["values"])
    ranks_csv = pd.DataFrame(
        {
            "loss": average.index,
            "average_rank": average.to_numpy(),
            "blocks": n,
            "friedman_chi2": ranking["chi2"],
            "friedman_p": ranking["p"],
            "posthoc": ranking["test"],
            "critical_difference": ranking["cd"],
        }
    ).to_csv(index=False)
    long = ranking["values"].stack().rename("value").to_frame()
    long["rank"] = ranking["ranks"].stack()
    blocks_csv = long.reset_index().to_csv(index=False)
    caption = markdown_escape(decl.get("caption", name))
    losses = [markdown_escape(loss) for loss in average.index]
    table = pd.DataFrame(
        {"loss": losses, "average rank": [f"{r:.2f}" for r in average]}
    )
    pairs = ranking["posthoc"].map(lambda v: "" if np.isnan(v) else f"{v:.3g}")
    pairs.index, pairs.columns = losses, losses
    pairs.index.name = "p"
    markdown = (
        f"**{caption}** ({markdown_escape(ranking_note(decl, ranking))})\n\n"
        + table.to_markdown(index=False)
        + "\n\n"
        f"Post-hoc p-values ({'Nemenyi' if ranking['test'] == 'nemenyi' else 'Conover, Holm'}):\n\n"
        + pairs.reset_index().to_markdown(index=False)
        + "\n"
    )
    return ranks_csv, blocks_csv, markdown
