"""Center loss / G-Center against pytorch-ood 0.4.0's CenterLoss and MCHAD's margin term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_ood.loss import CenterLoss
from pytorch_ood.loss.mchad import CenterRegularizationLoss

from mchad.errors import ConfigError
from mchad.methods.center import Center
from mchad.methods.softmax import energy

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C, D = 4, 6


def mixed_batch(n_known=16, n_outliers=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_known + n_outliers, D, generator=g)
    y = torch.cat([torch.randint(0, C, (n_known,), generator=g), torch.full((n_outliers,), -1)])
    return z, y


def test_terms_equal_pytorch_ood():
    method = Center(C, D, weight_center=2.0, weight_ce=1.5, weight_oe=1e-2, margin=4.0)
    z, y = mixed_batch()
    out = method(z)
    terms = method.loss(out, y)
    assert set(terms) == {"center", "ce", "margin"}
    ref_center = CenterLoss(n_classes=C, n_dim=D)
    ref_center.centers.params.data.copy_(method.centers.centers.data)
    known = y >= 0
    torch.testing.assert_close(terms["center"], 2.0 * ref_center(ref_center.distance(z), y), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["ce"], 1.5 * F.cross_entropy(method.classifier(z)[known], y[known]))
    ref_margin = CenterRegularizationLoss(margin=4.0)(out["distances"], y)
    torch.testing.assert_close(terms["margin"], 1e-2 * ref_margin, rtol=1e-5, atol=1e-5)


def test_outputs_scores_and_prediction():
    method = Center(C, D)
    z, _ = mixed_batch()
    out = method(z)
    assert set(out) == {"distances", "logits"}
    assert out["distances"].shape == out["logits"].shape == (len(z), C)
    scores = method.scores(out)
    assert tuple(scores) == method.score_names == ("distance", "msp", "maxlogit", "energy")
    torch.testing.assert_close(scores["distance"], out["distances"].min(1).values)
    torch.testing.assert_close(scores["energy"], energy(out["logits"]))
    assert torch.equal(method.predict(out), out["logits"].argmax(1))


def test_uses_outliers_only_with_a_positive_weight():
    assert not Center(C, D).uses_outliers
    assert "margin" not in Center(C, D).loss(Center(C, D)(torch.randn(2, D)), torch.tensor([0, 1]))
    assert Center(C, D, weight_oe=8e-6).uses_outliers


def test_loss_gradients_equal_the_chain_rule_by_hand():
    """Centers, classifier and embeddings, every term on (reference margin form), against hand derivatives.

    With d_ic = ||z_i - mu_c||^2, logits l_i = W z_i + b, p_i = softmax(l_i), e_y the one-hot label:

    center: w_center/(|K| C) sum_{i in K} d_{i y_i}      -> dL/dd_ic = w_center/(|K| C) [c = y_i]
    margin: w_oe sum_{i in O} sum_c max(0, m^2 - d_ic^2) -> dL/dd_ic = -2 w_oe d_ic [d_ic < m]
    ce:     w_ce/|K| sum_{i in K} -log p_{i y_i}         -> dL/dl_i = w_ce/|K| (p_i - e_{y_i})

    so dL/dmu_c = -2 sum_i G_ic (z_i - mu_c), dL/dW = sum_i (dL/dl_i) z_i^T, dL/db = sum_i dL/dl_i and
    dL/dz_i = 2 sum_c G_ic (z_i - mu_c) + W^T dL/dl_i.
    """
    w_center, w_ce, w_oe, m = 2.0, 1.5, 1e-2, 8.0
    method = Center(C, D, weight_center=w_center, weight_ce=w_ce, weight_oe=w_oe, margin=m)
    # fixed centers: the class-center init draws from the global RNG
    method.centers.centers.data.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(5)))
    z, y = mixed_batch()
    z.requires_grad_(True)
    sum(method.loss(method(z), y).values()).backward()

    mu, zd = method.centers.centers.detach(), z.detach()
    W, b = method.classifier.weight.detach(), method.classifier.bias.detach()
    diff = zd[:, None, :] - mu[None, :, :]  # B x C x D
    d = (diff**2).sum(2)
    known, outlier = y >= 0, y < 0
    n_known = int(known.sum())
    onehot = torch.zeros(len(y), C)
    onehot[known, y[known]] = 1.0
    logits = zd @ W.T + b
    p = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    G = w_center / (n_known * C) * onehot - 2 * w_oe * d * (d < m) * outlier[:, None]
    dlogits = w_ce / n_known * (p - onehot) * known[:, None]
    assert bool((d[outlier] < m).any()) and bool((d[outlier] >= m).any())  # outliers on both sides of the margin
    torch.testing.assert_close(method.centers.centers.grad, -2 * (G[:, :, None] * diff).sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.classifier.weight.grad, dlogits.T @ zd, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.classifier.bias.grad, dlogits.sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z.grad, 2 * (G[:, :, None] * diff).sum(1) + dlogits @ W, rtol=1e-4, atol=1e-6)


def test_center_term_gradient_on_a_two_sample_example():
    """One class of two samples in 2-D, worked out on paper: C = 2, |K| = 2, mu_0 = (1, 0), z = (3, 0), (1, 2).

    L = 1/(2 * 2) (||z_1 - mu_0||^2 + ||z_2 - mu_0||^2) = (4 + 4) / 4 = 2,
    dL/dmu_0 = -2/4 ((2, 0) + (0, 2)) = (-1, -1), dL/dmu_1 = 0 (no sample of class 1).
    """
    method = Center(2, 2, weight_ce=0.0)
    method.centers.centers.data.copy_(torch.tensor([[1.0, 0.0], [-5.0, 7.0]]))
    z = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    loss = method.loss(method(z), torch.tensor([0, 0]))["center"]
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(2.0))
    torch.testing.assert_close(method.centers.centers.grad, torch.tensor([[-1.0, -1.0], [0.0, 0.0]]))


def test_config_errors():
    with pytest.raises(ConfigError, match="n_embedding=0"):
        Center(C, 0)
    with pytest.raises(ConfigError, match="weight_center=-0.5"):
        Center(C, D, weight_center=-0.5)
