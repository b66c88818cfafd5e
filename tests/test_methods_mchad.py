"""MCHAD / G-MCHAD against pytorch-ood 0.4.0's MCHADLoss and the paper's margin form."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.loss import MCHADLoss

from mchad.errors import ConfigError
from mchad.methods.mchad import MCHAD

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C, D = 6, 8


def mixed_batch(n_known=24, n_outliers=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_known + n_outliers, D, generator=g)
    y = torch.cat([torch.randint(0, C, (n_known,), generator=g), torch.full((n_outliers,), -1)])
    return z, y


def reference_loss(method: MCHAD, z, y):
    ref = MCHADLoss(
        n_classes=C,
        n_dim=D,
        radius=method.radius,
        margin=method.margin,
        weight_center=method.weight_center,
        weight_nll=method.weight_ce,
        weight_oe=method.weight_oe,
    )
    ref.centers.params.data.copy_(method.centers.centers.data)
    return ref(ref.distance(z), y)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(weight_center=0.5, weight_ce=1.0, weight_oe=0.0, margin=4.0),
        dict(weight_center=1.0, weight_ce=1.5, weight_oe=1e-3, margin=5.0),
        dict(weight_center=2.0, weight_ce=1.0, weight_oe=0.1, margin=3.0, radius=2.0),
    ],
)
@pytest.mark.parametrize("n_known,n_outliers", [(24, 8), (24, 0)])
def test_loss_equals_pytorch_ood_mchad_loss(kwargs, n_known, n_outliers):
    method = MCHAD(C, D, **kwargs)
    z, y = mixed_batch(n_known, n_outliers)
    ours = sum(method.loss(method(z), y).values())
    torch.testing.assert_close(ours, reference_loss(method, z, y), rtol=1e-5, atol=1e-5)


def test_loss_on_only_outliers_equals_pytorch_ood():
    method = MCHAD(C, D, weight_oe=0.1, margin=5.0)
    z, y = mixed_batch(0, 8)
    terms = method.loss(method(z), y)
    assert terms["center"].item() == terms["ce"].item() == 0.0
    torch.testing.assert_close(sum(terms.values()), reference_loss(method, z, y), rtol=1e-5, atol=1e-5)


def test_terms_are_weighted_and_named():
    z, y = mixed_batch()
    plain = MCHAD(C, D, weight_center=1.0, weight_ce=1.0, weight_oe=1.0, margin=5.0)
    weighted = MCHAD(C, D, weight_center=0.5, weight_ce=1.5, weight_oe=1e-2, margin=5.0)
    weighted.load_state_dict(plain.state_dict())
    t1, t2 = plain.loss(plain(z), y), weighted.loss(weighted(z), y)
    assert set(t1) == {"center", "ce", "margin"}
    torch.testing.assert_close(t2["center"], 0.5 * t1["center"])
    torch.testing.assert_close(t2["ce"], 1.5 * t1["ce"])
    torch.testing.assert_close(t2["margin"], 1e-2 * t1["margin"])


def test_margin_forms():
    z, y = mixed_batch()
    ref = MCHAD(C, D, weight_oe=1.0, margin=2.0, radius=1.0, margin_form="reference")
    paper = MCHAD(C, D, weight_oe=1.0, margin=2.0, radius=1.0, margin_form="paper")
    paper.load_state_dict(ref.state_dict())
    d = ref(z)["distances"]
    known, out = y >= 0, y < 0
    d_true = d[known].gather(1, y[known, None]).squeeze(1)
    # reference: radius and margin bound the squared distance
    torch.testing.assert_close(ref.loss(ref(z), y)["center"], (d_true - 1.0).relu().sum() / (known.sum() * C))
    torch.testing.assert_close(ref.loss(ref(z), y)["margin"], (2.0**2 - d[out] ** 2).relu().sum())
    # paper: Euclidean radius r and margin m
    torch.testing.assert_close(paper.loss(paper(z), y)["center"], (d_true - 1.0**2).relu().sum() / (known.sum() * C))
    torch.testing.assert_close(paper.loss(paper(z), y)["margin"], ((1.0 + 2.0) ** 2 - d[out]).relu().sum())


def test_ce_term_is_the_softmin_log_sum_form():
    method = MCHAD(C, D)
    z, y = mixed_batch(10, 0)
    d = method(z)["distances"]
    expected = torch.stack(
        [torch.log(1 + sum(torch.exp(d[i, y[i]] - d[i, j]) for j in range(C) if j != y[i])) for i in range(len(y))]
    ).mean()
    torch.testing.assert_close(method.loss(method(z), y)["ce"], expected, rtol=1e-5, atol=1e-5)


def test_outputs_prediction_and_score():
    method = MCHAD(C, D)
    z, _ = mixed_batch()
    out = method(z)
    assert set(out) == {"distances"} and out["distances"].shape == (len(z), C)
    torch.testing.assert_close(method.scores(out)["distance"], out["distances"].min(1).values)
    assert torch.equal(method.predict(out), out["distances"].argmin(1))
    assert method.score_names == ("distance",)


def test_uses_outliers_only_with_a_positive_weight():
    assert not MCHAD(C, D, weight_oe=0.0).uses_outliers
    assert "margin" not in MCHAD(C, D).loss(MCHAD(C, D)(torch.randn(3, D)), torch.tensor([0, 1, 2]))
    assert MCHAD(C, D, weight_oe=1e-5).uses_outliers


def leaf_batch_and_centers(method: MCHAD, seed: int = 1):
    """A mixed batch as a leaf tensor and fixed centers: the class-center init draws from the global RNG."""
    z, y = mixed_batch(seed=seed)
    method.centers.centers.data.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(seed + 100)))
    return z.clone().requires_grad_(True), y


def test_center_term_gradient_equals_the_closed_form():
    """d/dmu_c and d/dz_i of w/(|K| C) sum_{i in K} max(0, ||z_i - mu_{y_i}||^2 - rho), written out by hand:

    dL/dmu_c = -2w/(|K| C) sum_{i in K, y_i = c, d_i > rho} (z_i - mu_c),
    dL/dz_i = 2w/(|K| C) (z_i - mu_{y_i}) [d_i > rho].
    """
    w, rho = 0.7, 14.0
    method = MCHAD(C, D, weight_center=w, weight_ce=0.0, weight_oe=0.0, radius=rho)
    z, y = leaf_batch_and_centers(method)
    method.loss(method(z), y)["center"].backward()

    mu = method.centers.centers.detach()
    known = [i for i in range(len(y)) if y[i] >= 0]
    scale = w / (len(known) * C)
    expected_mu, expected_z = torch.zeros(C, D), torch.zeros_like(z)
    inside = 0
    for i in known:
        diff = z[i].detach() - mu[y[i]]
        if float(diff @ diff) > rho:
            expected_mu[y[i]] -= 2 * scale * diff
            expected_z[i] = 2 * scale * diff
        else:
            inside += 1
    # the example must hold samples on both sides of the radius, or the hinge goes untested
    assert 0 < inside < len(known)
    torch.testing.assert_close(method.centers.centers.grad, expected_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad, expected_z, rtol=1e-5, atol=1e-6)


def test_full_loss_gradient_equals_the_chain_rule_by_hand():
    """All three terms at once (reference margin form). With G_ic = dL/dd_ic,

    center: w_center/(|K| C) [c = y_i] [d_ic > rho]        (i in K)
    ce:     w_ce/|K| ([c = y_i] - softmax(-d_i)_c)          (i in K)
    margin: -2 w_oe d_ic [d_ic < m]                         (i in O)

    and d_ic = ||z_i - mu_c||^2, so dL/dmu_c = -2 sum_i G_ic (z_i - mu_c), dL/dz_i = 2 sum_c G_ic (z_i - mu_c).
    """
    w_center, w_ce, w_oe, m, rho = 0.5, 1.5, 1e-2, 15.0, 14.0
    method = MCHAD(C, D, weight_center=w_center, weight_ce=w_ce, weight_oe=w_oe, margin=m, radius=rho)
    z, y = leaf_batch_and_centers(method)
    sum(method.loss(method(z), y).values()).backward()

    mu, zd = method.centers.centers.detach(), z.detach()
    diff = zd[:, None, :] - mu[None, :, :]  # B x C x D
    d = (diff**2).sum(2)
    known, outlier = y >= 0, y < 0
    n_known = int(known.sum())
    onehot = torch.zeros(len(y), C)
    onehot[known, y[known]] = 1.0
    p = torch.exp(-d) / torch.exp(-d).sum(1, keepdim=True)
    G = w_center / (n_known * C) * onehot * (d > rho)
    G += w_ce / n_known * (onehot - p) * known[:, None]
    G += -2 * w_oe * d * (d < m) * outlier[:, None]
    assert bool((d[outlier] < m).any()) and bool((d[outlier] >= m).any())  # outliers on both sides of the margin
    torch.testing.assert_close(method.centers.centers.grad, -2 * (G[:, :, None] * diff).sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z.grad, 2 * (G[:, :, None] * diff).sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_embedding=0), "n_embedding=0"),
        (dict(weight_oe=-1.0), "weight_oe=-1.0"),
        # a negative margin is no margin: (m - d)^+ (m + d) is 0 for every d >= 0, the outlier term would be off
        (dict(margin=-1.0), r"method\.margin=-1\.0"),
        (dict(radius=-0.5), r"method\.radius=-0\.5"),
        (dict(margin_form="squared"), "margin_form=squared"),
    ],
)
def test_config_errors(kwargs, match):
    args = dict(n_classes=C, n_embedding=D) | kwargs
    with pytest.raises(ConfigError, match=match):
        MCHAD(**args)


def placed_batch(method: MCHAD):
    """Centers at 10 e_c (pairwise squared distance 200); samples at chosen squared distances from center 0.

    Known: d_{i y_i} = 1 and 3. Outliers: squared distance 1, 4 and 16 to center 0 (>= 81 to the others).
    """
    method.centers.centers.data.copy_(10 * torch.eye(C, D))
    mu = method.centers.centers.detach()
    e = torch.eye(D)
    z = torch.stack(
        [mu[0] + 1.0 * e[6], mu[1] + 3**0.5 * e[7], mu[0] + 1.0 * e[6], mu[0] + 2.0 * e[6], mu[0] + 4.0 * e[7]]
    )
    y = torch.tensor([0, 1, -1, -1, -1])
    return z, y


@pytest.mark.parametrize("form,inside", [("reference", [True, False, False]), ("paper", [True, True, False])])
def test_diagnostics_count_the_outliers_inside_the_margin(form, inside):
    # margin 2, radius 1: the reference form reaches squared distance < 2, the paper form < (1 + 2)^2 = 9
    method = MCHAD(C, D, weight_oe=1e-3, margin=2.0, radius=1.0, margin_form=form)
    z, y = placed_batch(method)
    out = method(z)
    diag = method.diagnostics(out, y)
    assert set(diag) == {
        "known_center_distance",
        "center_min_distance",
        "outliers_in_margin",
        "margin_term",
        "outlier_nearest_distance",
        "outlier_nearest_distance_min",
    }
    assert all(v.dim() == 0 and not v.requires_grad for v in diag.values())
    torch.testing.assert_close(diag["outliers_in_margin"], torch.tensor(sum(inside) / 3))
    # the unweighted term: the weighted one divided by w_oe, and zero exactly where no outlier is inside
    torch.testing.assert_close(diag["margin_term"], method.loss(out, y)["margin"] / 1e-3)
    expected = [2.0**2 - 1.0**2, 0.0, 0.0] if form == "reference" else [9.0 - 1.0, 9.0 - 4.0, 0.0]
    torch.testing.assert_close(diag["margin_term"], torch.tensor(sum(expected)))
    torch.testing.assert_close(diag["outlier_nearest_distance"], torch.tensor((1.0 + 4.0 + 16.0) / 3))
    torch.testing.assert_close(diag["outlier_nearest_distance_min"], torch.tensor(1.0))
    torch.testing.assert_close(diag["known_center_distance"], torch.tensor(2.0))
    torch.testing.assert_close(diag["center_min_distance"], torch.tensor(200.0))


def test_diagnostics_without_outlier_term_or_outliers():
    method = MCHAD(C, D, weight_oe=0.0)
    z, y = placed_batch(method)
    assert set(method.diagnostics(method(z), y)) == {"known_center_distance", "center_min_distance"}
    # a G-MCHAD batch without outliers: the outlier numbers are 0, not NaN or inf
    method = MCHAD(C, D, weight_oe=1e-3)
    z, y = placed_batch(method)
    diag = method.diagnostics(method(z[:2]), y[:2])
    for name in ("outliers_in_margin", "margin_term", "outlier_nearest_distance", "outlier_nearest_distance_min"):
        assert diag[name].item() == 0.0


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_diagnostics_need_no_host_read(form, monkeypatch):
    """No .item(), bool(t), nonzero or boolean indexing: on a GPU each would stall the training step."""
    method = MCHAD(C, D, weight_oe=1e-3, margin_form=form)
    z, y = mixed_batch()
    out = method(z)
    original_getitem = torch.Tensor.__getitem__

    def no_host_read(*args, **kwargs):
        raise AssertionError("host read in diagnostics")

    def getitem(self, index):
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            raise AssertionError("boolean indexing in diagnostics")
        return original_getitem(self, index)

    for name in ("item", "tolist", "cpu", "nonzero", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, no_host_read)
    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    diag = method.diagnostics(out, y)
    monkeypatch.undo()
    assert len(diag) == 6 and diag["outlier_nearest_distance"].item() > 0
