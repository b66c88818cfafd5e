"""Softmax, Outlier Exposure and Energy fine-tuning against pytorch-ood 0.4.0 and their papers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_ood.detector import EnergyBased, MaxLogit, MaxSoftmax
from pytorch_ood.loss import EnergyRegularizedLoss, OutlierExposureLoss

from mchad.errors import ConfigError
from mchad.methods.energy import EnergyFineTune, energy_hinge
from mchad.methods.oe import OutlierExposure, uniform_cross_entropy
from mchad.methods.softmax import Softmax, energy, maxlogit_score, msp_score

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C = 6


def mixed_batch(n_known=20, n_outliers=10, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_known + n_outliers, C, generator=g) * scale
    y = torch.cat([torch.randint(0, C, (n_known,), generator=g), torch.full((n_outliers,), -1)])
    return logits, y


def test_scores_equal_pytorch_ood_detectors():
    logits, _ = mixed_batch()
    torch.testing.assert_close(msp_score(logits), MaxSoftmax.score(logits))
    torch.testing.assert_close(maxlogit_score(logits), MaxLogit.score(logits))
    torch.testing.assert_close(energy(logits), EnergyBased.score(logits))
    torch.testing.assert_close(energy(logits, 2.0), EnergyBased.score(logits, t=2.0))


def test_softmax_method():
    method = Softmax(C, C, weight_ce=2.0)
    logits, y = mixed_batch()
    out = method(logits)
    known = y >= 0
    assert set(out) == {"logits"}
    assert set(method.loss(out, y)) == {"ce"}
    torch.testing.assert_close(method.loss(out, y)["ce"], 2.0 * F.cross_entropy(logits[known], y[known]))
    assert tuple(method.scores(out)) == method.score_names == ("msp", "maxlogit", "energy")
    assert torch.equal(method.predict(out), logits.argmax(1))
    assert not method.uses_outliers


@pytest.mark.parametrize("cls", [Softmax, OutlierExposure, EnergyFineTune])
def test_n_embedding_must_equal_n_classes(cls):
    with pytest.raises(ConfigError, match=r"n_embedding=16 must equal n_classes=10.*set method.n_embedding=10"):
        cls(10, 16)


def test_oe_equals_pytorch_ood_without_outliers():
    method = OutlierExposure(C, C, weight_oe=0.5)
    logits, y = mixed_batch(n_outliers=0)
    terms = method.loss(method(logits), y)
    assert terms["oe"].item() == 0.0
    torch.testing.assert_close(sum(terms.values()), OutlierExposureLoss(alpha=0.5)(logits, y), rtol=1e-5, atol=1e-5)


def test_oe_averages_each_term_over_its_own_samples_unlike_pytorch_ood():
    alpha = 0.5
    method = OutlierExposure(C, C, weight_oe=alpha)
    logits, y = mixed_batch()
    terms = method.loss(method(logits), y)
    known, outlier = y >= 0, y < 0
    # Hendrycks et al.'s code: mean cross-entropy on ID + alpha * mean cross-entropy to uniform on outliers
    uniform = torch.full((int(outlier.sum()), C), 1.0 / C)
    ce_to_uniform = -(uniform * F.log_softmax(logits[outlier], 1)).sum(1).mean()
    torch.testing.assert_close(terms["oe"], alpha * ce_to_uniform, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits[known], y[known]))
    # pytorch-ood 0.4.0 divides both sums by the whole batch
    n_known, n_out = known.sum(), outlier.sum()
    rescaled = (n_known * terms["ce"] + n_out * terms["oe"]) / (n_known + n_out)
    ref = OutlierExposureLoss(alpha=alpha)(logits, y)
    torch.testing.assert_close(rescaled, ref, rtol=1e-5, atol=1e-5)
    assert abs(sum(terms.values()).item() - ref.item()) > 0.05


def test_oe_on_only_outliers():
    method = OutlierExposure(C, C)
    logits, y = mixed_batch(n_known=0)
    terms = method.loss(method(logits), y)
    assert terms["ce"].item() == 0.0 and terms["oe"] > 0
    torch.testing.assert_close(uniform_cross_entropy(logits, y), (torch.logsumexp(logits, 1) - logits.mean(1)).mean())


@pytest.mark.parametrize("n_known,n_outliers", [(20, 10), (20, 0), (0, 10)])
def test_energy_equals_pytorch_ood(n_known, n_outliers):
    method = EnergyFineTune(C, C, weight_energy=0.1, margin_in=-5.0, margin_out=-2.0)
    logits, y = mixed_batch(n_known, n_outliers)
    terms = method.loss(method(logits), y)
    assert set(terms) == {"ce", "energy"}
    ref = EnergyRegularizedLoss(alpha=0.1, margin_in=-5.0, margin_out=-2.0)(logits, y)
    torch.testing.assert_close(sum(terms.values()), ref, rtol=1e-5, atol=1e-5)


def test_energy_hinge_formula():
    energies = torch.tensor([-30.0, -20.0, -10.0, -5.0])
    y = torch.tensor([0, 1, -1, -1])
    # m_in=-25, m_out=-7: ID relu(E - m_in)^2 = [0, 25]; outliers relu(m_out - E)^2 = [9, 0]
    expected = (0.0 + 25.0) / 2 + (9.0 + 0.0) / 2
    assert energy_hinge(energies, y, -25.0, -7.0).item() == pytest.approx(expected)


def test_uses_outliers_flags():
    assert OutlierExposure(C, C).uses_outliers and not OutlierExposure(C, C, weight_oe=0.0).uses_outliers
    assert EnergyFineTune(C, C).uses_outliers and not EnergyFineTune(C, C, weight_energy=0.0).uses_outliers


def test_logits_are_float32_under_mixed_precision():
    out = Softmax(C, C)(torch.randn(4, C).bfloat16())
    assert out["logits"].dtype == torch.float32
