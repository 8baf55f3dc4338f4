"""Continuum (k·p) models: massive Dirac and the 2D Rashba gas with an exchange field."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ._base import PAULI, SIGMA0, AbstractModel, as_param


class MassiveDirac(AbstractModel):
    r"""Two-dimensional massive Dirac model (Shen, *Topological Insulators*, 2017).

    .. math:: H = v(\xi k_x σ_x + k_y σ_y) + m σ_z + (\mathbf{t}\cdot\mathbf{k})\, σ_0

    ``valley`` ξ = ±1; ``tilt`` t = (t_x, t_y) tilts the cone without changing its eigenvectors.
    Closed forms (seed eq. 4 and text below it), d = (v²k² + m²)^{1/2}:
    Ω_±^z = ∓ξ m v²/(2d³), m_±^z = −ξ m v²/(2d²) (both bands), so m_+ = d Ω_+ (e = ħ = 1).
    Continuum model: ``cutoff`` (1/length) bounds the default integration disk.
    """

    v: Float[Array, ""]
    m: Float[Array, ""]
    tilt: Float[Array, "2"]
    valley: int = eqx.field(static=True, default=1)
    cutoff: float = eqx.field(static=True, default=10.0)

    def __init__(self, v=1.0, m=0.1, tilt=(0.0, 0.0), *, valley: int = 1, cutoff: float = 10.0):
        if valley not in (1, -1):
            raise ValueError(f"MassiveDirac: valley must be +1 or -1, got {valley!r}.")
        self.v = as_param(v)
        self.m = as_param(m)
        self.tilt = as_param(tilt)
        self.valley = valley
        self.cutoff = float(cutoff)

    @property
    def dim(self) -> int:
        return 2

    @property
    def k_cutoff(self) -> float:
        return self.cutoff

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        kx, ky = k[0], k[1]
        return (
            self.v * (self.valley * kx * PAULI[0] + ky * PAULI[1])
            + self.m * PAULI[2]
            + (self.tilt[0] * kx + self.tilt[1] * ky) * SIGMA0
        )


class Rashba(AbstractModel):
    r"""2D electron gas with Rashba spin–orbit coupling and an exchange field (spinful, continuum).

    .. math:: H = \frac{k^2}{2 m^*} + α (k_x σ_y − k_y σ_x) + \mathbf{J}\cdot\boldsymbol{σ}

    (Bychkov & Rashba, JETP Lett. 39, 78 (1984); Edelstein, SSC 73, 233 (1990).) Spin operators
    S = σ/2 (units of ħ). ``exchange`` J = (J_x, J_y, J_z) in energy units: J_z opens a gap at
    k = 0 and breaks time reversal. ``cutoff`` bounds the default integration disk.
    """

    mass: Float[Array, ""]
    alpha: Float[Array, ""]
    exchange: Float[Array, "3"]
    cutoff: float = eqx.field(static=True, default=5.0)

    def __init__(self, mass=0.5, alpha=0.5, exchange=(0.0, 0.0, 0.0), *, cutoff: float = 5.0):
        self.mass = as_param(mass)
        self.alpha = as_param(alpha)
        self.exchange = as_param(exchange)
        self.cutoff = float(cutoff)

    @property
    def dim(self) -> int:
        return 2

    @property
    def k_cutoff(self) -> float:
        return self.cutoff

    def spin_operators(self) -> Complex[Array, "3 2 2"]:
        return jnp.asarray(PAULI / 2)

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        kx, ky = k[0], k[1]
        kin = (kx * kx + ky * ky) / (2 * self.mass)
        return (
            kin * SIGMA0
            + self.alpha * (kx * PAULI[1] - ky * PAULI[0])
            + jnp.einsum("a,aij->ij", self.exchange, PAULI)
        )
