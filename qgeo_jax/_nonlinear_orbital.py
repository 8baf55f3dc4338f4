r"""Intrinsic (τ⁰) second-order orbital magnetization of insulators: δM^i = χ^{ijk} E_j E_k.

The orbital counterpart of the τ⁰ spin term of :mod:`qgeo_jax._nonlinear_kinetic`, for band
insulators at T = 0 (μ in a gap at every k). Derived here; conventions as in the rest of the
package (ħ = e = 1, electron charge −e, the field as the potential energy +e E·r).

Maxwell relation
----------------
In an insulator at T = 0 the field-dressed ground state is an equilibrium state, so the
magnetization is a derivative of the grand potential F(E, B) at fixed μ: M_i = −∂F/∂B_i. To
second order in E, F = F_0(B) − ½ α_{jk}(B) E_j E_k with α the static (clamped-ion) electronic
polarizability per volume, hence

.. math:: χ^{ijk} = \tfrac12\,\frac{∂α_{jk}}{∂B_i}\Big|_{B=0},\qquad
          α_{jk} = 2\,\mathrm{Re}\,\mathrm{Tr}\big[P r_j Q\,\mathcal L^{-1}(Q r_k P)\big]/V,

with P (Q = 1 − P) the projector on the occupied states and 𝓛(Y) = [H, Y] on the Q·P block
(α = −Σ_occ∫G with G the Berry-connection polarizability; the same Maxwell relation
∂M/∂E = ∂P/∂B underlies the linear orbital magnetoelectric effect: A. M. Essin, A. M. Turner,
J. E. Moore, D. Vanderbilt, PRB 81, 205104 (2010), doi:10.1103/PhysRevB.81.205104).

Magnetic field to first order (magnetic Weyl calculus)
------------------------------------------------------
With the positions-convention Bloch phases, a lattice model in a uniform B (Peierls phases along
straight bonds) is the Weyl quantization of H(k) in the kinetic momentum π, whose components do
not commute: [π_a, π_b] = −i e ε_{abc} B_c (electron charge −e). Every operator of the problem
(H, P, Q, P r Q = −i P∂P Q, 𝓛^{-1}) commutes with the magnetic translations, so it is a k-space
symbol and, to first order in B, products become the magnetic Moyal product

.. math:: A ⋆ B = AB + \tfrac{i}{2}θ_i\,\{A, B\}_i,\qquad
          \{A, B\}_i = ε_{icd}\,∂_c A\,∂_d B,\qquad θ_i = −e B_i,

while the trace per volume stays ∫d^dk/(2π)^d tr (the bracket term of Tr[A⋆B] is a total
derivative on the periodic zone) and [r_a, A] = i∂_a A. Solving P_B⋆P_B = P_B,
[H, P_B]_⋆ = 0 and the ⋆-Sylvester equation for Y = 𝓛^{-1}(Q r_k P) order by order in θ gives
closed k-local expressions; every energy denominator is across the gap, so degenerate occupied
(or empty) bands need no special care. The first-order projector P^θ also gives
−∂F/∂B = M^O of the modern theory (tested to round-off against :func:`orbital_magnetization`),
which fixes the sign and normalisation of θ, and α(B = 0) = −Σ_occ∫G (tested).

Verification (``tests/test_nonlinear_orbital.py``):

* open flakes with +eE·r (second-order density-matrix perturbation theory of the flake's ground
  state, moment −(e/2)⟨r × v⟩ per area, extrapolated in 1/L; no Bloch states, no B field): a
  trivial Haldane insulator agrees to 1.2e-5 (L = 12–20) and 1.5e-7 (L = 16–24);
* magnetic supercells (Peierls phases of a real field at flux 2π/q per cell, q up to 120; α(B)
  from band quantities, fitted in B; no Moyal product): a Chern insulator (C = −1, where flakes
  have metallic edges) agrees to 4e-5;
* the magnetic projector gives M^O (1e-10), α(0) = −Σ_occ∫G, rotation covariance in 3D,
  exactly degenerate copies, time reversal (χ = 0), gradients vs finite differences.

Scope: insulators only (the number of occupied bands must be the same at every k; checked) at
T = 0, on a Monkhorst–Pack mesh of the periodic zone. In metals the τ⁰ orbital term needs the
field-dressed Fermi-surface terms of a semiclassical theory, which are not derived here.

Units: χ in (e·E·L²/ħ per L^d) per (E/(e·L))², as the other orbital parts
(d = model dimension, E energy unit, L length unit).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._bz import AbstractMesh, MonkhorstPackMesh, integrate
from ._linalg import eigh
from ._nonlinear_hall import _pad as _pad_axes
from ._spectrum import DEFAULT_DEGEN_TOL, hamiltonian_and_gradient
from ._validate import error_if
from .models._base import AbstractModel

_PAIRS = ((1, 2), (2, 0), (0, 1))  # (c, d) with ε_{icd} = +1 for i = x, y, z
_SMALL = 8  # up to this size, products are broadcast-reduces: XLA-CPU's tiny dots are slow


def _mm(*mats):
    """The matrix product of ``mats`` (left to right), over their last two axes."""
    out = mats[0]
    for b in mats[1:]:
        if out.shape[-1] <= _SMALL:
            out = jnp.sum(out[..., :, :, None] * b[..., None, :, :], axis=-2)
        else:
            out = out @ b
    return out


def _bracket(da, db, i):
    """{A, B}_i = ε_{icd} ∂_c A ∂_d B; derivative axes last (length 3)."""
    c, d = _PAIRS[i]
    return _mm(da[..., c], db[..., d]) - _mm(da[..., d], db[..., c])


def _dprod(da, b, a, db):
    """∂(AB) from ∂A, B, A, ∂B (derivative axes last)."""
    move = lambda x: jnp.moveaxis(x, -1, 0)
    return jnp.moveaxis(_mm(move(da), b) + _mm(a, move(db)), 0, -1)


def _pad(x, dim):
    """Zero-pad the last (derivative) axis from ``dim`` to 3 entries."""
    return _pad_axes(x, (x.ndim - 1,), dim)


def _components(dim):
    """Magnetization components that can be non-zero: z alone in 2D, all three in 3D."""
    return {1: (), 2: (2,), 3: (0, 1, 2)}[dim]


def _solve_across(u, energies, occ, rhs, block):
    """Y = U [Ũ†·rhs·U ∘ 1/(E_l − E_m)] U† on the cross-gap pairs selected by ``block``.

    ``block`` = "qp" keeps (empty, occupied) pairs only, "cross" both off-diagonal blocks.
    """
    empty = ~occ
    mask = empty[:, None] & occ[None, :]
    if block == "cross":
        mask = mask | (occ[:, None] & empty[None, :])
    diff = energies[:, None] - energies[None, :]
    inv = jnp.where(mask, 1.0 / jnp.where(mask, diff, 1.0), 0.0)
    uh = jnp.conj(u.T)
    return _mm(u, _mm(uh, rhs, u) * inv, uh)


def _value_and_aux(out):
    """(P, aux) → (P, (P, aux)): jacfwd with has_aux then returns ∂P and the primal P too."""
    return out[0], out


def _projector(model, k, mu, degen_tol):
    """Occupied projector P at k; aux (E, U, occ, H, ∂H) from the same H(k) evaluation."""
    h, dh = hamiltonian_and_gradient(model, k, pad=False)
    energies, u = eigh(h, degen_tol)
    occ = energies < mu
    p = _mm(u * occ.astype(u.dtype), jnp.conj(u.T))
    return p, (energies, u, occ, h, dh)


def _first_order(model, k, mu, degen_tol):
    """Zeroth order in θ and the ingredients whose k-derivatives the ⋆ products need.

    Returns ``(P, P^θ (ncomp, N, N), Y⁰ (dim, N, N), ∂P (N, N, 3))`` and aux ``(H, ∂H, E, U, occ)``.
    P^θ_i: the first-order (in θ_i) correction of the occupied projector; Y⁰_k = 𝓛^{-1}(Q r_k P).
    """
    dim = model.dim
    dp, (p, (energies, u, occ, h, dh)) = jax.jacfwd(
        lambda q: _value_and_aux(_projector(model, q, mu, degen_tol)), has_aux=True
    )(k)
    dp = _pad(dp, dim)
    dh = _pad(jnp.moveaxis(dh, 0, -1), dim)
    q = jnp.eye(p.shape[0], dtype=p.dtype) - p
    p_theta = []
    for i in _components(dim):
        br = _bracket(dp, dp, i)
        diag = -0.5j * _mm(p, br, p) + 0.5j * _mm(q, br, q)  # idempotency: P P^θ P, Q P^θ Q
        rhs = -0.5j * (_bracket(dh, dp, i) - _bracket(dp, dh, i))  # [H, P^θ] = rhs
        p_theta.append(diag + _solve_across(u, energies, occ, rhs, "cross"))
    p_theta = jnp.stack(p_theta) if p_theta else jnp.zeros((0,) + p.shape, p.dtype)
    y0 = jnp.stack(
        [_solve_across(u, energies, occ, 1j * _mm(q, dp[..., j], p), "qp") for j in range(dim)]
    )
    return (p, p_theta, y0, dp), (h, dh, energies, u, occ)


def grand_potential_slope(model: AbstractModel, k, mu, *, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""∂/∂θ_i of the k-resolved zero-temperature grand potential, Re tr[(H − μ) P^θ_i], (3,).

    Summed over the zone it is −∂F/∂B_i = M^O_i of the modern theory (θ = −e B): the check of
    the first-order magnetic projector (sign and normalisation of θ) used by the tests.
    """
    k = jnp.asarray(k, dtype=jnp.float64)
    (_, p_theta, _, _), (h, _, _, _, _) = _first_order(model, k, mu, degen_tol)
    h = h - mu * jnp.eye(h.shape[0], dtype=h.dtype)
    slope = jnp.real(jnp.einsum("ab,iba->i", h, p_theta))
    return jnp.zeros(3).at[jnp.asarray(_components(model.dim), dtype=int)].set(slope)


