"""What every method must do: outputs, loss terms, prediction, scores, gradients, edge batches."""

from __future__ import annotations

import pytest
import torch

from mchad.errors import ConfigError
from mchad.methods.cac import CAC
from mchad.methods.center import Center
from mchad.methods.energy import EnergyFineTune
from mchad.methods.ii import II
from mchad.methods.mchad import MCHAD
from mchad.methods.method import Method
from mchad.methods.oe import OutlierExposure
from mchad.methods.softmax import Softmax

C = 4
# every method (and g-variant) on a toy problem; outlier weights large enough to matter
FACTORIES = {
    "mchad": lambda: MCHAD(C, 6, weight_center=0.5),
    "gmchad": lambda: MCHAD(C, 6, weight_center=1.0, weight_ce=1.5, weight_oe=0.05, margin=6.0),
    "gmchad-paper": lambda: MCHAD(C, 6, weight_oe=0.05, margin=2.0, radius=0.5, margin_form="paper"),
    "cac": lambda: CAC(C, C, magnitude=2.0, weight_anchor=2.0),
    "gcac": lambda: CAC(C, C, magnitude=2.0, weight_anchor=2.0, weight_tuplet=1.5, weight_oe=0.05, margin=6.0),
    "center": lambda: Center(C, 6, weight_center=0.5),
    "gcenter": lambda: Center(C, 6, weight_ce=1.5, weight_oe=0.05, margin=6.0),
    "ii": lambda: II(C, 6, weight_separation=100.0),
    "softmax": lambda: Softmax(C, C),
    "oe": lambda: OutlierExposure(C, C),
    "energy": lambda: EnergyFineTune(C, C, margin_in=-3.0, margin_out=-1.0),
}
USES_OUTLIERS = {"gmchad", "gmchad-paper", "gcac", "gcenter", "oe", "energy"}


def make(name: str) -> Method:
    torch.manual_seed(0)
    return FACTORIES[name]().train()


def toy_batch(method: Method, n_known=16, n_outliers=8, seed=0, scale=1.0, classes=C):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_known + n_outliers, method.n_embedding, generator=g) * scale
    y = torch.cat([torch.arange(n_known) % classes, torch.full((n_outliers,), -1)])
    return z, y


def total_loss(method: Method, z, y):
    terms = method.loss(method(z), y)
    for name, value in terms.items():
        assert value.dim() == 0, name
        assert torch.isfinite(value), name
    return torch.stack(list(terms.values())).sum()


@pytest.mark.parametrize("name", FACTORIES)
def test_outputs_prediction_and_scores_have_batch_shapes(name):
    method = make(name)
    z, _ = toy_batch(method)
    out = method(z)
    assert out and all(isinstance(v, torch.Tensor) and v.shape[0] == len(z) for v in out.values())
    pred = method.predict(out)
    assert pred.shape == (len(z),) and pred.dtype == torch.int64
    assert ((pred >= 0) & (pred < C)).all()
    scores = method.scores(out)
    assert tuple(scores) == method.score_names and method.score_names
    assert all(s.shape == (len(z),) and torch.isfinite(s).all() for s in scores.values())


@pytest.mark.parametrize("name", FACTORIES)
def test_uses_outliers_flag(name):
    assert make(name).uses_outliers == (name in USES_OUTLIERS)


@pytest.mark.parametrize("name", FACTORIES)
def test_a_gradient_step_reduces_the_loss(name):
    method = make(name)
    z, y = toy_batch(method)
    z = torch.nn.Parameter(z)
    optimizer = torch.optim.SGD([z, *method.parameters()], lr=1e-3)
    before = total_loss(method, z, y)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert total_loss(method, z, y) < before


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize(
    "batch",
    [
        dict(n_known=0, n_outliers=8),
        dict(n_known=12, n_outliers=0),
        dict(n_known=6, n_outliers=3, classes=1),
        dict(scale=1e6),
    ],
    ids=["only-outliers", "no-outliers", "single-class", "huge-embeddings"],
)
def test_edge_batches_give_finite_losses_gradients_and_scores(name, batch):
    method = make(name)
    z, y = toy_batch(method, **batch)
    z.requires_grad_(True)
    total_loss(method, z, y).backward()
    assert torch.isfinite(z.grad).all()
    assert all(torch.isfinite(s).all() for s in method.scores(method(z)).values())


@pytest.mark.parametrize("name", FACTORIES)
def test_n_embedding_below_one_is_a_config_error(name):
    cls = type(make(name))
    with pytest.raises(ConfigError, match=r"n_embedding=0"):
        cls(C, 0)


@pytest.mark.parametrize("name", FACTORIES)
def test_state_dict_round_trip(name):
    method, copy = make(name), make(name)
    z, y = toy_batch(method)
    method.loss(method(z), y)
    copy.load_state_dict(method.state_dict())
    method.eval(), copy.eval()
    for key, value in method(z).items():
        torch.testing.assert_close(copy(z)[key], value)


@pytest.mark.parametrize("name", FACTORIES)
def test_mixed_precision_gives_float32_losses_and_scores(name):
    method = make(name)
    z, y = toy_batch(method)
    encoder = torch.nn.Linear(method.n_embedding, method.n_embedding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embedding = encoder(z)
        assert embedding.dtype == torch.bfloat16
        out = method(embedding)
        terms = method.loss(out, y)
        scores = method.scores(out)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    assert all(s.dtype == torch.float32 for s in scores.values())
    torch.stack(list(terms.values())).sum().backward()
    assert torch.isfinite(encoder.weight.grad).all()


@pytest.mark.parametrize("name", FACTORIES)
def test_class_centers_sit_where_the_distances_are_measured(name):
    method = make(name)
    z, y = toy_batch(method, n_outliers=0)
    method.loss(method(z), y)
    method.eval()
    centers = method.class_centers()
    if name in ("softmax", "oe", "energy"):
        assert centers is None
        return
    assert centers.shape == (C, method.n_embedding) and not centers.requires_grad
    # a backbone output exactly at a class center is at distance 0 from it
    distances = method(centers)["distances"]
    torch.testing.assert_close(distances.diagonal(), torch.zeros(C), atol=1e-4, rtol=0)
