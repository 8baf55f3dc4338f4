r"""Equilibrium responses: spin and orbital magnetization, anomalous Hall conductivity, Kubo Chern.

All results are in model units (ħ = e = 1, k_B = 1) per unit volume of the model's dimension
(per area in 2D); :mod:`qgeo_jax.units` converts them. ``mu`` and ``temperature`` broadcast against
each other; the output has their broadcast shape followed by a vector axis of length 3
(x, y, z; for 2D models only z can be non-zero for orbital quantities). Every function is one
jit-compiled, differentiable pass over the mesh (see :func:`qgeo_jax.integrate`).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._bz import DEFAULT_CHUNK, AbstractMesh, MonkhorstPackMesh, integrate
from ._config import require_x64
from ._linalg import denominators, eigh
from ._occupation import check_temperature, fermi_dirac, fermi_weights
from ._spectrum import DEFAULT_DEGEN_TOL, eigen_velocity
from ._validate import check_mesh, check_model, check_mu_temperature
from .models._base import AbstractModel

_CYC_I = np.array([1, 2, 0])  # numpy: importing must not start JAX (jax.distributed)
_CYC_J = np.array([2, 0, 1])


def curl_products(va, vb):
    """Im(a^i_{nm} b^j_{mn}) for (i, j) = (y, z), (z, x), (x, y): shape (3, n, n).

    For a = b = v this is antisymmetric in (i, j) term by term, so these three components carry
    the whole vector X^k = ½ ε_{ijk} X^{ij} of Ω and m.
    """
    return jnp.imag(va[_CYC_I] * jnp.swapaxes(vb[_CYC_J], -1, -2))


def _curl_components(v):
    """Im(v^i_{nm} v^j_{mn}) for the vector components a model of dimension dim = len(v) can have.

    Returns (products (c, n, n), index of the Cartesian component each one fills). 2D models only
    have the z component (x, y) → one product instead of three.
    """
    dim = v.shape[0]
    if dim == 3:
        return curl_products(v, v), (0, 1, 2)
    if dim == 2:
        return jnp.imag(v[0] * v[1].T)[None], (2,)
    return jnp.zeros((0,) + v.shape[1:]), ()


def _to_vector(x, comps):
    """Place per-component values (..., c) into a Cartesian (..., 3) vector."""
    out = jnp.zeros(x.shape[:-1] + (3,), x.dtype)
    return out.at[..., jnp.asarray(comps, dtype=jnp.int32)].set(x) if comps else out


def berry_and_moment(energies, velocity, degen_tol):
    """Berry curvature Ω_n and orbital moment m_n vectors, each (n, 3), from lean velocities."""
    inv1, inv2, _ = denominators(energies, degen_tol)
    im, comps = _curl_components(velocity)
    omega = -2.0 * jnp.einsum("cnm,nm->nc", im, inv2)
    morb = -jnp.einsum("cnm,nm->nc", im, inv1)
    return _to_vector(omega, comps), _to_vector(morb, comps)


def as_mu_temperature(mu, temperature, *, fermi_surface: bool = False):
    """Broadcast μ and T to one shape (float64); validate both (clear errors: see _validate)."""
    mu, temperature = check_mu_temperature(mu, temperature, fermi_surface=fermi_surface)
    return mu, check_temperature(temperature, fermi_surface=fermi_surface)


def _check_mesh(model: AbstractModel, mesh: AbstractMesh):
    """Validate model and mesh (_validate); return the model (with run-time checks if traced)."""
    require_x64()
    model = check_model(model)
    check_mesh(model, mesh)
    return model


def _occ(energies, mu, temperature, fn=fermi_dirac):
    return fn(energies, mu[..., None], temperature[..., None])


@eqx.filter_jit
def _orbital_magnetization(model, mesh, mu, temperature, degen_tol, chunk_size):
    def per_k(k):
        energies, _, v = eigen_velocity(model, k, degen_tol=degen_tol)
        omega, morb = berry_and_moment(energies, v, degen_tol)
        f, gpw = fermi_weights(energies, mu[..., None], temperature[..., None])
        return jnp.einsum("...n,nc->...c", f, morb) + jnp.einsum("...n,nc->...c", gpw, omega)

    return integrate(per_k, mesh, chunk_size=chunk_size)


def orbital_magnetization(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3"]:
    r"""Orbital magnetization by the modern theory (seed eq. 5):

    .. math:: \mathbf M^O = \int\!\frac{d^dk}{(2\pi)^d} \sum_n \Big[\mathbf m_n f_0
              - \frac{e}{\hbar\beta}\,\boldsymbol\Omega_n \ln(1 - f_0)\Big]

    valid for insulators and metals (Xiao, Shi, Niu, PRL 95, 137204 (2005),
    doi:10.1103/PhysRevLett.95.137204; Thonhauser et al., PRL 95, 137205 (2005); Ceresoli et al.,
    PRB 74, 024408 (2006)). At T = 0 the second term is Σ Ω_n (μ − E_n) θ(μ − E_n). Units:
    e·energy·length²/ħ per length^dim (``units.orbital_magnetization`` converts). In a gap,
    dM^O/dμ = C e/h (Středa), with C the Chern number of :func:`chern_number`.
    """
    model = _check_mesh(model, mesh)
    mu, temperature = as_mu_temperature(mu, temperature)
    return _orbital_magnetization(model, mesh, mu, temperature, degen_tol, chunk_size)


@eqx.filter_jit
def _spin_magnetization(model, mesh, mu, temperature, g_factor, chunk_size):
    def per_k(k):
        h = model.hamiltonian(k)
        energies, u = eigh(h)
        s = model.spin_operators()
        spin = jnp.real(jnp.einsum("in,cij,jn->nc", jnp.conj(u), s, u))
        return jnp.einsum("...n,nc->...c", _occ(energies, mu, temperature), spin)

    return -g_factor * integrate(per_k, mesh, chunk_size=chunk_size)


def spin_magnetization(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    g_factor: float = 2.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3"]:
    r"""Spin magnetization (seed eq. 1 with S = ħσ/2 and an explicit g-factor):

    .. math:: \mathbf M^S = -\frac{g\mu_B}{\hbar}\int\!\frac{d^dk}{(2\pi)^d}\sum_n \langle n|\mathbf S|n\rangle f_0

    Units: μ_B per length^dim. The seed's −(μ_B/ħ)⟨S⟩ equals this with g = 2 and S = ħσ/2.
    """
    model = _check_mesh(model, mesh)
    if model.spin_operators() is None:
        raise ValueError(
            f"spin_magnetization needs spin operators, but {type(model).__name__} has none "
            "(give `spin=` to TightBinding/from_function, or use a spinful model)."
        )
    mu, temperature = as_mu_temperature(mu, temperature)
    return _spin_magnetization(model, mesh, mu, temperature, jnp.asarray(g_factor, dtype=jnp.float64), chunk_size)


@eqx.filter_jit
def _berry_sum(model, mesh, mu, temperature, degen_tol, chunk_size):
    def per_k(k):
        energies, _, v = eigen_velocity(model, k, degen_tol=degen_tol)
        _, inv2, _ = denominators(energies, degen_tol)
        im, comps = _curl_components(v)
        omega = _to_vector(-2.0 * jnp.einsum("cnm,nm->nc", im, inv2), comps)
        return jnp.einsum("...n,nc->...c", _occ(energies, mu, temperature), omega)

    return integrate(per_k, mesh, chunk_size=chunk_size)


def anomalous_hall_conductivity(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    mu,
    temperature=0.0,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, "... 3"]:
    r"""Intrinsic anomalous Hall conductivity as a vector (σ_yz, σ_zx, σ_xy):

    .. math:: σ^{ij} = -\frac{e^2}{\hbar}\int\!\frac{d^dk}{(2\pi)^d}\sum_n Ω_n^{ij} f_0

    (Xiao, Chang, Niu, RMP 82, 1959 (2010), eq. 3.11, electron charge −e). Units e²/ħ per
    length^(dim−2); in a 2D gap σ_xy = −C e²/h, i.e. −C/(2π) in these units.
    """
    model = _check_mesh(model, mesh)
    mu, temperature = as_mu_temperature(mu, temperature)
    return -_berry_sum(model, mesh, mu, temperature, degen_tol, chunk_size)


@eqx.filter_jit
def _kubo_chern(model, mesh, band_mask, degen_tol, chunk_size):
    def per_k(k):
        energies, _, v = eigen_velocity(model, k, degen_tol=degen_tol)
        _, inv2, _ = denominators(energies, degen_tol)
        im = jnp.imag(v[0] * v[1].T)
        return -2.0 * jnp.sum(band_mask * jnp.sum(im * inv2, axis=1))

    # ∫ d²k = (2π)² Σ w, so C = (1/2π) ∫ d²k Ω = 2π Σ w Ω.
    return 2 * jnp.pi * integrate(per_k, mesh, chunk_size=chunk_size)


def chern_number_kubo(
    model: AbstractModel,
    mesh: MonkhorstPackMesh,
    bands,
    *,
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, ""]:
    r"""C = (1/2π) Σ_{n∈bands} ∫_BZ d²k Ω_n^{xy} by the Kubo (sum-over-states) formula. Not rounded."""
    model = _check_mesh(model, mesh)
    if model.dim != 2:
        raise ValueError(f"the Chern number is defined here for 2D models; {type(model).__name__} is {model.dim}D.")
    mask = _band_mask(model, bands)
    return _kubo_chern(model, mesh, mask, degen_tol, chunk_size)


def _band_mask(model, bands):
    n = model.norb
    # NumPy, not jnp: under an outer jit (sweeps, design steps) jnp arrays built from Python ints
    # are tracers, and int() / np.asarray() on them fail.
    idx = [int(b) for b in np.atleast_1d(np.asarray(bands))]
    if not idx or any(not 0 <= b < n for b in idx):
        raise ValueError(f"bands={bands!r} must be a non-empty list of band indices in [0, {n}).")
    mask = np.zeros(n)
    mask[idx] = 1.0
    return mask