def intrinsic_orbital_density(model: AbstractModel, k, mu, *, degen_tol: float = DEFAULT_DEGEN_TOL):
    r"""k-resolved (α_{jk}, ∂α_{jk}/∂θ_i) of an insulator with the states below ``mu`` filled.

    Returns ``(alpha (3, 3), dalpha (3, 3, 3) indexed [i, j, k], n_occ)``; summed over the zone
    (∫d^dk/(2π)^d) they give the polarizability α and its first-order change with θ_i = −e B_i,
    so that χ^{ijk} = −½ ∂α_{jk}/∂θ_i. Entries beyond the model's dimension are zero.
    """
    dim = model.dim
    k = jnp.asarray(k, dtype=jnp.float64)
    d, ((p, p_theta, y0, dp), (_, dh, energies, u, occ)) = jax.jacfwd(
        lambda q: _value_and_aux(_first_order(model, q, mu, degen_tol)), has_aux=True
    )(k)
    _, dp_theta, dy0, ddp = jax.tree_util.tree_map(lambda x: _pad(x, dim), d)
    q = jnp.eye(p.shape[0], dtype=p.dtype) - p
    dq = -dp
    x0 = jnp.stack([-1j * _mm(p, dp[..., j], q) for j in range(dim)])  # P r_j Q
    alpha = 2.0 * jnp.real(jnp.einsum("jab,kba->jk", x0, y0))
    dalpha = []
    for n, i in enumerate(_components(dim)):
        pt, dpt = p_theta[n], dp_theta[n]
        x1, y1 = [], []
        for j in range(dim):
            dpj, d_dpj = dp[..., j], ddp[..., j, :]
            # θ-part of P⋆∂_jP⋆Q (times −i) and of Q⋆∂_jP⋆P (times i), P_B = P + θP^θ
            x1.append(
                -1j
                * (
                    _mm(pt, dpj, q)
                    + _mm(p, dpt[..., j], q)
                    - _mm(p, dpj, pt)
                    + 0.5j
                    * (_mm(_bracket(dp, d_dpj, i), q) + _bracket(_dprod(dp, dpj, p, d_dpj), dq, i))
                )
            )
            z1 = 1j * (
                -_mm(pt, dpj, p)
                + _mm(q, dpt[..., j], p)
                + _mm(q, dpj, pt)
                + 0.5j
                * (_mm(_bracket(dq, d_dpj, i), p) + _bracket(_dprod(dq, dpj, q, d_dpj), dp, i))
            )
            yj, dyj = y0[j], dy0[j]
            # Y = Q_B⋆Y⋆P_B fixes the P·P, Q·Q and P·Q blocks of Y^θ; the ⋆-Sylvester equation
            # [H, Y]_⋆ = Q r_j P its Q·P block.
            fixed = (
                -_mm(pt, yj, p)
                + _mm(q, yj, pt)
                + 0.5j * (_mm(_bracket(dq, dyj, i), p) + _bracket(dyj, dp, i))
            )
            fixed = fixed - _mm(q, fixed, p)
            rhs = z1 - 0.5j * (_bracket(dh, dyj, i) - _bracket(dyj, dh, i))
            y1.append(fixed + _solve_across(u, energies, occ, rhs, "qp"))
        x1, y1 = jnp.stack(x1), jnp.stack(y1)
        da = jnp.einsum("jab,kba->jk", x1, y0) + jnp.einsum("jab,kba->jk", x0, y1)
        dalpha.append((i, 2.0 * jnp.real(da)))
    full = jnp.zeros((3, 3, 3))
    for i, da in dalpha:
        full = full.at[i, :dim, :dim].set(da)
    alpha_full = jnp.zeros((3, 3)).at[:dim, :dim].set(alpha)
    return alpha_full, full, jnp.sum(occ).astype(jnp.float64)


