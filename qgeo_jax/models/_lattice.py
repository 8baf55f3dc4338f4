"""Built-in lattice models: Haldane, Qi–Wu–Zhang and a spinful Rashba square lattice."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ._base import PAULI, SIGMA0, AbstractModel, as_param, complex_dtype

_SQ3 = float(np.sqrt(3.0))
# Honeycomb with nearest-neighbour distance 1: a1 = (√3, 0), a2 = (√3/2, 3/2); A at 0, B at δ1.
_HONEY_A = np.array([[_SQ3, 0.0], [_SQ3 / 2, 1.5]])
_HONEY_TAU = np.array([[0.0, 0.0], [_SQ3 / 2, 0.5]])
_HONEY_NN = np.array([[_SQ3 / 2, 0.5], [-_SQ3 / 2, 0.5], [0.0, -1.0]])  # A → B
# Next-nearest-neighbour vectors b1 = a1, b2 = a2 − a1, b3 = −a2 (one orientation, Σ b = 0).
_HONEY_NNN = np.array([[_SQ3, 0.0], [-_SQ3 / 2, 1.5], [-_SQ3 / 2, -1.5]])


class Haldane(AbstractModel):
    r"""Haldane's honeycomb model (F. D. M. Haldane, PRL 61, 2015 (1988)).

    .. math::
        H_{AB} = t_1 \sum_{δ} e^{i k·δ},\quad
        H_{AA} = Δ + 2t_2 \sum_{i} \cos(k·b_i + φ),\quad
        H_{BB} = −Δ + 2t_2 \sum_{i} \cos(k·b_i − φ)

    Nearest-neighbour distance 1, a1 = (√3, 0), a2 = (√3/2, 3/2), τ_A = 0, τ_B = (√3/2, 1/2);
    b_i = a1, a2 − a1, −a2. Positions are inside the Bloch phases (package convention).
    Chern insulator for |Δ| < 3√3 |t2 sin φ|.
    """

    t1: Float[Array, ""]
    t2: Float[Array, ""]
    phi: Float[Array, ""]
    delta: Float[Array, ""]

    def __init__(self, t1=-1.0, t2=0.15, phi=np.pi / 2, delta=0.2):
        self.t1 = as_param(t1)
        self.t2 = as_param(t2)
        self.phi = as_param(phi)
        self.delta = as_param(delta)

    @property
    def dim(self) -> int:
        return 2

    @property
    def lattice(self) -> Float[Array, "2 2"]:
        return jnp.asarray(_HONEY_A)

    def positions(self) -> Float[Array, "2 2"]:
        return jnp.asarray(_HONEY_TAU)

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        hab = self.t1 * jnp.sum(jnp.exp(1j * (_HONEY_NN @ k)))
        kb = _HONEY_NNN @ k
        haa = self.delta + 2 * self.t2 * jnp.sum(jnp.cos(kb + self.phi))
        hbb = -self.delta + 2 * self.t2 * jnp.sum(jnp.cos(kb - self.phi))
        cplx = complex_dtype(self.t1, self.t2, self.phi, self.delta)
        return jnp.array([[haa, hab], [jnp.conj(hab), hbb]], dtype=cplx)


class QiWuZhang(AbstractModel):
    r"""Qi–Wu–Zhang two-band Chern insulator (X.-L. Qi, Y.-S. Wu, S.-C. Zhang, PRB 74, 085308 (2006)).

    .. math:: H = t(\sin k_x σ_x + \sin k_y σ_y) + (u + t\cos k_x + t\cos k_y) σ_z

    Square lattice, a = 1, both orbitals at the origin. |C| = 1 for 0 < |u/t| < 2, C = 0 for
    |u/t| > 2, and C changes sign with u.
    """

    u: Float[Array, ""]
    t: Float[Array, ""]

    def __init__(self, u=1.0, t=1.0):
        self.u = as_param(u)
        self.t = as_param(t)

    @property
    def dim(self) -> int:
        return 2

    @property
    def lattice(self) -> Float[Array, "2 2"]:
        return jnp.eye(2)

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        s, c = jnp.sin(k), jnp.cos(k)
        pauli = jnp.asarray(PAULI, dtype=complex_dtype(self.u, self.t))
        return self.t * (s[0] * pauli[0] + s[1] * pauli[1]) + (self.u + self.t * (c[0] + c[1])) * pauli[2]


class RashbaLattice(AbstractModel):
    r"""Spinful square lattice with Rashba coupling and an exchange field.

    .. math::
        H = [−2t(\cos k_x + \cos k_y) + ε_0] σ_0 + α(\sin k_x σ_y − \sin k_y σ_x)
            + \mathbf{J}\cdot\boldsymbol{σ}

    The lattice regularisation of :class:`~qgeo_jax.models.Rashba` (a = 1): near k = 0 it is the
    Rashba gas with 1/(2m*) = t. Spin operators S = σ/2 (units of ħ).
    """

    t: Float[Array, ""]
    alpha: Float[Array, ""]
    exchange: Float[Array, "3"]
    onsite: Float[Array, ""]

    def __init__(self, t=1.0, alpha=0.5, exchange=(0.0, 0.0, 0.0), onsite=0.0):
        self.t = as_param(t)
        self.alpha = as_param(alpha)
        self.exchange = as_param(exchange)
        self.onsite = as_param(onsite)

    @property
    def dim(self) -> int:
        return 2

    @property
    def lattice(self) -> Float[Array, "2 2"]:
        return jnp.eye(2)

    def spin_operators(self) -> Complex[Array, "3 2 2"]:
        return jnp.asarray(PAULI / 2, dtype=complex_dtype(self.t, self.alpha, self.exchange, self.onsite))

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        s, c = jnp.sin(k), jnp.cos(k)
        cplx = complex_dtype(self.t, self.alpha, self.exchange, self.onsite)
        pauli, sigma0 = jnp.asarray(PAULI, dtype=cplx), jnp.asarray(SIGMA0, dtype=cplx)
        return (
            (self.onsite - 2 * self.t * (c[0] + c[1])) * sigma0
            + self.alpha * (s[0] * pauli[1] - s[1] * pauli[0])
            + jnp.einsum("a,aij->ij", self.exchange, pauli)
        )
