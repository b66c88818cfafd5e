"""Every OOD score against its paper's definition, at inputs far from every class.

Synthetic embeddings, no training: in-distribution (ID) points lie near the class centers /
anchors (for the softmax family: logits that are confident for one class), far-OOD points at
``scale`` times the length of the centers in random directions. OOD is the positive class and
every score is "higher = more anomalous", so a score that sees far inputs as anomalous has an
AUROC near 1.

* Distance-based scores (``distance``: ``min_c d_c``, the distance to the nearest center;
  ``cac``: ``min_j e_j (1 - softmin(e)_j)`` on the Euclidean distances ``e``, Miller et al.,
  WACV 2021) must rank far inputs as anomalous (AUROC > 0.95).
* ``score_form="reference"`` of the ``cac`` score (the formula on squared distances, the
  MCHAD reference code) does not: it tends to 0 far from every anchor. Its AUROCs are pinned
  here, as quoted in the docstring of :class:`mchad.methods.cac.CAC`.
* The logit scores (``msp`` = ``-max softmax``, Hendrycks & Gimpel 2017; ``maxlogit`` =
  ``-max logit``, Hendrycks et al. 2022; ``energy`` = ``-T logsumexp(logits / T)``, Liu et al.
  2020) rank unconfident logits as anomalous; scaled-up logits are confident, so far inputs
  look in-distribution to them. That is their definition (they are not distances), documented
  by a test below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mchad.methods import METHODS
from mchad.methods.cac import CAC, cac_score
from mchad.methods.center import Center
from mchad.methods.energy import EnergyFineTune
from mchad.methods.ii import II
from mchad.methods.mchad import MCHAD
from mchad.methods.method import Method
from mchad.methods.oe import OutlierExposure
from mchad.methods.softmax import Softmax

C = 4
D = 6  # embedding size of the methods whose centers live in a free space
N = 500  # ID and OOD points each
SCALES = (3.0, 10.0, 100.0)
DISTANCE_SCORES = {"distance", "cac"}
LOGIT_SCORES = {"msp", "maxlogit", "energy"}

FACTORIES = {
    "mchad": lambda: MCHAD(C, D),
    "gmchad": lambda: MCHAD(C, D, weight_oe=5e-4, margin=6.0),
    "cac": lambda **kw: CAC(C, C, magnitude=2.0, weight_anchor=2.0, **kw),
    "gcac": lambda **kw: CAC(C, C, magnitude=2.0, weight_anchor=2.0, weight_tuplet=1.5, weight_oe=5e-4, **kw),
    "center": lambda: Center(C, D),
    "gcenter": lambda: Center(C, D, weight_oe=5e-4, margin=6.0),
    "ii": lambda: II(C, D),
    "softmax": lambda: Softmax(C, C),
    "oe": lambda: OutlierExposure(C, C),
    "energy": lambda: EnergyFineTune(C, C),
}
LOGITS_ONLY = {"softmax", "oe", "energy"}  # the embedding is the logits: no centers, no distance score


def make(name: str, **kwargs) -> Method:
    torch.manual_seed(0)  # centers and the linear classifier are drawn from the global RNG
    method = FACTORIES[name](**kwargs)
    if isinstance(method, II):
        # II's centers are running class means: give it some, in its (BatchNorm) embedding space
        g = torch.Generator().manual_seed(1)
        means = 2.0 * torch.randn(C, D, generator=g)
        method.eval()
        y = torch.arange(C)
        method.centers.update(method(means)["embedding"], y, torch.ones(C, dtype=torch.bool))
    return method.eval()


def centers_of(method: Method, name: str) -> torch.Tensor:
    """Where the ID data sits in the backbone's output space: class centers, or confident logits."""
    if name in LOGITS_ONLY:
        return 8.0 * torch.eye(C)
    return method.class_centers().detach()


