r"""Chern numbers: the Kubo integral and Fukui–Hatsugai–Suzuki plaquettes.

Sign convention (README, "Conventions"): C = (1/2π) Σ_{n∈bands} ∫_BZ d²k Ω_n^{xy} with
Ω^{xy} = −2 Im Σ ⟨n|∂_xH|m⟩⟨m|∂_yH|n⟩/(E_n − E_m)², so that σ_xy = −C e²/h and dM^O/dμ = C e/h.
The plaquette route is made to use the same sign: Fukui, Hatsugai & Suzuki (J. Phys. Soc. Jpn. 74,
1674 (2005), doi:10.1143/JPSJ.74.1674) define the connection ⟨n|∂n⟩ without the factor i, which
flips the sign, and a left-handed pair of reciprocal vectors flips it once more.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._bz import DEFAULT_CHUNK, MonkhorstPackMesh
from ._config import require_x64
from ._responses import _band_mask, chern_number_kubo
from ._spectrum import DEFAULT_DEGEN_TOL
from ._validate import ChernResult, check_chern_mesh, check_model, chern_report
from .models._base import AbstractModel


@eqx.filter_jit
def _plaquette_chern(model, mesh, band_idx, chunk_size):
    n1, n2 = mesh.shape
    frac = jnp.stack(jnp.meshgrid(jnp.arange(n1) / n1, jnp.arange(n2) / n2, indexing="ij"), -1)
    k = (frac @ mesh.reciprocal).reshape(-1, 2)
    tau = model.positions()

    def cell_periodic_states(kk):
        _, u = jnp.linalg.eigh(model.hamiltonian(kk))
        # positions-convention eigenvectors → cell-periodic (k-periodic) gauge: u_cell = e^{ik·τ} u.
        return (jnp.exp(1j * (tau @ kk))[:, None] * u)[:, band_idx]

    occ = jax.lax.map(cell_periodic_states, k, batch_size=chunk_size).reshape(n1, n2, *tau.shape[:1], -1)

    def link(a, b):
        return jnp.linalg.det(jnp.einsum("...ia,...ib->...ab", jnp.conj(a), b))

    u1 = link(occ, jnp.roll(occ, -1, axis=0))
    u2 = link(occ, jnp.roll(occ, -1, axis=1))
    flux = jnp.angle(u1 * jnp.roll(u2, -1, axis=0) * jnp.conj(jnp.roll(u1, -1, axis=1)) * jnp.conj(u2))
    orientation = jnp.sign(jnp.linalg.det(mesh.reciprocal))
    return -orientation * jnp.sum(flux) / (2 * jnp.pi)


def chern_number(
    model: AbstractModel,
    mesh: MonkhorstPackMesh,
    bands,
    *,
    method: str = "kubo",
    degen_tol: float = DEFAULT_DEGEN_TOL,
    chunk_size: int = DEFAULT_CHUNK,
    report: bool = False,
) -> Float[Array, ""] | ChernResult:
    """Chern number of the set ``bands`` (list of band indices) of a 2D lattice model, unrounded.

    ``method="kubo"``: the Berry-curvature integral on the mesh (converges as the mesh is refined;
    differentiable). ``method="plaquette"``: Fukui–Hatsugai–Suzuki lattice field strength, an
    integer up to round-off whenever the band set is gapped from the rest on the mesh.
    The band set must be separated by a gap from the other bands for either to be quantized.
    ``report=True`` returns a :class:`ChernResult` instead (both routes, nearest integer, deviation,
    minimum direct gap on the mesh, ``is_quantized``; not differentiable, see ``chern_report``).
    """
    require_x64()
    check_chern_mesh(model, mesh)  # 2D lattice model, matching mesh of >= 4 points per axis
    model = check_model(model)
    if report:
        opts = dict(method=method, degen_tol=degen_tol, chunk_size=chunk_size)
        return chern_report(model, mesh, bands, **opts)
    if method == "kubo":
        return chern_number_kubo(model, mesh, bands, degen_tol=degen_tol, chunk_size=chunk_size)
    if method == "plaquette":
        mask = np.asarray(_band_mask(model, bands)) > 0
        if any(s != 0 for s in mesh.shift):
            raise ValueError("the plaquette Chern number needs an unshifted mesh (shift=0).")
        return _plaquette_chern(model, mesh, jnp.asarray(np.flatnonzero(mask)), chunk_size)
    raise ValueError(f"unknown Chern method {method!r}; use 'kubo' or 'plaquette'.")
