"""Plug a user-written H(k) or H(k, params) into the package."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, PyTree

from ._base import AbstractModel, as_param


class FunctionModel(AbstractModel):
    """A model defined by a plain function; build it with :func:`from_function`."""

    fn: Callable | None = eqx.field(static=True)
    # A pytree-callable (e.g. ``other_model.hamiltonian``, an equinox bound method) is kept as a
    # pytree field so that its arrays stay leaves (differentiable, never static).
    fn_tree: PyTree | None
    params: PyTree[Array] | None
    spin: Complex[Array, "3 n n"] | None
    lattice_vectors: Float[Array, "dim dim"] | None
    orbital_positions: Float[Array, "n dim"] | None
    k_dim: int = eqx.field(static=True)
    cutoff: float | None = eqx.field(static=True, default=None)

    @property
    def dim(self) -> int:
        return self.k_dim

    @property
    def lattice(self):
        return self.lattice_vectors

    @property
    def k_cutoff(self):
        return self.cutoff

    def positions(self):
        if self.orbital_positions is None:
            return jnp.zeros((self.norb, self.dim))
        return self.orbital_positions

    def spin_operators(self):
        return self.spin

    def hamiltonian(self, k):
        fn = self.fn if self.fn_tree is None else self.fn_tree
        h = fn(k) if self.params is None else fn(k, self.params)
        h = jnp.asarray(h)
        # complex128, or complex64 when h is already 32-bit (a float32 model or k).
        return h.astype(jnp.complex64 if h.dtype in (jnp.float32, jnp.complex64) else jnp.complex128)


def _n_positional(fn: Callable) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 2
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        return 2
    return sum(p.kind in kinds for p in sig.parameters.values())


def from_function(
    h: Callable,
    params: dict[str, Any] | PyTree | None = None,
    *,
    dim: int,
    spin=None,
    lattice=None,
    positions=None,
    k_cutoff: float | None = None,
) -> FunctionModel:
    """Wrap ``h(k)`` or ``h(k, params)`` (a pure JAX function of one Cartesian k) as a model.

    ``params`` is any pytree of arrays (e.g. a dict); its float leaves are the differentiable
    parameters. ``lattice`` (rows = lattice vectors) makes it a lattice model, otherwise it is a
    continuum model with momentum cutoff ``k_cutoff``. ``positions`` are Cartesian orbital
    positions (only the plaquette Chern number and flakes need them). ``spin`` is (3, n, n) in
    units of ħ. The function is checked once, here: its output must be a square Hermitian matrix.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"from_function: dim must be 1, 2 or 3, got {dim!r}.")
    nargs = _n_positional(h)
    if params is None and nargs >= 2:
        raise ValueError("from_function: h takes (k, params) but no params were given.")
    if params is not None and nargs < 2:
        raise ValueError("from_function: params were given but h takes only k; define h(k, params).")
    if params is not None:
        params = jax.tree_util.tree_map(as_param, params)
    lat = None if lattice is None else as_param(np.asarray(lattice, dtype=np.float64))
    if lat is not None and lat.shape != (dim, dim):
        raise ValueError(f"from_function: lattice must have shape ({dim}, {dim}), got {lat.shape}.")
    if lat is None and k_cutoff is None:
        raise ValueError("from_function: a continuum model (no lattice) needs k_cutoff (1/length).")
    is_tree = isinstance(h, eqx.Module)
    model = FunctionModel(
        fn=None if is_tree else h,
        fn_tree=h if is_tree else None,
        params=params,
        spin=None if spin is None else jnp.asarray(spin, dtype=jnp.complex128),
        lattice_vectors=lat,
        orbital_positions=None if positions is None else as_param(positions),
        k_dim=dim,
        cutoff=None if k_cutoff is None else float(k_cutoff),
    )
    # One cheap check at a generic k: square, Hermitian, matching spin operators. Skipped when
    # the model is built inside a traced function (its values are not known then).
    k0 = jnp.linspace(0.123, 0.456, dim)
    h0 = model.hamiltonian(k0)
    if isinstance(h0, jax.core.Tracer):
        return model
    h0 = np.asarray(h0)
    if h0.ndim != 2 or h0.shape[0] != h0.shape[1]:
        raise ValueError(f"from_function: h(k) must return a square matrix, got shape {h0.shape}.")
    err = np.max(np.abs(h0 - h0.conj().T))
    if not np.isfinite(h0).all():
        raise ValueError("from_function: h(k) returned NaN or inf at a test k-point; check the parameters.")
    if err > 1e-10 * max(1.0, np.max(np.abs(h0))):
        raise ValueError(f"from_function: h(k) is not Hermitian (max |H - H†| = {err:.3g} at k = {np.asarray(k0)}).")
    if model.spin is not None and model.spin.shape != (3,) + h0.shape:
        raise ValueError(
            f"from_function: spin operators have shape {model.spin.shape}, H(k) is {h0.shape}; "
            f"expected (3, {h0.shape[0]}, {h0.shape[0]})."
        )
    return model
