"""The spectrum at one k: eigensystem, autodiff velocities, spin matrices in the band basis."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ._config import require_x64
from ._linalg import eigh
from ._precision import working_dtypes
from .models._base import AbstractModel

DEFAULT_DEGEN_TOL = 1e-8


class Spectrum(eqx.Module):
    """Eigensystem of H(k) at one k, with matrix elements in the band basis.

    Attributes
    ----------
    energies : (n,) ascending band energies E_n.
    vectors : (n, n) eigenvectors as columns, U[:, n] = |n⟩.
    velocity : (3, n, n) v^a_{nm} = ⟨n|∂_a H|m⟩ (ħ = 1), ∂_a H by forward-mode autodiff; components
        beyond the model's dimension are zero (2D models live in 3D for vector outputs).
    spin : (3, n, n) S^i_{nm} = ⟨n|S_i|m⟩ in units of ħ, or ``None`` for spinless models.
    """

    energies: Float[Array, " n"]
    vectors: Complex[Array, "n n"]
    velocity: Complex[Array, "3 n n"]
    spin: Complex[Array, "3 n n"] | None


def hamiltonian_and_gradient(model: AbstractModel, k: Float[Array, " dim"], *, pad: bool = True):
    """H(k) and ∂_a H(k) in one forward pass.

    ∂H has shape (3, n, n), zero-padded beyond ``model.dim`` (``pad=False``: (dim, n, n)).
    """
    # Precision follows the model's parameters / the mesh points (float64 unless cast to float32
    # with qgeo_jax._precision.cast_precision); H is cast too, so any model runs in that precision.
    real, cplx = working_dtypes(model, k)
    k = jnp.asarray(k, dtype=real)
    if k.shape != (model.dim,):
        raise ValueError(
            f"{type(model).__name__} is a {model.dim}D model but k has shape {k.shape}; "
            f"pass one wavevector of shape ({model.dim},)."
        )
    basis = jnp.eye(model.dim, dtype=k.dtype)
    push = lambda dk: jax.jvp(model.hamiltonian, (k,), (dk,))
    h, dh = jax.vmap(push, out_axes=(None, 0))(basis)
    h, dh = h.astype(cplx), dh.astype(cplx)
    if pad and model.dim < 3:
        dh = jnp.concatenate([dh, jnp.zeros((3 - model.dim,) + h.shape, dh.dtype)], axis=0)
    return h, dh


@eqx.filter_jit
def spectrum(model: AbstractModel, k: Float[Array, " dim"], *, degen_tol: float = DEFAULT_DEGEN_TOL) -> Spectrum:
    """Eigenvalues, eigenvectors, velocity and spin matrices at one k (see :class:`Spectrum`)."""
    require_x64()
    energies, u, velocity = eigen_velocity(model, k, degen_tol=degen_tol)
    if model.dim < 3:
        velocity = jnp.concatenate([velocity, jnp.zeros((3 - model.dim,) + u.shape, velocity.dtype)], axis=0)
    uh = jnp.conj(u.T)
    s = model.spin_operators()
    spin = None if s is None else uh[None] @ jnp.asarray(s, dtype=u.dtype) @ u[None]
    return Spectrum(energies=energies, vectors=u, velocity=velocity, spin=spin)


def eigen_velocity(model: AbstractModel, k: Float[Array, " dim"], *, degen_tol: float = DEFAULT_DEGEN_TOL):
    """E_n, U and the velocity matrices v^a_{nm} for the model's own ``dim`` components only.

    The lean path used by the responses: no zero padding, so 2D models pay for two rotations.
    """
    h, dh = hamiltonian_and_gradient(model, k, pad=False)
    energies, u = eigh(h, degen_tol)
    uh = jnp.conj(u.T)
    return energies, u, uh[None] @ dh @ u[None]
