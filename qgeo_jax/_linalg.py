"""Degeneracy-safe linear algebra.

* :func:`eigh` — Hermitian eigendecomposition whose derivative (forward and reverse mode) stays
  finite at exact degeneracies. The stock rule contains F_ij = 1/(λ_j − λ_i), which is inf/NaN for
  degenerate pairs; here pairs with |λ_i − λ_j| < ``degen_tol`` are masked. The eigenvalue
  derivative and the derivative of every quantity that depends only on the projector onto a
  degenerate subspace (all gauge-invariant outputs of this package, summed over degenerate sets)
  are exact; the rotation *inside* a degenerate subspace is not defined and is set to zero.
* :func:`safe_reciprocal` — 1/x with a mask, written with the double-``where`` pattern so that the
  untaken branch never produces NaN in a gradient (cf. ``jax_md.util.safe_mask``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float


def safe_reciprocal(x: Array, mask: Array) -> Array:
    """``where(mask, 1/x, 0)`` whose gradient is finite where ``mask`` is False."""
    return jnp.where(mask, 1.0 / jnp.where(mask, x, 1.0), 0.0)


def denominators(energies: Float[Array, " n"], degen_tol: float) -> tuple[Array, Array, Array]:
    """Masked 1/(E_n − E_m) and 1/(E_n − E_m)², and the degeneracy mask |E_n − E_m| < tol.

    Returns ``(inv1, inv2, degenerate)``, each of shape (n, n), indexed [n, m]. Diagonal and
    degenerate pairs have inv1 = inv2 = 0.
    """
    diff = energies[:, None] - energies[None, :]
    degenerate = jnp.abs(diff) < degen_tol
    inv1 = safe_reciprocal(diff, ~degenerate)
    return inv1, inv1 * inv1, degenerate


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def eigh(h: Complex[Array, "n n"], degen_tol: float = 1e-8):
    """Eigenvalues (ascending) and eigenvectors (columns) of a Hermitian matrix.

    Same as ``jnp.linalg.eigh`` in value; its derivative masks degenerate pairs (see module doc).
    """
    w, v = jnp.linalg.eigh(h)
    return w, v


@eigh.defjvp
def _eigh_jvp(degen_tol, primals, tangents):
    (h,) = primals
    (dh,) = tangents
    w, v = eigh(h, degen_tol)
    dh = 0.5 * (dh + jnp.conj(jnp.swapaxes(dh, -1, -2)))
    vh = jnp.conj(jnp.swapaxes(v, -1, -2))
    vdv = vh @ dh @ v
    dw = jnp.real(jnp.diagonal(vdv, axis1=-2, axis2=-1))
    diff = w[..., None, :] - w[..., :, None]  # [i, j] = w_j − w_i
    f = safe_reciprocal(diff, jnp.abs(diff) >= degen_tol)
    dv = v @ (f.astype(vdv.dtype) * vdv)
    return (w, v), (dw, dv)
