"""Random and PCA directions as Li et al. (2018) define them: both random directions
filter-normalised (orthogonalisation optional and normalisation-preserving), PCA centred."""

import numpy as np
import pytest
import torch

from analysis_lib import landscape


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    ).double()


def filter_norms(d: dict, model) -> None:
    """Every filter of ``d`` has the norm of the model's filter; 1-D tensors are zero."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            np.testing.assert_allclose(
                d[name].norm(dim=1).numpy(), p.detach().norm(dim=1).numpy(), rtol=1e-12
            )
        else:
            assert torch.count_nonzero(d[name]) == 0


def test_random_directions_default_as_li_et_al_both_filter_normalised_not_orthogonalised():
    model = mlp()
    dirs = landscape.random_directions(model, seed=7)
    assert not dirs.orthogonalized
    filter_norms(dirs.d1, model)
    filter_norms(dirs.d2, model)  # the second direction too (it was rescaled as a whole before)
    a, b = landscape.flatten(dirs.d1), landscape.flatten(dirs.d2)
    assert dirs.cosine == pytest.approx(float(a @ b / (a.norm() * b.norm())), rel=1e-12)
    assert abs(dirs.cosine) > 1e-3  # a small but non-zero overlap: nothing was removed


@pytest.mark.parametrize("norm", ["filter", "layer"])
def test_orthogonal_option_keeps_both_normalised_and_makes_them_orthogonal(norm):
    model = mlp()
    raw = landscape.random_directions(model, seed=7, norm=norm, one_d="keep")
    ortho = landscape.random_directions(model, seed=7, norm=norm, one_d="keep", orthogonal=True)
    assert ortho.orthogonalized and ortho.cosine == raw.cosine
    for k in raw.d1:
        assert torch.equal(ortho.d1[k], raw.d1[k])
    a, b = landscape.flatten(ortho.d1), landscape.flatten(ortho.d2)
    assert abs(float(a @ b)) / float(a.norm() * b.norm()) < 1e-12
    for name, p in model.named_parameters():
        ref = p.detach()
        if norm == "filter" and p.dim() >= 2:
            np.testing.assert_allclose(
                ortho.d2[name].norm(dim=1).numpy(), ref.norm(dim=1).numpy(), rtol=1e-12
            )
            # orthogonal filter by filter
            dots = (ortho.d1[name] * ortho.d2[name]).sum(1)
            np.testing.assert_allclose(dots.numpy(), 0.0, atol=1e-12)
        else:
            assert float(ortho.d2[name].norm()) == pytest.approx(float(ref.norm()), rel=1e-12)
    # the reported change is how far d2 moved
    before = landscape.flatten(raw.d2)
    moved = float((before - b).norm() / before.norm())
    assert ortho.d2_change == pytest.approx(moved, rel=1e-10) and moved > abs(raw.cosine)
    assert raw.d2_change == 0.0


def test_orthogonal_none_is_gram_schmidt_with_norm_kept():
    model = mlp()
    raw = landscape.random_directions(model, seed=3, norm="none", one_d="keep")
    ortho = landscape.random_directions(model, seed=3, norm="none", one_d="keep", orthogonal=True)
    a, b = landscape.flatten(raw.d1), landscape.flatten(raw.d2)
    expected = b - (a @ b) / (a @ a) * a
    torch.testing.assert_close(landscape.flatten(ortho.d2), expected * b.norm() / expected.norm())


def test_orthogonal_must_be_a_bool():
    with pytest.raises(ValueError, match="orthogonal"):
        landscape.random_directions(mlp(), orthogonal="yes")
    with pytest.raises(ValueError, match="center"):
        landscape.pca_directions([{"w": torch.zeros(3)}, {"w": torch.ones(3)}], center=1)


def test_pca_default_is_centred_like_scikit_learn():
    sklearn = pytest.importorskip("sklearn.decomposition")
    gen = np.random.default_rng(1)
    t = np.linspace(0, 1, 25)[:, None]
    rows = np.hstack([5 * t, np.sin(6 * t), gen.normal(scale=0.05, size=(25, 30))])
    snaps = [{"w": torch.as_tensor(r)} for r in rows]
    plane = landscape.pca_directions(snaps)
    assert plane.centered
    pca = sklearn.PCA(n_components=2).fit(rows - rows[-1])
    np.testing.assert_allclose(
        plane.explained_variance_ratio, pca.explained_variance_ratio_, rtol=1e-10
    )
    comps = np.stack([plane.d1["w"].numpy(), plane.d2["w"].numpy()])
    np.testing.assert_allclose(np.abs(comps @ pca.components_.T), np.eye(2), atol=1e-8)
    # the path is still measured from the final point
    np.testing.assert_allclose(plane.path[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(plane.path, (rows - rows[-1]) @ comps.T, atol=1e-10)
    uncentred = landscape.pca_directions(snaps, center=False)
    assert not uncentred.centered
    assert uncentred.explained_variance_ratio[0] > plane.explained_variance_ratio[0]
