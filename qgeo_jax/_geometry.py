r"""Band-resolved geometry kernels at one k (pure functions of a :class:`Spectrum`).

Units: ħ = e = 1. With v^a_{nm} = ⟨n|∂_a H|m⟩ and masked denominators (|E_n − E_m| < degen_tol
dropped; see :func:`qgeo_jax._linalg.denominators`):

* quantum geometric tensor  Q_n^{ij} = Σ_{m≠n} v^i_{nm} v^j_{mn} / (E_n − E_m)²  = g_n^{ij} − (i/2) Ω_n^{ij}
* quantum metric            g_n^{ij} = Re Q_n^{ij}                         (seed eq. 10)
* Berry curvature           Ω_n^{ij} = −2 Im Σ_{m≠n} v^i_{nm} v^j_{mn} / (E_n − E_m)²   (seed eq. 4)
* orbital moment            m_n^{ij} = −(e/ħ) Im Σ_{m≠n} v^i_{nm} v^j_{mn} / (E_n − E_m)  (seed eqs. 3-4)
* spin expectation          ⟨S⟩_n = ⟨n|S|n⟩ (units of ħ)

Vectors follow X^k = ½ ε_{ijk} X^{ij} (so Ω^z = Ω^{xy}); this is the normalisation for which the
seed's massive-Dirac results Ω_+^z = −m v²/(2d³) and m_+^z = e d Ω_+^z/ħ hold (tested).
References: Xiao, Chang, Niu, RMP 82, 1959 (2010), doi:10.1103/RevModPhys.82.1959;
Provost & Vallee, Commun. Math. Phys. 76, 289 (1980).

Inside an exactly degenerate set only the sum over the set is gauge invariant; with
``average_degenerate=True`` (default) band-resolved outputs are averaged over each degenerate set,
which makes them gauge invariant without changing any sum over bands with equal occupation.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ._linalg import denominators
from ._spectrum import DEFAULT_DEGEN_TOL, Spectrum, spectrum
from .models._base import AbstractModel


def tensor_to_vector(x: Float[Array, "... 3 3"]) -> Float[Array, "... 3"]:
    """X^k = ½ ε_{ijk} X^{ij}: (X^{yz} − X^{zy}, X^{zx} − X^{xz}, X^{xy} − X^{yx}) / 2."""
    return 0.5 * jnp.stack(
        [x[..., 1, 2] - x[..., 2, 1], x[..., 2, 0] - x[..., 0, 2], x[..., 0, 1] - x[..., 1, 0]], axis=-1
    )


def _pair_products(a: Complex[Array, "3 n n"], b: Complex[Array, "3 n n"]) -> Complex[Array, "3 3 n n"]:
    """P[i, j, n, m] = a^i_{nm} b^j_{mn}."""
    return a[:, None, :, :] * jnp.swapaxes(b, -1, -2)[None, :, :, :]


def degenerate_average(x: Array, degenerate: Array) -> Array:
    """Average a band-resolved array (n, ...) over each exactly degenerate set."""
    d = degenerate.astype(x.real.dtype)
    return jnp.tensordot(d, x, axes=(1, 0)) / jnp.sum(d, axis=1).reshape((-1,) + (1,) * (x.ndim - 1))


def quantum_geometric_tensor(spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL) -> Complex[Array, "n 3 3"]:
    """Q_n^{ij} = Σ_{m≠n} ⟨n|∂_iH|m⟩⟨m|∂_jH|n⟩/(E_n − E_m)² = g_n^{ij} − (i/2)Ω_n^{ij}."""
    _, inv2, _ = denominators(spec.energies, degen_tol)
    return jnp.einsum("ijnm,nm->nij", _pair_products(spec.velocity, spec.velocity), inv2)


def berry_curvature_tensor(spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL) -> Float[Array, "n 3 3"]:
    """Ω_n^{ij} = −2 Im Σ_{m≠n} ⟨n|∂_iH|m⟩⟨m|∂_jH|n⟩/(E_n − E_m)² (seed eq. 4), length²."""
    return -2.0 * jnp.imag(quantum_geometric_tensor(spec, degen_tol=degen_tol))


def quantum_metric(spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL) -> Float[Array, "n 3 3"]:
    """g_n^{ij} = Re Σ_{m≠n} A^i_{nm} A^j_{mn} (seed eq. 10), length²."""
    return jnp.real(quantum_geometric_tensor(spec, degen_tol=degen_tol))


def orbital_moment_tensor(spec: Spectrum, *, degen_tol: float = DEFAULT_DEGEN_TOL) -> Float[Array, "n 3 3"]:
    """m_n^{ij} = −(e/ħ) Im Σ_{m≠n} ⟨n|∂_iH|m⟩⟨m|∂_jH|n⟩/(E_n − E_m) (seed eq. 4), e·energy·length²/ħ."""
    inv1, _, _ = denominators(spec.energies, degen_tol)
    return -jnp.einsum("ijnm,nm->nij", jnp.imag(_pair_products(spec.velocity, spec.velocity)), inv1)


def spin_expectation(spec: Spectrum) -> Float[Array, "n 3"]:
    """⟨n|S|n⟩ in units of ħ. Raises if the model has no spin operators."""
    if spec.spin is None:
        raise ValueError(
            "this quantity needs spin operators, but the model has none: build it with spin "
            "operators (e.g. `spin=` for TightBinding/from_function) or use a spinful model."
        )
    return jnp.real(jnp.diagonal(spec.spin, axis1=-2, axis2=-1)).T


def band_velocity(spec: Spectrum) -> Float[Array, "n 3"]:
    """Group velocity v_n = ∂_k E_n (ħ = 1) = ⟨n|∂_k H|n⟩ (Hellmann–Feynman)."""
    return jnp.real(jnp.diagonal(spec.velocity, axis1=-2, axis2=-1)).T


class BandGeometry(eqx.Module):
    """Band-resolved geometry at one k (see module docstring for formulas and units).

    Vector attributes have shape (n, 3), tensors (n, 3, 3); n is the band index.
    """

    energies: Float[Array, " n"]
    velocity: Float[Array, "n 3"]
    berry_curvature: Float[Array, "n 3"]
    berry_curvature_tensor: Float[Array, "n 3 3"]
    quantum_metric: Float[Array, "n 3 3"]
    quantum_geometric_tensor: Complex[Array, "n 3 3"]
    orbital_moment: Float[Array, "n 3"]
    orbital_moment_tensor: Float[Array, "n 3 3"]
    spin: Float[Array, "n 3"] | None


@eqx.filter_jit
def band_geometry(
    model: AbstractModel,
    k: Float[Array, " dim"],
    *,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    average_degenerate: bool = True,
) -> BandGeometry:
    """All band-resolved geometric quantities of ``model`` at one Cartesian k.

    Compose with ``jax.vmap`` over k (and ``jax.jit``) to map them over the Brillouin zone.
    """
    spec = spectrum(model, k, degen_tol=degen_tol)
    inv1, inv2, degenerate = denominators(spec.energies, degen_tol)
    prod = _pair_products(spec.velocity, spec.velocity)
    qgt = jnp.einsum("ijnm,nm->nij", prod, inv2)
    morb = -jnp.einsum("ijnm,nm->nij", jnp.imag(prod), inv1)
    vel = band_velocity(spec)
    spin = None if spec.spin is None else spin_expectation(spec)
    if average_degenerate:
        avg = lambda x: degenerate_average(x, degenerate)
        qgt, morb, vel = avg(qgt), avg(morb), avg(vel)
        spin = None if spin is None else avg(spin)
    omega = -2.0 * jnp.imag(qgt)
    return BandGeometry(
        energies=spec.energies,
        velocity=vel,
        berry_curvature=tensor_to_vector(omega),
        berry_curvature_tensor=omega,
        quantum_metric=jnp.real(qgt),
        quantum_geometric_tensor=qgt,
        orbital_moment=tensor_to_vector(morb),
        orbital_moment_tensor=morb,
        spin=spin,
    )