def chi_integrand(model: AbstractModel, k, mu, degen_tol):
    """Per-k χ^{ijk} (symmetrised in j, k) for every μ of a flat array: (nμ, 3, 3, 3), n_occ."""

    def one(m):
        _, dalpha, n_occ = intrinsic_orbital_density(model, k, m, degen_tol=degen_tol)
        chi = -0.5 * dalpha
        return 0.5 * (chi + jnp.swapaxes(chi, -1, -2)), n_occ

    return jax.vmap(one)(mu)


@eqx.filter_jit
def _reduce(model, mesh, mu, degen_tol, chunk_size):
    flat = mu.reshape(-1)

    def per_k(k):
        chi, n_occ = chi_integrand(model, k, flat, degen_tol)
        return chi, jnp.ones(()), n_occ, n_occ * n_occ

    chi, w, n1, n2 = integrate(per_k, mesh, chunk_size=chunk_size)
    # insulator check: the number of filled bands must not vary over the zone (variance 0)
    metal = jnp.abs(n2 * w - n1 * n1) > 1e-9 * jnp.maximum(n1 * n1, 1.0)
    return chi.reshape(mu.shape + (3, 3, 3)), metal


def intrinsic_orbital_chi(
    model: AbstractModel, mesh: AbstractMesh, mu, temperature, degen_tol, chunk_size
):
    """χ^{ijk} of the module docstring (validated; μ, T already broadcast float64 arrays)."""
    if not isinstance(mesh, MonkhorstPackMesh):
        raise ValueError(
            "part='orbital', mechanism='intrinsic' needs a Monkhorst–Pack mesh of the whole "
            f"periodic Brillouin zone (qgeo_jax.monkhorst_pack); got {type(mesh).__name__}. Its "
            "k-space formula drops total k-derivatives, which vanish only on the periodic zone."
        )
    mu = error_if(
        mu,
        jnp.any(temperature != 0),
        "part='orbital', mechanism='intrinsic' is the zero-temperature insulator result: pass "
        "temperature=0 with mu inside a band gap.",
    )
    chi, metal = _reduce(model, mesh, mu, degen_tol, chunk_size)
    return error_if(
        chi,
        jnp.any(metal),
        "part='orbital', mechanism='intrinsic' is implemented for insulators only, but a band "
        "crosses mu somewhere on the mesh (the number of filled bands varies with k). Put mu "
        "inside a gap; the metallic τ⁰ orbital term is not implemented.",
    )
