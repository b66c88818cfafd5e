"""CAC / G-CAC: the anchor term against pytorch-ood 0.4.0, the tuplet term and the rejection
score against the CAC paper's formulas (where pytorch-ood differs, documented numerically).
The score's behaviour far from the anchors: tests/test_far_ood_scores.py."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.loss import CACLoss

from mchad.errors import ConfigError
from mchad.methods.cac import (
    CAC,
    anchor_term,
    cac_score,
    one_minus_softmin,
    rejection_score,
    tuplet_term,
)

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C = 5


def mixed_batch(n_known=20, n_outliers=6, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_known + n_outliers, C, generator=g) * scale
    y = torch.cat([torch.randint(0, C, (n_known,), generator=g), torch.full((n_outliers,), -1)])
    return z, y


def paper_tuplet(d, y):
    """CAC paper: mean over known samples of log(1 + sum_{j != y} exp(d_y - d_j))."""
    per_sample = [
        torch.log(1 + sum(torch.exp(d[i, y[i]] - d[i, j]) for j in range(d.shape[1]) if j != y[i]))
        for i in range(len(y))
        if y[i] >= 0
    ]
    return torch.stack(per_sample).mean()


def pytorch_ood_tuplet(d, y):
    """pytorch-ood 0.4.0: the 'other' classes are 0..C-2 for every sample (true class in, last class out)."""
    per_sample = [
        torch.log(1 + sum(torch.exp(d[i, y[i]] - d[i, j]) for j in range(d.shape[1] - 1)))
        for i in range(len(y))
        if y[i] >= 0
    ]
    return torch.stack(per_sample).mean()


def paper_rejection_score(d):
    """CAC paper: gamma = d * (1 - softmin(d)) on the Euclidean distances d; reject by min_j gamma_j."""
    softmin = torch.exp(-d) / torch.exp(-d).sum(1, keepdim=True)
    return (d * (1 - softmin)).min(1).values


@pytest.mark.parametrize("magnitude", [1.0, 2.0, 10.0])
def test_anchors_and_distances_equal_pytorch_ood(magnitude):
    method, ref = CAC(C, C, magnitude=magnitude), CACLoss(n_classes=C, magnitude=magnitude)
    assert torch.equal(method.anchors, ref.centers.params.data)
    assert "anchors" in method.state_dict() and not list(method.parameters())
    z, _ = mixed_batch()
    torch.testing.assert_close(method(z)["distances"], ref.distance(z), rtol=1e-5, atol=1e-5)


def test_anchor_term_equals_pytorch_ood():
    method = CAC(C, C, magnitude=2.0)
    z, y = mixed_batch()
    d = method(z)["distances"]
    ref_anchor = CACLoss(C, magnitude=2.0, alpha=1.0)(d, y) - CACLoss(C, magnitude=2.0, alpha=0.0)(d, y)
    torch.testing.assert_close(anchor_term(d, y), ref_anchor, rtol=1e-5, atol=1e-5)


def test_tuplet_term_is_the_papers():
    z, y = mixed_batch()
    d = CAC(C, C, magnitude=2.0)(z)["distances"]
    torch.testing.assert_close(tuplet_term(d, y), paper_tuplet(d, y), rtol=1e-5, atol=1e-5)


def test_pytorch_ood_tuplet_term_differs():
    z, y = mixed_batch()
    d = CAC(C, C, magnitude=2.0)(z)["distances"]
    ref_tuplet = CACLoss(C, magnitude=2.0, alpha=0.0)(d, y)
    torch.testing.assert_close(ref_tuplet, pytorch_ood_tuplet(d, y), rtol=1e-5, atol=1e-5)
    assert abs(ref_tuplet.item() - tuplet_term(d, y).item()) > 0.05


def test_cac_score_is_the_papers_and_pytorch_ood_differs():
    z, _ = mixed_batch()
    d2 = CAC(C, C, magnitude=2.0)(z)["distances"]  # squared distances
    # paper (default): the formula on the Euclidean distances
    torch.testing.assert_close(cac_score(d2), paper_rejection_score(d2.sqrt()))
    torch.testing.assert_close(cac_score(d2, "paper"), rejection_score(d2.sqrt()))
    # reference: the same formula on the squared distances (the previous score)
    torch.testing.assert_close(cac_score(d2, "reference"), paper_rejection_score(d2))
    assert not torch.allclose(cac_score(d2, "paper"), cac_score(d2, "reference"))
    # pytorch-ood 0.4.0 (given squared distances): -max_j gamma_j, neither form
    gamma = d2 * (1 - torch.softmax(-d2, 1))
    torch.testing.assert_close(CACLoss.score(d2), -gamma.max(1).values)
    for form in ("paper", "reference"):
        assert not torch.allclose(CACLoss.score(d2), cac_score(d2, form))


def test_one_minus_softmin_is_exact_where_softmin_is_one():
    d = torch.tensor([[0.0, 14.0, 15.0], [3.0, 3.0, 40.0], [1.0, 2.0, 3.0]])
    want = 1 - torch.softmax(-d.double(), 1)
    got = one_minus_softmin(d)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    # the plain float32 formula loses the nearest entry of the first row (~1.1e-6) to rounding
    naive = 1 - torch.softmax(-d, 1)
    assert abs(naive[0, 0].double() / want[0, 0] - 1) > 1e-3


def test_score_form_default_and_check():
    assert CAC(C, C).score_form == "paper"
    assert CAC(C, C, score_form="reference").score_form == "reference"
    with pytest.raises(ConfigError, match=r"method.score_form=other is unknown.*paper, reference"):
        CAC(C, C, score_form="other")


def test_loss_terms_scores_and_prediction():
    method = CAC(C, C, magnitude=2.0, weight_anchor=2.0, weight_tuplet=1.5, weight_oe=0.1, margin=3.0)
    z, y = mixed_batch()
    out = method(z)
    d = out["distances"]
    terms = method.loss(out, y)
    assert set(terms) == {"anchor", "tuplet", "margin"}
    torch.testing.assert_close(terms["anchor"], 2.0 * anchor_term(d, y))
    torch.testing.assert_close(terms["tuplet"], 1.5 * paper_tuplet(d, y), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["margin"], 0.1 * (3.0**2 - d[y < 0] ** 2).relu().sum())
    scores = method.scores(out)
    assert tuple(scores) == method.score_names == ("distance", "cac")
    torch.testing.assert_close(scores["distance"], d.min(1).values)
    torch.testing.assert_close(scores["cac"], paper_rejection_score(d.sqrt()))
    # gamma is monotone in the distance (squared or not), so argmin gamma is the nearest anchor
    for e in (d, d.sqrt()):
        gamma = e * (1 - torch.softmax(-e, 1))
        assert torch.equal(method.predict(out), gamma.argmin(1))


def test_score_form_changes_only_the_cac_score():
    z, y = mixed_batch()
    paper, reference = CAC(C, C, magnitude=2.0), CAC(C, C, magnitude=2.0, score_form="reference")
    out_p, out_r = paper(z), reference(z)
    assert torch.equal(out_p["distances"], out_r["distances"])
    loss_p, loss_r = paper.loss(out_p, y), reference.loss(out_r, y)
    assert loss_p.keys() == loss_r.keys() and all(torch.equal(loss_p[k], loss_r[k]) for k in loss_p)
    assert torch.equal(paper.predict(out_p), reference.predict(out_r))
    s_p, s_r = paper.scores(out_p), reference.scores(out_r)
    assert torch.equal(s_p["distance"], s_r["distance"])
    d = out_r["distances"]
    assert torch.equal(s_r["cac"], (d * (1 - torch.softmax(-d, dim=1))).min(dim=1).values)


def test_uses_outliers_only_with_a_positive_weight():
    assert not CAC(C, C).uses_outliers
    assert set(CAC(C, C).loss(CAC(C, C)(torch.randn(3, C)), torch.tensor([0, 1, -1]))) == {"anchor", "tuplet"}
    assert CAC(C, C, weight_oe=5e-4).uses_outliers


@pytest.mark.parametrize("score_form", ["paper", "reference"])
def test_large_distances_are_finite(score_form):
    method = CAC(C, C, magnitude=10.0, weight_oe=1.0, score_form=score_form)
    z, y = mixed_batch(scale=1e8)
    z.requires_grad_(True)
    out = method(z)
    total = sum(method.loss(out, y).values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(z.grad).all()
    assert all(torch.isfinite(s).all() for s in method.scores(out).values())


def test_n_embedding_must_equal_n_classes():
    with pytest.raises(ConfigError, match=r"n_embedding=16 must equal n_classes=10.*set method.n_embedding=10") as info:
        CAC(10, 16)
    assert "\n" not in str(info.value)
