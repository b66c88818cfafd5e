"""Energy fine-tuning: softmax classifier with a hinge on the free energy of ID data and outliers."""

from __future__ import annotations

from torch import Tensor

from mchad.methods.method import Outputs, masked_mean, split_known
from mchad.methods.softmax import Softmax, energy
from mchad.methods.terms import check_non_negative


def energy_hinge(energies: Tensor, y: Tensor, margin_in: float, margin_out: float) -> Tensor:
    """Squared hinges on the energies of known samples ``K`` and outliers ``O``:

    ``L = 1/|K| sum_{i in K} max(0, E_i - m_in)^2 + 1/|O| sum_{i in O} max(0, m_out - E_i)^2``;
    each mean is zero when its samples are absent.
    """
    known, outlier = split_known(y)
    return masked_mean((energies - margin_in).relu().pow(2), known) + masked_mean(
        (margin_out - energies).relu().pow(2), outlier
    )


class EnergyFineTune(Softmax):
    """Energy-bounded fine-tuning of a softmax classifier.

    Liu, Wang, Owens, Li: *Energy-based Out-of-distribution Detection*, NeurIPS 2020
    (https://arxiv.org/abs/2010.03759, code: https://github.com/wetliu/energy_ood).

    With the free energy ``E(x) = -log sum_c exp(f(x)_c)``, ``K`` the known samples
    and ``O`` the outliers (label -1) of the batch::

        ce:     w_ce * 1/|K| sum_{i in K} -log softmax(f(x_i))_{y_i}
        energy: w_energy * ( 1/|K| sum_{i in K} max(0, E(x_i) - m_in)^2
                           + 1/|O| sum_{i in O} max(0, m_out - E(x_i))^2 )

    The same as pytorch-ood 0.4.0's ``EnergyRegularizedLoss`` (``alpha = w_energy``).
    Defaults are the paper's CIFAR values. Prediction and scores as :class:`Softmax`.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: must equal ``n_classes``.
        weight_ce: ``w_ce``.
        weight_energy: ``w_energy``; 0 reduces this to :class:`Softmax`.
        margin_in: ``m_in``, the energy ID samples are pushed below.
        margin_out: ``m_out``, the energy outliers are pushed above.
    """

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        weight_ce: float = 1.0,
        weight_energy: float = 0.1,
        margin_in: float = -25.0,
        margin_out: float = -7.0,
    ) -> None:
        super().__init__(n_classes, n_embedding, weight_ce)
        check_non_negative(weight_energy=weight_energy)
        self.weight_energy = float(weight_energy)
        self.margin_in = float(margin_in)
        self.margin_out = float(margin_out)

    @property
    def uses_outliers(self) -> bool:
        return self.weight_energy > 0

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        terms = super().loss(out, y)
        energies = energy(out["logits"])
        terms["energy"] = self.weight_energy * energy_hinge(energies, y, self.margin_in, self.margin_out)
        return terms
