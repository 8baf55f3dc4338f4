r"""Working precision: float64 (default) or float32 (mixed precision, an explicit opt-in).

``cast_precision(tree, "float32")`` returns a copy of a model or mesh (any pytree) whose floating
leaves are float32 and complex leaves complex64. With a float32 model and mesh:

* the mesh generates its points in float32 (Monkhorst–Pack and polar meshes take the dtype of
  their reciprocal vectors / radial nodes, an explicit mesh that of its points); mesh *weights*
  (``weights``, ``cell_volume``, ``node_weights``) are kept in float64;
* the model gives complex64 H(k), and ∂H, the eigendecomposition (``eigh``), velocities, Berry
  curvature, orbital moment and spin matrix elements are computed in complex64/float32
  (:func:`working_dtypes`: the precision of the model's parameters, or of k if that is lower);
* the μ-dependent weights (f0, −T ln(1 − f0), f0') are float64 — μ and T stay float64 arrays —
  so their products with the band quantities and the Brillouin-zone accumulation
  (:func:`qgeo_jax.integrate`) are float64. ``jax_enable_x64`` stays on (``require_x64``).

Accuracy (``benchmarks/bench_precision.py``, relative error max|x32 − x64|/max|x64|, 21 μ,
T = 0.05): Haldane M^O, AHC, Kubo Chern 2e-8–4e-8; spinful Rashba lattice M^O, AHC, M^S and the
four kinetic responses (Edelstein 9e-7) 6e-8–9e-7; 8-band random tight-binding 8e-8 (M^S) to
2e-5 (Kubo Chern of a metallic band, intrinsic orbital). The error is set by the float32
round-off of the eigenvectors (ε₃₂ ≈ 6e-8) amplified by bandwidth/gap in the energy denominators
1/(E_n − E_m)². Failure mode: near-degenerate k-points. For a Haldane model next to its
transition (gap 2δ at K, K on the mesh) the AHC error grows from 1e-7 (gap/bandwidth 3e-2) to
3e-5 (3e-4) and 6e-4 (3e-5); float32 is not meant for band touchings, Weyl points or Kramers
pairs split by a weak field. (Degenerate pairs below ``degen_tol`` are dropped as in float64, but
float32 eigenvalues are only good to ~1e-7 of the bandwidth.)

Speed (same script, CPU, steady state, CPU-time ratio t32/t64): 0.95–1.03 for 2-band models (their
2×2 eigensystem is closed-form and the float64 occupation factors dominate), 0.68–0.80 for 8
bands (complex64 LAPACK eigh). GPUs with slow float64 units gain more.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

PRECISIONS = ("float32", "float64")
_REAL = {"float32": jnp.float32, "float64": jnp.float64}
_COMPLEX = {"float32": jnp.complex64, "float64": jnp.complex128}
#: Mesh fields that are quadrature weights, not coordinates: kept in float64 by cast_precision.
_WEIGHT_FIELDS = ("weights", "cell_volume", "node_weights")


def _check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}.")
    return precision


def _cast_leaf(x, precision):
    if isinstance(x, (jax.Array, np.ndarray)) or isinstance(x, jax.core.Tracer):
        dtype = getattr(x, "dtype", None)
        if dtype is None:
            return x
        if jnp.issubdtype(dtype, jnp.complexfloating):
            return jnp.asarray(x).astype(_COMPLEX[precision])
        if jnp.issubdtype(dtype, jnp.floating):
            return jnp.asarray(x).astype(_REAL[precision])
    return x


def cast_precision(tree, precision: str):
    """A copy of ``tree`` (model, mesh or any pytree) with its floating array leaves cast.

    ``precision="float32"``: float → float32, complex → complex64; ``"float64"``: float → float64,
    complex → complex128. Integer, boolean and non-array leaves and static fields are unchanged.
    For meshes (:class:`qgeo_jax.AbstractMesh`) the quadrature-weight fields stay float64 so that
    the Brillouin-zone sum is accumulated in float64 (only the point coordinates are cast).
    Mixed precision, its accuracy and its failure modes: see the module docstring.

    Raises ``ValueError`` for any other precision string.
    """
    precision = _check(precision)
    out = jax.tree_util.tree_map(lambda x: _cast_leaf(x, precision), tree)
    from ._bz import AbstractMesh  # local: _bz is imported by most modules; avoid cycles

    if isinstance(tree, AbstractMesh):
        for name in _WEIGHT_FIELDS:
            value = getattr(tree, name, None)
            if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jnp.floating):
                out = eqx.tree_at(lambda m, n=name: getattr(m, n), out, value.astype(jnp.float64))
    return out


def tree_precision(tree) -> str | None:
    """"float32" if every inexact array leaf of ``tree`` is 32-bit (float32/complex64), "float64"
    if any is 64-bit, ``None`` if it has none. Decided from dtypes only (free under jit)."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    if not leaves:
        return None
    if all(jnp.finfo(x.dtype).bits == 32 for x in leaves):
        return "float32"
    return "float64"


def working_dtypes(model, k) -> tuple:
    """(real, complex) dtypes in which H(k), ∂H and the eigensystem are computed.

    32-bit when the model's parameters are all 32-bit (a model passed through
    ``cast_precision(model, "float32")``) or when k itself is float32 (points of a float32 mesh);
    64-bit otherwise.
    """
    kdtype = getattr(k, "dtype", None)
    low = tree_precision(model) == "float32" or (
        kdtype is not None and jnp.issubdtype(kdtype, jnp.floating) and jnp.finfo(kdtype).bits == 32
    )
    return (jnp.float32, jnp.complex64) if low else (jnp.float64, jnp.complex128)
