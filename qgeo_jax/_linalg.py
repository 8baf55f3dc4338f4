"""Degeneracy-safe linear algebra.

* :func:`eigh` — Hermitian eigendecomposition whose derivative (forward and reverse mode) stays
  finite at exact degeneracies. The stock rule contains F_ij = 1/(λ_j − λ_i), which is inf/NaN for
  degenerate pairs; here pairs with |λ_i − λ_j| < ``degen_tol`` are masked. The eigenvalue
  derivative and the derivative of every quantity that depends only on the projector onto a
  degenerate subspace (all gauge-invariant outputs of this package, summed over degenerate sets)
  are exact; the rotation *inside* a degenerate subspace is not defined and is set to zero.
  Second derivatives (jvp of jvp, e.g. a Hessian in a field) are exact only for *exact*
  degeneracies: a pair split by a little more than ``degen_tol`` keeps its 1/(λ_i − λ_j) and loses
  digits to round-off, and raising ``degen_tol`` to mask it gives a wrong (not just noisy) second
  derivative, because the second-order intra-pair terms do not cancel as the first-order ones do.
* :func:`safe_reciprocal` — 1/x with a mask, written with the double-``where`` pattern so that the
  untaken branch never produces NaN in a gradient (cf. ``jax_md.util.safe_mask``).
"""

from __future__ import annotations

import functools
import os

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


def _eigh_2x2(h):
    """Closed-form eigensystem of a 2×2 Hermitian H = d0 + d·σ (elementwise ops only).

    LAPACK's batched eigh costs more than everything else a 2-band pipeline does; this form fuses
    with the rest. Gauge: the larger of the two spinor components is made real and positive, which
    avoids the 0/0 of the half-angle formula at either pole; at d = 0 the basis vectors are used.
    """
    a, c = jnp.real(h[..., 0, 0]), jnp.real(h[..., 1, 1])
    b = h[..., 0, 1]
    d0, dz = 0.5 * (a + c), 0.5 * (a - c)
    bb = jnp.real(b) ** 2 + jnp.imag(b) ** 2
    d2 = dz * dz + bb
    nonzero = d2 > 0
    dn = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, d2, 1.0)), 0.0)
    w = jnp.stack([d0 - dn, d0 + dn], axis=-1)
    # upper state ∝ (dz + |d|, b*) if dz ≥ 0, else ∝ (b, |d| − dz); both have norm² 2|d|(|d| ± dz).
    north = dz >= 0
    p = jnp.where(north, dz + dn, dn - dz)  # ≥ |d|, > 0 unless d = 0
    norm = jnp.sqrt(jnp.where(nonzero, 2 * dn * p, 1.0))
    up0 = jnp.where(north, p + 0j, b) / norm
    up1 = jnp.where(north, jnp.conj(b), p + 0j) / norm
    up0 = jnp.where(nonzero, up0, jnp.where(north, 1.0 + 0j, 0j))
    up1 = jnp.where(nonzero, up1, jnp.where(north, 0j, 1.0 + 0j))
    lo0, lo1 = -jnp.conj(up1), jnp.conj(up0)
    v = jnp.stack([jnp.stack([lo0, up0], -1), jnp.stack([lo1, up1], -1)], -2)
    return w, v.astype(h.dtype)


def _looped_eigh_enabled() -> bool:
    return jax.default_backend() == "cpu" and os.environ.get("QGEO_JAX_BATCHED_EIGH", "0") in ("", "0")


@jax.custom_batching.custom_vmap
def _lapack_eigh(h):
    return tuple(jnp.linalg.eigh(h))


@_lapack_eigh.def_vmap
def _lapack_eigh_vmap(axis_size, in_batched, h):
    # On the CPU a *batched* LAPACK eigh (jaxlib's ParallelBatchMap) ran single-threaded, its
    # concurrent instances serialised — and deadlocked: two host devices each running one
    # (N = 8–16, chunk 256) hung with zero CPU time within a few calls, and a single-device
    # program with two independent batched eighs hung once in the test suite (jax 0.10.2; gdb:
    # both kernels waiting in ParallelBatchMap, every pool thread idle). One matrix per call in
    # a loop costs 4 % more on one device, never hung, and lets two host devices run
    # 1.6–1.8× faster than one (N = 8–32). QGEO_JAX_BATCHED_EIGH=1 restores the batched call.
    del axis_size
    if not in_batched[0]:
        w, v = _lapack_eigh(h)
        return (w, v), (False, False)
    if _looped_eigh_enabled():
        w, v = jax.lax.map(_lapack_eigh, h)
    else:
        w, v = jnp.linalg.eigh(h)
    return (w, v), (True, True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def eigh(h: Complex[Array, "n n"], degen_tol: float = 1e-8):
    """Eigenvalues (ascending) and eigenvectors (columns) of a Hermitian matrix.

    Same as ``jnp.linalg.eigh`` in value (2×2 matrices use a closed form); its derivative masks
    degenerate pairs (see module doc).
    """
    if h.shape[-1] == 2 and jnp.iscomplexobj(h):
        return _eigh_2x2(h)
    if h.ndim > 2:  # an explicitly batched call: the same per-matrix loop as under vmap
        w, v = jax.vmap(_lapack_eigh)(h.reshape((-1,) + h.shape[-2:]))
        return w.reshape(h.shape[:-1]), v.reshape(h.shape)
    return _lapack_eigh(h)


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
