"""The Mahalanobis scorer vs float64 numpy, and its covariance inverse."""

import numpy as np
import pytest
import torch

from ood_nolabels.scorers.mahalanobis import MahalanobisScorer


def mahalanobis_numpy(train, labels, test):
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(0) for c in classes])
    centered = train - means[np.searchsorted(classes, labels)]
    precision = np.linalg.pinv(centered.T @ centered / len(train))
    return np.min([np.einsum("nd,de,ne->n", test - m, precision, test - m) for m in means], axis=0)


@pytest.mark.parametrize("with_labels", [True, False])
def test_mahalanobis_matches_float64_numpy(with_labels):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    train = rng.normal(size=(400, 12)) + labels[:, None] * 3.0
    test = rng.normal(size=(60, 12)) * 2
    scorer = MahalanobisScorer().fit(
        torch.tensor(train, dtype=torch.float32),
        torch.tensor(labels) if with_labels else None,
    )
    scores = scorer.score(torch.tensor(test, dtype=torch.float32)).numpy()
    train32 = train.astype(np.float32).astype(np.float64)
    test32 = test.astype(np.float32).astype(np.float64)
    expected = mahalanobis_numpy(train32, labels if with_labels else np.zeros(400, int), test32)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_mahalanobis_rank_deficient_features_stay_finite():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(3, 10))
    train = torch.tensor(rng.normal(size=(50, 3)) @ basis, dtype=torch.float32)
    scores = MahalanobisScorer(shrinkage=0.1).fit(train).score(torch.randn(5, 10))
    assert torch.isfinite(scores).all()


def test_mahalanobis_label_shape_error():
    with pytest.raises(ValueError, match="labels of shape"):
        MahalanobisScorer().fit(torch.randn(10, 3), torch.zeros(9, dtype=torch.long))


def test_mahalanobis_falls_back_to_svd_when_eigh_does_not_converge(monkeypatch):
    from ood_nolabels.scorers import mahalanobis

    original = torch.linalg.pinv

    def failing_eigh(matrix, hermitian=False, **kwargs):
        if hermitian:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return original(matrix, **kwargs)

    # rank 1: the Cholesky route declines it, so the eigh route (failing here) is taken
    covariance = torch.tensor([[2.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    monkeypatch.setattr(mahalanobis.torch.linalg, "pinv", failing_eigh)
    expected = np.linalg.pinv(covariance.numpy())
    np.testing.assert_allclose(mahalanobis.pseudo_inverse(covariance).numpy(), expected)


def test_cholesky_inverse_equals_the_pseudo_inverse_when_it_is_taken():
    from ood_nolabels.scorers.mahalanobis import cholesky_inverse

    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64))
    covariance = torch.tensor(x.T @ x / 500)
    precision = cholesky_inverse(covariance)
    assert precision is not None
    np.testing.assert_allclose(precision.numpy(), np.linalg.pinv(covariance.numpy()), rtol=1e-8)


@pytest.mark.parametrize("smallest", [0.0, 1e-16])  # singular; below pinv's cutoff (8 eps)
def test_cholesky_inverse_declines_what_pinv_would_truncate(smallest):
    from ood_nolabels.scorers.mahalanobis import cholesky_inverse, pseudo_inverse

    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    eigenvalues = np.array([1.0] * 7 + [smallest])
    covariance = torch.tensor(rotation @ np.diag(eigenvalues) @ rotation.T)
    assert cholesky_inverse(covariance) is None
    expected = np.linalg.pinv(covariance.numpy(), rcond=8 * np.finfo(float).eps, hermitian=True)
    np.testing.assert_allclose(pseudo_inverse(covariance).numpy(), expected, atol=1e-8)


def test_fewer_samples_than_dimensions_give_the_covariance_pseudo_inverse():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 40)
    train = (rng.normal(size=(40, 64)) + labels[:, None]).astype(np.float32).astype(np.float64)
    scorer = MahalanobisScorer().fit(torch.tensor(train), torch.tensor(labels))
    means = np.stack([train[labels == c].mean(0) for c in range(3)])
    centered = train - means[labels]
    covariance = centered.T @ centered / 40
    precision = scorer.precision.numpy()
    # the four Moore-Penrose conditions (C P C = C, P C P = P, C P and P C symmetric)
    np.testing.assert_allclose(covariance @ precision @ covariance, covariance, atol=1e-10)
    np.testing.assert_allclose(precision @ covariance @ precision, precision, atol=1e-10)
    np.testing.assert_allclose(covariance @ precision, (covariance @ precision).T, atol=1e-10)
    np.testing.assert_allclose(precision @ covariance, (precision @ covariance).T, atol=1e-10)
    assert np.linalg.matrix_rank(precision) == 40 - 3
    test = rng.normal(size=(10, 64))
    np.testing.assert_allclose(
        scorer.score(torch.tensor(test)).numpy(),
        mahalanobis_numpy(train, labels, test),
        rtol=1e-4,
    )
