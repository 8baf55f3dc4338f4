"""Generic tight-binding model from a hopping table."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

from ._base import AbstractModel, as_param
from .._validate import check_real_finite

_CONVENTIONS = ("positions", "cell")


class TightBinding(AbstractModel):
    r"""Tight-binding model built from a hopping table.

    Each hopping ``(t, i, j, R)`` means ⟨i, 0|H|j, R⟩ = t (R in lattice-vector units); its Hermitian
    conjugate ⟨j, R|H|i, 0⟩ = t* is added automatically, so give each bond once. On-site energies
    go in ``onsite``. Bloch phases follow ``convention``:

    * ``"positions"`` (default): H_ij(k) = Σ_R t_ij(R) e^{ik·(R + τ_j − τ_i)}. ∂_k H is then the
      velocity with the position operator diagonal at the orbital centres τ — the convention in
      which the Berry curvature, orbital moment and magnetization of this package are physical.
    * ``"cell"``: H_ij(k) = Σ_R t_ij(R) e^{ik·R} (Wannier90's, periodic in k). Same spectrum;
      eigenvectors differ by diag(e^{ik·τ}), and geometric quantities computed from ∂_k H alone
      then omit the intra-cell position terms (exact only when all τ coincide).

    Parameters
    ----------
    lattice : (dim, dim) rows are lattice vectors (length units).
    positions : (n, dim) orbital positions in *reduced* (lattice) coordinates.
    onsite : (n,) on-site energies.
    hoppings : sequence of ``(t, i, j, R)`` with R a length-``dim`` integer tuple.
    spin : optional (3, n, n) spin operators in units of ħ (S = σ/2 for spin ½).
    """

    lattice_vectors: Float[Array, "dim dim"]
    reduced_positions: Float[Array, "n dim"]
    onsite: Float[Array, " n"]
    hopping: Complex[Array, " nhop"]
    hop_i: Int[Array, " nhop"]
    hop_j: Int[Array, " nhop"]
    hop_R: Int[Array, "nhop dim"]
    spin: Complex[Array, "3 n n"] | None
    convention: str = eqx.field(static=True, default="positions")

    def __init__(
        self,
        lattice,
        positions,
        onsite,
        hoppings: Sequence[tuple],
        *,
        spin=None,
        convention: str = "positions",
    ):
        lat = np.asarray(lattice, dtype=np.float64)
        if lat.ndim != 2 or lat.shape[0] != lat.shape[1] or lat.shape[0] not in (1, 2, 3):
            raise ValueError(f"TightBinding: lattice must be (dim, dim) with dim 1-3, got shape {lat.shape}.")
        dim = lat.shape[0]
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, dim)
        n = pos.shape[0]
        # Real and finite (clear error instead of numpy's TypeError for complex input).
        ons = check_real_finite("TightBinding", onsite, "onsite energies").reshape(-1)
        if ons.shape != (n,):
            raise ValueError(f"TightBinding: onsite has {ons.size} entries for {n} orbitals.")
        if convention not in _CONVENTIONS:
            raise ValueError(f"TightBinding: convention must be one of {_CONVENTIONS}, got {convention!r}.")
        if len(hoppings) == 0:
            raise ValueError("TightBinding: the hopping table is empty (give at least one (t, i, j, R)).")
        ts, ii, jj, rr, seen = [], [], [], [], {}
        for idx, hop in enumerate(hoppings):
            if len(hop) != 4:
                raise ValueError(f"TightBinding: hopping #{idx} is {hop!r}; expected (t, i, j, R).")
            t, i, j, R = hop
            R = tuple(int(r) for r in np.atleast_1d(R))
            if len(R) != dim:
                raise ValueError(f"TightBinding: hopping #{idx} has R={R} but the lattice is {dim}D.")
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"TightBinding: hopping #{idx} links orbitals ({i}, {j}) but there are {n}.")
            if i == j and all(r == 0 for r in R):
                raise ValueError(f"TightBinding: hopping #{idx} is on-site (i = j, R = 0); use `onsite`.")
            key, conj = (i, j, R), (j, i, tuple(-r for r in R))
            if key in seen or conj in seen:
                other = seen.get(key, seen.get(conj))
                raise ValueError(
                    f"TightBinding: hoppings #{other} and #{idx} describe the same bond {key} "
                    "(the Hermitian conjugate is added automatically; give each bond once)."
                )
            seen[key] = idx
            ts.append(complex(t) if not hasattr(t, "dtype") else t)
            ii.append(i)
            jj.append(j)
            rr.append(R)
        self.lattice_vectors = as_param(lat)
        self.reduced_positions = as_param(pos)
        self.onsite = as_param(ons)
        if all(isinstance(t, (complex, float, int, np.number)) for t in ts):
            self.hopping = jnp.asarray(np.asarray(ts, dtype=np.complex128))
        else:  # traced or JAX-array hoppings (e.g. built inside a differentiated function)
            self.hopping = jnp.stack([jnp.asarray(t, dtype=jnp.complex128) for t in ts])
        self.hop_i = jnp.asarray(ii, dtype=jnp.int32)
        self.hop_j = jnp.asarray(jj, dtype=jnp.int32)
        self.hop_R = jnp.asarray(np.array(rr, dtype=np.int32))
        if spin is not None:
            spin = jnp.asarray(spin, dtype=jnp.complex128)
            if spin.shape != (3, n, n):
                raise ValueError(f"TightBinding: spin operators must have shape (3, {n}, {n}), got {spin.shape}.")
        self.spin = spin
        self.convention = convention

    @property
    def dim(self) -> int:
        return self.lattice_vectors.shape[0]

    @property
    def norb(self) -> int:
        # From a shape, not by tracing H (the base-class route costs ~ms per access).
        return self.onsite.shape[0]

    @property
    def lattice(self) -> Float[Array, "dim dim"]:
        return self.lattice_vectors

    def positions(self) -> Float[Array, "n dim"]:
        return self.reduced_positions @ self.lattice_vectors

    def spin_operators(self):
        return self.spin

    def hamiltonian(self, k: Float[Array, " dim"]) -> Complex[Array, "n n"]:
        n = self.onsite.shape[0]
        shift = self.hop_R.astype(self.reduced_positions.dtype)
        if self.convention == "positions":
            tau = self.reduced_positions
            shift = shift + tau[self.hop_j] - tau[self.hop_i]
        phase = jnp.exp(1j * ((shift @ self.lattice_vectors) @ k))
        # complex64 for a float32 model (qgeo_jax._precision.cast_precision), complex128 otherwise.
        cplx = jnp.result_type(self.hopping.dtype, self.onsite.dtype, jnp.complex64)
        h = jnp.zeros((n, n), dtype=cplx).at[self.hop_i, self.hop_j].add((self.hopping * phase).astype(cplx))
        return h + jnp.conj(h.T) + jnp.diag(self.onsite.astype(cplx))
