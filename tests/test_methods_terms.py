"""Class centers, squared distances and the loss terms shared by the distance-based methods."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.loss import CenterLoss
from pytorch_ood.loss.mchad import CenterRegularizationLoss
from pytorch_ood.model import ClassCenters as OODClassCenters
from pytorch_ood.utils import pairwise_distances

from mchad.errors import ConfigError
from mchad.methods.terms import (
    center_term,
    check_margin_form,
    check_non_negative,
    cross_entropy_known,
    margin_term,
    margin_threshold,
    min_distance,
    nearest_class,
    outliers_inside_margin,
)
from mchad.nn.centers import ClassCenters, RunningClassMeans, pairwise_squared_distances

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C, D = 5, 7


def batch(n_known: int = 12, n_outliers: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(n_known + n_outliers, C, generator=g) * 20
    y = torch.cat([torch.arange(n_known) % C, torch.full((n_outliers,), -1)])
    return d, y


def test_pairwise_squared_distances_match_definition_and_pytorch_ood():
    x, mu = torch.randn(9, D), torch.randn(C, D)
    expected = torch.stack([((x - m) ** 2).sum(1) for m in mu], dim=1)
    torch.testing.assert_close(pairwise_squared_distances(x, mu), expected)
    torch.testing.assert_close(pairwise_squared_distances(x, mu), pairwise_distances(x, mu), rtol=1e-5, atol=1e-5)


def test_pairwise_squared_distances_stay_exact_far_from_the_origin():
    # the quadratic expansion loses every digit here; differences do not
    x = torch.full((1, D), 4096.0)
    mu = x + 0.5
    assert pairwise_squared_distances(x, mu).item() == D * 0.25
    assert pairwise_distances(x, mu).item() != pytest.approx(D * 0.25, rel=0.1)


def test_pairwise_squared_distances_are_float32_under_autocast():
    x, mu = torch.randn(4, D), torch.randn(C, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = pairwise_squared_distances(x.bfloat16(), mu)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, pairwise_squared_distances(x.bfloat16().float(), mu))


def test_class_centers_init_like_pytorch_ood():
    assert torch.equal(ClassCenters(C, C).centers.detach(), torch.eye(C))
    centers = ClassCenters(C, D)
    assert centers.centers.shape == (C, D) and centers.centers.requires_grad
    ref = OODClassCenters(C, D)
    ref.params.data.copy_(centers.centers.data)
    z = torch.randn(6, D)
    torch.testing.assert_close(centers(z), ref(z), rtol=1e-5, atol=1e-5)


def test_running_class_means_are_exact_means_and_survive_reset():
    means = RunningClassMeans(3, 2)
    # the last row of the first batch is an outlier (label -1): it must not count
    z1, y1 = torch.tensor([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0], [9.0, 9.0]]), torch.tensor([0, 0, 1, -1])
    z2, y2 = torch.tensor([[4.0, 4.0]]), torch.tensor([0])
    means.update(z1, y1, y1 >= 0)
    means.update(z2, y2, y2 >= 0)
    torch.testing.assert_close(means.means, torch.tensor([[2.0, 2.0], [5.0, 5.0], [0.0, 0.0]]))
    means.reset()
    means.update(torch.tensor([[1.0, 1.0]]), torch.tensor([1]), torch.tensor([True]))
    # class 0 keeps last accumulation's mean, class 1 starts over
    torch.testing.assert_close(means.means, torch.tensor([[2.0, 2.0], [1.0, 1.0], [0.0, 0.0]]))
    assert set(means.state_dict()) == {"sums", "counts", "means"}


def test_center_term_equals_pytorch_ood_center_loss():
    d, y = batch()
    ref = CenterLoss(n_classes=C, n_dim=D, radius=3.0)
    torch.testing.assert_close(center_term(d, y, radius=3.0), ref(d, y), rtol=1e-5, atol=1e-5)
    # divided by |K| * C, not by |K|
    known = y >= 0
    manual = d[known].gather(1, y[known, None]).sum() / (known.sum() * C)
    torch.testing.assert_close(center_term(d, y), manual)


@pytest.mark.parametrize("margin", [3.0, 4.0, 10.0])
def test_margin_term_reference_equals_pytorch_ood(margin):
    d, y = batch()
    ref = CenterRegularizationLoss(margin=margin, reduction="sum")
    torch.testing.assert_close(margin_term(d, y, margin), ref(d, y), rtol=1e-5, atol=1e-4)
    assert margin_term(d, y, margin) > 0


def test_margin_term_paper_form():
    d, y = batch()
    radius, margin = 1.0, 2.5
    out = d[y < 0]
    expected = sum(max(0.0, (radius + margin) ** 2 - v) for v in out.flatten().tolist())
    assert margin_term(d, y, margin, "paper", radius).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_known_ignores_outliers():
    logits, y = batch()
    known = y >= 0
    expected = torch.nn.functional.cross_entropy(logits[known], y[known])
    torch.testing.assert_close(cross_entropy_known(logits, y), expected)


@pytest.mark.parametrize("n_known,n_outliers", [(0, 5), (6, 0)])
def test_terms_are_zero_without_their_samples_and_keep_the_graph(n_known, n_outliers):
    d, y = batch(n_known, n_outliers)
    d.requires_grad_(True)
    values = {
        "center": center_term(d, y),
        "ce": cross_entropy_known(-d, y),
        "margin": margin_term(d, y, 4.0),
    }
    missing = {"center", "ce"} if n_known == 0 else {"margin"}
    for name, value in values.items():
        assert value.dim() == 0 and torch.isfinite(value)
        if name in missing:
            assert value.item() == 0.0 and value.requires_grad
    sum(values.values()).backward()


def test_terms_are_finite_for_huge_distances():
    d, y = batch()
    d = (d * 1e18).requires_grad_(True)
    total = center_term(d, y) + cross_entropy_known(-d, y) + margin_term(d, y, 4.0) + margin_term(d, y, 4.0, "paper")
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(d.grad).all()


def test_scores_and_prediction():
    d = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 9.0]])
    assert min_distance(d).tolist() == [1.0, 0.5]
    assert nearest_class(d).tolist() == [1, 0]


def test_argument_checks():
    check_non_negative(weight=0.0, margin=2.0)
    with pytest.raises(ConfigError, match=r"method\.weight_oe=-1"):
        check_non_negative(weight_oe=-1)
    check_margin_form("paper")
    with pytest.raises(ConfigError, match="margin_form=squared"):
        check_margin_form("squared")


@pytest.mark.parametrize("form,margin,radius", [("reference", 4.0, 0.0), ("paper", 1.0, 1.0), ("paper", 2.0, 0.0)])
def test_inside_margin_is_where_the_margin_term_is_non_zero(form, margin, radius):
    d, y = batch(12, 40, seed=3)
    per_outlier = torch.stack([margin_term(d[i : i + 1], y[i : i + 1], margin, form, radius) for i in range(len(y))])
    inside = outliers_inside_margin(d, y, margin, form, radius)
    assert not inside[y >= 0].any()
    assert torch.equal(inside, per_outlier > 0)
    assert 0 < int(inside.sum()) < int((y < 0).sum())  # both sides of the margin occur
    # both forms reach squared distance 4 here: m = 4 (reference), (r + m)^2 = 4 (paper)
    assert margin_threshold(margin, form, radius) == 4.0
