"""II (ii-loss) against pytorch-ood 0.4.0's IILoss, its running class means and epoch hooks."""

from __future__ import annotations

import pytest
import torch
from pytorch_ood.loss import IILoss

from mchad.errors import ConfigError
from mchad.methods.ii import II, batch_class_means, inter_separation, intra_spread

pytestmark = pytest.mark.filterwarnings("ignore:Discarding samples")

C, D = 4, 5


def mixed_batch(n_known=24, n_outliers=0, seed=0, classes=C):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_known + n_outliers, D, generator=g)
    y = torch.cat([torch.arange(n_known) % classes, torch.full((n_outliers,), -1)])
    return z, y


@pytest.mark.parametrize("weight", [1.0, 100.0])
@pytest.mark.parametrize("n_outliers", [0, 5])
def test_training_loss_equals_pytorch_ood(weight, n_outliers):
    method = II(C, D, weight_separation=weight, batch_norm=False).train()
    ref = IILoss(n_classes=C, n_embedding=D, alpha=weight).train()
    z, y = mixed_batch(n_outliers=n_outliers)
    ours = sum(method.loss(method(z), y).values())
    torch.testing.assert_close(ours, ref(z, y), rtol=1e-5, atol=1e-4)


def test_eval_loss_equals_pytorch_ood_with_the_same_centers():
    method = II(C, D, weight_separation=10.0, batch_norm=False)
    ref = IILoss(n_classes=C, n_embedding=D, alpha=10.0)
    method.train().loss(method(mixed_batch(seed=1)[0]), mixed_batch(seed=1)[1])
    ref.running_centers.running_centers.copy_(method.centers.means)
    method.eval(), ref.eval()
    z, y = mixed_batch(n_known=7, classes=3)
    torch.testing.assert_close(sum(method.loss(method(z), y).values()), ref(z, y), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(method(z)["distances"], ref.distance(z), rtol=1e-5, atol=1e-5)


def test_terms_match_the_papers_definitions():
    z, y = mixed_batch(n_known=10, n_outliers=3)
    known = y >= 0
    means, present = batch_class_means(z, y, known, C)
    assert present.all()
    for c in range(C):
        torch.testing.assert_close(means[c], z[y == c].mean(0))
    spread = sum(((z[i] - means[y[i]]) ** 2).sum() for i in range(10)) / 10
    torch.testing.assert_close(intra_spread(z, y, known, means), spread)
    pairs = [((means[j] - means[k]) ** 2).sum() for j in range(C) for k in range(C) if j != k]
    torch.testing.assert_close(inter_separation(means, present), torch.stack(pairs).min())


def test_separation_takes_only_the_classes_present_in_the_batch():
    means = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0], [0.0, 4.0]])
    present = torch.tensor([True, False, True, True])
    torch.testing.assert_close(inter_separation(means, present), torch.tensor(9.0))
    z, y = mixed_batch(n_known=6, classes=2)
    assert batch_class_means(z, y, y >= 0, C)[1].tolist() == [True, True, False, False]


def test_single_class_batch_has_no_separation():
    method = II(C, D, weight_separation=100.0).train()
    z, y = mixed_batch(n_known=6, classes=1)
    terms = method.loss(method(z), y)
    assert set(terms) == {"spread", "separation"}
    assert terms["separation"].item() == 0.0 and torch.isfinite(terms["spread"])
    assert inter_separation(torch.randn(C, D), torch.tensor([False, True, False, False])).item() == 0.0


def test_only_outliers_give_zero_terms_and_keep_the_graph():
    method = II(C, D).train()
    z = torch.randn(6, D, requires_grad=True)
    terms = method.loss(method(z), torch.full((6,), -1))
    assert all(v.item() == 0.0 for v in terms.values())
    sum(terms.values()).backward()
    assert method.centers.counts.sum() == 0


def test_running_means_accumulate_over_an_epoch_and_reset_at_the_next():
    method = II(C, D, batch_norm=False).train()
    (z1, y1), (z2, y2) = mixed_batch(seed=1), mixed_batch(seed=2)
    method.on_train_epoch_start()
    for z, y in ((z1, y1), (z2, y2)):
        method.loss(method(z), y)
    z, y = torch.cat([z1, z2]), torch.cat([y1, y2])
    for c in range(C):
        torch.testing.assert_close(method.centers.means[c], z[y == c].mean(0))
    method.on_train_epoch_start()
    assert method.centers.counts.sum() == 0
    method.loss(method(z1[y1 == 0]), y1[y1 == 0])
    torch.testing.assert_close(method.centers.means[0], z1[y1 == 0].mean(0))
    torch.testing.assert_close(method.centers.means[1], z[y == 1].mean(0))


def test_evaluation_does_not_update_the_means():
    method = II(C, D)
    method.train().loss(method(mixed_batch()[0]), mixed_batch()[1])
    before = method.centers.means.clone()
    method.eval().loss(method(mixed_batch(seed=3)[0]), mixed_batch(seed=3)[1])
    assert torch.equal(before, method.centers.means)


def test_outputs_prediction_and_score_use_the_running_means():
    method = II(C, D)
    method.train().loss(method(mixed_batch()[0]), mixed_batch()[1])
    method.eval()
    z, _ = mixed_batch(seed=4)
    out = method(z)
    assert set(out) == {"embedding", "distances"} and out["distances"].shape == (len(z), C)
    expected = torch.cdist(out["embedding"], method.centers.means) ** 2
    torch.testing.assert_close(out["distances"], expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(method.predict(out), expected.argmin(1))
    torch.testing.assert_close(method.scores(out)["distance"], expected.min(1).values, rtol=1e-4, atol=1e-4)


def test_batch_norm_without_affine_parameters():
    method = II(C, D).train()
    assert not list(method.parameters())
    embedding = method(torch.randn(64, D) * 5 + 3)["embedding"]
    torch.testing.assert_close(embedding.mean(0), torch.zeros(D), atol=1e-5, rtol=0)
    assert {"norm.running_mean", "centers.means"} <= set(method.state_dict())


def test_config_errors():
    with pytest.raises(ConfigError, match="weight_separation=-1"):
        II(C, D, weight_separation=-1)
    with pytest.raises(ConfigError, match="n_embedding=0"):
        II(C, 0)
