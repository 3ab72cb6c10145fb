"""AUC and log-loss against brute-force definitions."""
import numpy as np

from mpips.metrics import auc, logloss


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


def test_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = (rng.random(300) < 0.3).astype(float)
        s = np.round(rng.random(300) + 0.3 * y, 1)        # many ties
        assert abs(auc(y, s) - brute_auc(y, s)) < 1e-12


def test_auc_edge_cases():
    assert auc(np.array([0, 1]), np.array([0.1, 0.9])) == 1.0
    assert auc(np.array([1, 0]), np.array([0.1, 0.9])) == 0.0
    assert np.isnan(auc(np.array([1, 1]), np.array([0.1, 0.9])))


def test_logloss():
    y = np.array([1.0, 0.0])
    assert abs(logloss(y, np.array([0.5, 0.5])) - np.log(2)) < 1e-12
    assert np.isfinite(logloss(y, np.array([0.0, 1.0])))
