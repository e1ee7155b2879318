"""`fnas bench ceiling`: the AUC, the targets it separates, and the out-of-fold fit."""

from __future__ import annotations

import numpy as np
import pytest

from fnas_bench import ceiling
from fnas_bench.akp_bench import spearman


def test_auc_is_the_share_of_positive_negative_pairs_ranked_right_with_ties_half():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.3
    negative = ~positive
    a, b = score[positive], score[negative]
    brute = ((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean()
    assert ceiling.auc(score, positive, negative) == pytest.approx(brute)
    assert ceiling.auc(np.arange(4.0), np.array([0, 0, 1, 1], bool), np.array([1, 1, 0, 0], bool)) == 1.0
    assert ceiling.auc(np.zeros(4), np.array([0, 0, 1, 1], bool), np.array([1, 1, 0, 0], bool)) == 0.5
    with pytest.raises(ValueError, match="at least one positive"):
        ceiling.auc(score, np.zeros(60, bool), negative)


def test_separation_scores_the_top_targets_of_the_table():
    y = np.linspace(0.0, 1.0, 2000)
    thresholds = {"top0.1": y[-2], "top1": y[-20]}
    right = ceiling.separation(y, y, thresholds)
    assert (right["top0.1"], right["top1"]) == (2, 20)
    assert right["base_rate_top0.1_in_top1"] == pytest.approx(0.1)
    assert right["auc_top0.1_vs_rest_of_top1"] == right["auc_top1_vs_next_4pct"] == 1.0
    assert right["spearman"] == pytest.approx(1.0)
    wrong = ceiling.separation(-y, y, thresholds)
    assert wrong["auc_top0.1_vs_rest_of_top1"] == wrong["auc_top1_vs_next_4pct"] == 0.0


def test_out_of_fold_predictions_learn_what_other_rows_teach():
    # Two one-hot features decide the target: every row's value is learnable from the other rows.
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, 400), rng.integers(0, 4, 400)
    x = np.concatenate([np.eye(4)[a], np.eye(4)[b]], axis=1)
    y = 0.1 * a + 0.03 * b
    pred = ceiling.out_of_fold(x, y, seed=0, folds=2, epochs=20)
    assert spearman(pred, y) > 0.9
    # A row of its own (one-hot of its index) with a random target: a net that saw the row would recall
    # its target; one that never saw it cannot, so the predictions must not correlate.
    ids, noise = np.eye(200), rng.random(200)
    assert abs(spearman(ceiling.out_of_fold(ids, noise, seed=0, folds=2, epochs=200), noise)) < 0.3
    with pytest.raises(ValueError, match=">= 2 folds"):
        ceiling.out_of_fold(x, y, seed=0, folds=1)
