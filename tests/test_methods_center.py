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


def test_centers_and_classifier_learn():
    method = Center(C, D, weight_oe=1.0, margin=4.0)
    z, y = mixed_batch()
    sum(method.loss(method(z), y).values()).backward()
    assert method.centers.centers.grad.abs().sum() > 0
    assert method.classifier.weight.grad.abs().sum() > 0


def test_config_errors():
    with pytest.raises(ConfigError, match="n_embedding=0"):
        Center(C, 0)
    with pytest.raises(ConfigError, match="weight_center=-0.5"):
        Center(C, D, weight_center=-0.5)