def synthetic(centers: torch.Tensor, scale: float, seed: int = 0, spread: float = 0.3):
    """``N`` ID points within ~``spread`` of the centers and ``N`` far-OOD points at
    ``scale`` x the mean center length in random directions; labels 1 = OOD."""
    g = torch.Generator().manual_seed(seed)
    n_classes, dim = centers.shape
    z_id = centers[torch.arange(N) % n_classes] + spread * torch.randn(N, dim, generator=g)
    u = torch.randn(N, dim, generator=g)
    z_ood = scale * centers.norm(dim=1).mean() * u / u.norm(dim=1, keepdim=True)
    return torch.cat([z_id, z_ood]), np.r_[np.zeros(N), np.ones(N)]


def aurocs(method: Method, z: torch.Tensor, is_ood: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        scores = method.scores(method(z))
    return {name: roc_auc_score(is_ood, s.double().numpy()) for name, s in scores.items()}


def test_every_method_is_covered():
    assert set(FACTORIES) == set(METHODS)
    for name in METHODS:
        names = set(make(name).score_names)
        assert names <= DISTANCE_SCORES | LOGIT_SCORES, name
        assert bool(names & DISTANCE_SCORES) == (name not in LOGITS_ONLY), name


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", [m for m in FACTORIES if m not in LOGITS_ONLY])
def test_distance_scores_rank_far_inputs_as_anomalous(name, scale):
    method = make(name)
    z, is_ood = synthetic(centers_of(method, name), scale)
    result = aurocs(method, z, is_ood)
    distance_based = {k: v for k, v in result.items() if k in DISTANCE_SCORES}
    assert distance_based, name
    for score, auroc in distance_based.items():
        assert auroc > 0.95, f"{name}.{score}: AUROC {auroc:.3f} at {scale}x"


# AUROC of the cac score's two forms on the data above (CAC, magnitude 2), by scale; the values
# quoted in the CAC docstring. scale 1 is not far: OOD points at the anchors' length.
EXPECTED = {
    # scale: (paper, reference, distance)
    1.0: (0.968, 0.955, 0.965),
    3.0: (1.0, 0.627, 1.0),
    10.0: (1.0, 0.233, 1.0),
    100.0: (1.0, 0.039, 1.0),
}


@pytest.mark.parametrize("scale", EXPECTED)
def test_cac_score_forms_on_far_inputs(scale):
    paper, reference = make("cac"), make("cac", score_form="reference")
    assert paper.score_form == "paper"
    z, is_ood = synthetic(centers_of(paper, "cac"), scale)
    got_paper, got_reference = aurocs(paper, z, is_ood), aurocs(reference, z, is_ood)
    assert got_paper["distance"] == got_reference["distance"]  # only the cac score changes
    got = (got_paper["cac"], got_reference["cac"], got_paper["distance"])
    assert got == pytest.approx(EXPECTED[scale], abs=0.005), got
    if scale >= 3:
        assert got_paper["cac"] > 0.95 and got_reference["cac"] < 0.7


# magnitude: AUROC of (paper, reference) at scales 1, 3, 10, 100. At magnitude 10 the squared
# gaps near an anchor (~200) make 1 - softmin underflow for the ID data too: the reference
# score is 0 nearly everywhere and its AUROC ~0.5 (ties).
BY_MAGNITUDE = {
    1.0: ((0.820, 1.0, 1.0, 1.0), (0.835, 0.872, 0.487, 0.103)),
    10.0: ((1.0, 1.0, 1.0, 1.0), (0.569, 0.525, 0.507, 0.502)),
}


@pytest.mark.parametrize("magnitude", BY_MAGNITUDE)
def test_cac_score_forms_at_other_magnitudes(magnitude):
    for form, expected in zip(("paper", "reference"), BY_MAGNITUDE[magnitude]):
        method = CAC(C, C, magnitude=magnitude, score_form=form).eval()
        got = [aurocs(method, *synthetic(centers_of(method, "cac"), scale))["cac"] for scale in (1.0, 3.0, 10.0, 100.0)]
        assert got == pytest.approx(expected, abs=0.005), (form, got)
        assert form == "reference" or min(got[1:]) > 0.95


def test_reference_form_is_the_previous_score_bit_for_bit():
    """The previous ``cac`` score: ``min_j d_j (1 - softmin(d)_j)`` on the squared distances."""
    method = make("cac", score_form="reference")
    z, _ = synthetic(centers_of(method, "cac"), 10.0)
    d = method(z)["distances"]
    previous = (d * (1 - torch.softmax(-d, dim=1))).min(dim=1).values
    assert torch.equal(method.scores(method(z))["cac"], previous)
    # far out the nearest anchor's softmin is 1 in float32: the previous score is exactly 0 there
    assert (previous[N:] == 0).float().mean() > 0.5 and (previous[:N] > 0).all()


def numpy_cac(d2: np.ndarray, form: str) -> np.ndarray:
    """Independent float64 implementation: ``min_j e_j (1 - softmin(e)_j)``, ``e = sqrt(d2)``
    (paper) or ``e = d2`` (reference)."""
    e = np.sqrt(d2) if form == "paper" else d2
    w = np.exp(-(e - e.min(axis=1, keepdims=True)))
    return (e * (1 - w / w.sum(axis=1, keepdims=True))).min(axis=1)


@pytest.mark.parametrize("magnitude", [1.0, 2.0, 10.0])
@pytest.mark.parametrize("form", ["paper", "reference"])
def test_cac_score_equals_numpy(form, magnitude):
    method = CAC(5, 5, magnitude=magnitude, score_form=form)
    g = torch.Generator().manual_seed(3)
    # random points around the anchors, near and far
    z = method.anchors[torch.arange(300) % 5] + torch.randn(300, 5, generator=g) * torch.rand(300, 1, generator=g) * 3
    d2 = method(z)["distances"]
    want = numpy_cac(d2.double().numpy(), form)
    # float64 distances: the same formula up to rounding
    torch.testing.assert_close(cac_score(d2.double(), form).numpy(), want, rtol=1e-10, atol=1e-12)
    # float32, what runs: the paper form is accurate to float32 even where softmin is ~1
    # (it computes 1 - softmin of the nearest anchor without cancellation); the reference form
    # is the plain formula, accurate only to ~1e-7 absolute in 1 - softmin
    got = method.scores(method(z))["cac"].double().numpy()
    if form == "paper":
        np.testing.assert_allclose(got, want, rtol=2e-5)
    else:
        # |error| <= d_min * ulp(1) from 1 - softmin of the nearest anchor, plus float32 rounding
        bound = 1e-5 * np.abs(want) + 2.5e-7 * d2.min(1).values.double().numpy()
        assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("name", ["softmax", "oe", "energy"])
def test_logit_scores_rank_unconfident_logits_as_anomalous(name):
    """MSP, max-logit and energy by their definitions: confident logits (ID) low, flat logits high."""
    method = make(name)
    g = torch.Generator().manual_seed(0)
    confident = 8.0 * torch.eye(C)[torch.arange(N) % C] + 0.5 * torch.randn(N, C, generator=g)
    flat = 0.5 * torch.randn(N, C, generator=g)
    z, is_ood = torch.cat([confident, flat]), np.r_[np.zeros(N), np.ones(N)]
    result = aurocs(method, z, is_ood)
    assert set(result) == LOGIT_SCORES
    assert all(auroc > 0.95 for auroc in result.values()), result
    # the definitions, against float64 numpy
    logits = z.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lse = np.log(np.exp(logits).sum(1))
    with torch.no_grad():
        scores = {k: v.double().numpy() for k, v in method.scores(method(z)).items()}
    np.testing.assert_allclose(scores["msp"], -p.max(1), rtol=1e-6)
    np.testing.assert_allclose(scores["maxlogit"], -logits.max(1), rtol=1e-6)
    np.testing.assert_allclose(scores["energy"], -lse, rtol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "oe", "energy", "center"])
def test_far_inputs_look_confident_to_logit_scores(name):
    """Not a bug, the definition: scaling an input up scales its logits, and MSP, max-logit and
    energy all call large logits confident, so far inputs rank as *more* in-distribution than
    the ID data (cf. Hein et al., CVPR 2019). Only the distance scores see them."""
    method = make(name)
    z, is_ood = synthetic(centers_of(method, name), 100.0)
    result = aurocs(method, z, is_ood)
    assert all(result[score] < 0.5 for score in LOGIT_SCORES), result
    if "distance" in result:
        assert result["distance"] > 0.95
