"""Center loss and G-Center: a softmax classifier whose embeddings are pulled to class centers."""

from __future__ import annotations

from torch import Tensor, nn

from mchad.methods.mchad import MCHAD
from mchad.methods.method import Outputs
from mchad.methods.softmax import LOGIT_SCORES, logit_scores
from mchad.methods.terms import MarginForm, min_distance


class Center(MCHAD):
    """Center loss with a linear softmax classifier; G-Center when ``weight_oe > 0``.

    Wen, Zhang, Li, Qiao: *A Discriminative Feature Learning Approach for Deep Face
    Recognition*, ECCV 2016 (https://ydwen.github.io/papers/WenECCV16.pdf); the outlier
    term is the one of MCHAD (Kirchheim et al., ICPR 2022).

    Learnable centers ``mu_c`` (:class:`~mchad.nn.centers.ClassCenters`) with squared
    distances ``d_ic = ||f(x_i) - mu_c||_2^2``, and logits ``l_i = W f(x_i) + b`` of a
    linear layer on the embedding. With ``K`` the known samples, ``O`` the outliers::

        center: w_center * 1/(|K| C) sum_{i in K} d_{i y_i}
        ce:     w_ce * 1/|K| sum_{i in K} -log softmax(l_i)_{y_i}
        margin: w_oe * sum_{i in O} sum_c max(0, m^2 - d_ic^2)      (G-Center, as MCHAD's)

    These are MCHAD's center and margin terms (radius 0) with the cross-entropy of a linear
    classifier in place of MCHAD's soft-min over the centers, so the class extends
    :class:`~mchad.methods.mchad.MCHAD` and overrides what it classifies with (:meth:`logits`),
    its prediction and its scores; G-Center's diagnostics are MCHAD's.

    The center term is the reference's (pytorch-ood ``CenterLoss``): a mean over the
    masked ``|K| x C`` matrix, i.e. Wen et al.'s center loss up to a constant factor,
    which the weights absorb. Wen et al. update the centers with
    their own learning rate; here they are ordinary parameters of the optimiser.

    Prediction: ``argmax_c l_ic`` (the classifier the cross-entropy trains). Scores:
    ``distance`` (``min_c d_ic``) and the logit scores ``msp``, ``maxlogit``,
    ``energy`` of :mod:`mchad.methods.softmax`.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: embedding dimension ``D``.
        weight_center: ``w_center``.
        weight_ce: ``w_ce``.
        weight_oe: ``w_oe``; > 0 turns on the margin term on outliers (G-Center).
        margin: ``m`` (see :func:`mchad.methods.terms.margin_term`).
        margin_form: ``"reference"`` or ``"paper"``, as for MCHAD.
    """

    score_names = ("distance", *LOGIT_SCORES)
    embedding_kind = "an embedding with a center per class and a linear classifier of its own on it"

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        weight_center: float = 1.0,
        weight_ce: float = 1.0,
        weight_oe: float = 0.0,
        margin: float = 1.0,
        margin_form: MarginForm = "reference",
    ) -> None:
        super().__init__(n_classes, n_embedding, weight_center, weight_ce, weight_oe, margin, 0.0, margin_form)
        self.classifier = nn.Linear(self.n_embedding, self.n_classes)

    def forward(self, z: Tensor) -> Outputs:
        # float logits: half-precision softmax values near 1 would tie many msp scores
        return {"distances": self.centers(z), "logits": self.classifier(z).float()}

    def logits(self, out: Outputs) -> Tensor:
        return out["logits"]

    def predict(self, out: Outputs) -> Tensor:
        return out["logits"].argmax(dim=1)

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        return {"distance": min_distance(out["distances"]), **logit_scores(out["logits"])}
