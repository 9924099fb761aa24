"""The shipped default config (config.yaml), run for real through Snakemake
on the cells whose numbers the issue tracker found wrong: every term of
CAM acts in epoch 1, and the losses trained on normalised embeddings are
retrieved by cosine (README "Metrics")."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, make_workspace, snakemake

CELL = "results/cells/digits/full/small_cnn/{loss}/seed0"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    workdir = make_workspace(tmp_path_factory.mktemp("default"), config)
    shutil.copy2(REPO / "config.yaml", workdir / "config.yaml")  # byte for byte the shipped file
    targets = [f"{CELL.format(loss=loss)}/metrics.csv" for loss in ["cam", "triplet"]]
    snakemake(workdir, "--cores", "2", *targets)
    return workdir


def test_default_cam_run_has_every_term_acting_in_epoch_one(default_run):
    model = torch.load(default_run / CELL.format(loss="cam") / "model.pt", weights_only=True)
    first = model["history"][0]
    assert first["terms"]["attractor"] > 0
    assert first["terms"]["repeller"] > 0
    assert first["terms"]["min_norm"] > 0
    # The anchors start inside the margins: all pairs and anchors active.
    assert first["diagnostics"]["pairs_within_margin"] > 0.5
    assert first["diagnostics"]["anchors_below_min_norm"] > 0.5


def test_default_run_retrieves_each_loss_in_its_own_geometry(default_run):
    for loss, geometry in [("cam", "euclidean"), ("triplet", "cosine")]:
        metrics = pd.read_csv(default_run / CELL.format(loss=loss) / "metrics.csv")
        assert set(metrics["geometry"]) == {geometry}, loss
        assert set(metrics["distance"]) == {geometry}, loss  # evaluation.distances: [own]
        assert metrics.loc[metrics["metric"] == "map", "value"].notna().all()
