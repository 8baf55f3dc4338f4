"""The model interface.

A model is an ``equinox.Module`` whose inexact-array fields are its physical parameters (so they
are differentiable and vmappable) and whose ``hamiltonian(k)`` returns H(k) for ONE Cartesian
wavevector k (shape ``(dim,)``, units 1/length). Callers vmap over k.

Conventions (see README, "Conventions"):

* ħ = e = 1 inside the package; energies and lengths in the model's own units.
* Spin operators, if any, are returned by ``spin_operators()`` with shape (3, n, n) in units of ħ
  (S = σ/2 for spin ½).
* Lattice models give real-space lattice vectors as the *rows* of ``lattice`` (dim, dim) and
  orbital positions (Cartesian, (n, dim)) through ``positions``. The Bloch phase convention is
  H_ij(k) = Σ_R t_ij(R) e^{ik·(R + τ_j − τ_i)}, so that ∂_k H is the velocity operator with a
  diagonal position operator at the orbital centres.
* Continuum (k·p) models have ``lattice = None`` and a documented ``k_cutoff`` (1/length) that
  bounds the default integration region.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

PAULI = np.array(
    [[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128
)
SIGMA0 = np.eye(2, dtype=np.complex128)


def as_param(x, dtype=None) -> Array:
    """Parameter converter: Python numbers become float64 (or complex128) JAX arrays."""
    x = jnp.asarray(x)
    if dtype is not None:
        return x.astype(dtype)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float64)
    return x


def complex_dtype(*params):
    """complex64 if every parameter is 32-bit (a model cast with ``cast_precision(m, "float32")``),
    else complex128: the dtype a model's H(k) is built in."""
    low = all(jnp.asarray(p).dtype in (jnp.float32, jnp.complex64) for p in params)
    return jnp.complex64 if low else jnp.complex128


class AbstractModel(eqx.Module):
    """Base class of every Bloch Hamiltonian.

    Subclasses implement :meth:`hamiltonian` and the ``dim`` attribute; optionally
    :meth:`spin_operators`, ``lattice``, :meth:`positions` and ``k_cutoff``.
    """

    @abc.abstractmethod
    def hamiltonian(self, k: Float[Array, " dim"]) -> Complex[Array, "n n"]:
        """H(k) at one Cartesian wavevector k."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Number of k components (1, 2 or 3)."""

    # --- optional parts -------------------------------------------------------------------------
    def spin_operators(self) -> Complex[Array, "3 n n"] | None:
        """Spin operators S_x, S_y, S_z in the orbital basis, units of ħ; ``None`` if spinless."""
        return None

    @property
    def lattice(self) -> Float[Array, "dim dim"] | None:
        """Real-space lattice vectors as rows; ``None`` for continuum models."""
        return None

    def positions(self) -> Float[Array, "n dim"]:
        """Cartesian orbital positions τ_i (used by plaquette Chern numbers and flakes)."""
        return jnp.zeros((self.norb, self.dim))

    @property
    def k_cutoff(self) -> float | None:
        """Default momentum cutoff of a continuum model (1/length); ``None`` for lattices."""
        return None

    # --- derived --------------------------------------------------------------------------------
    @property
    def norb(self) -> int:
        """Number of orbitals (bands), from the shape of H — no computation."""
        shape = jax.eval_shape(self.hamiltonian, jax.ShapeDtypeStruct((self.dim,), jnp.float64))
        return shape.shape[-1]

    @property
    def is_lattice(self) -> bool:
        return self.lattice is not None

    def reciprocal(self) -> Float[Array, "dim dim"]:
        """Reciprocal vectors b_i as rows, a_i·b_j = 2π δ_ij."""
        if self.lattice is None:
            raise ValueError(f"{type(self).__name__} is a continuum model: it has no reciprocal lattice.")
        return 2 * jnp.pi * jnp.linalg.inv(self.lattice).T

    def cell_volume(self) -> Array:
        """Unit-cell volume (area in 2D, length in 1D) in length^dim."""
        if self.lattice is None:
            raise ValueError(f"{type(self).__name__} is a continuum model: it has no unit cell.")
        return jnp.abs(jnp.linalg.det(self.lattice))
