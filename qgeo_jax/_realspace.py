r"""Real-space (open-boundary) route: hopping tables, finite flakes and their moments.

This module is the package's *independent* check of the k-space formulas: the same lattice model
is cut into a finite flake with open boundaries and the observables are computed from the
eigenstates of one big Hermitian matrix, with no Bloch phases, no Berry connection and no sum over
intermediate states. Bulk quantities are recovered by extrapolating in the flake size.

* :func:`real_space_hoppings` — t_ij(R) of any lattice model by a discrete Fourier transform of
  its k-periodic ("cell" gauge) Hamiltonian. The package's Bloch convention is
  H_ij(k) = Σ_R t_ij(R) e^{ik·(R + τ_j − τ_i)} (orbital positions τ inside the phase), so
  H^cell(k) = V(k) H(k) V(k)†, V = diag(e^{ik·τ}), is periodic in k and
  t_ij(R) = (1/N) Σ_k H^cell_ij(k) e^{−ik·R} on an N-point grid is exact once the grid is larger
  than twice the hopping range (checked by reconstructing H(k) at random k).
* :func:`build_flake` — an open-boundary supercell of L1 × L2 (× L3) cells:
  ⟨i, n|H|j, n + R⟩ = t_ij(R), orbital i of cell n at r = n·A + τ_i (Cartesian).
* :func:`flake_orbital_magnetization` — the moment of the occupied states per area,

  .. math:: M = -\frac{e}{2A}\sum_n f_0(E_n)\,\langle ψ_n|\mathbf r\times\mathbf v|ψ_n\rangle,
            \qquad \mathbf v = \frac{i}{\hbar}[H, \mathbf r],

  electron charge −e (ħ = e = 1). With r diagonal, (r × v)^c_ij = i H_ij (r_i × r_j)^c, so the
  operator needs no derivative at all. It includes the edge currents, which *are* part of the bulk
  magnetization; M(L) → M^O_bulk as O(1/L) (Ceresoli, Thonhauser, Vanderbilt, Resta,
  PRB 74, 024408 (2006), doi:10.1103/PhysRevB.74.024408, Figs. 2–3).
* :func:`flake_spin_density` — Σ_n f_0(E_n) ⟨ψ_n|S|ψ_n⟩ / A (units ħ per area).
* :func:`local_orbital_magnetization`, :func:`local_chern_marker` — the Bianco–Resta local
  markers (R. Bianco & R. Resta, PRL 116, 087202 (2016); PRB 84, 241106(R) (2011)): in the flake
  interior they converge to the bulk M^O and C exponentially in L, not as O(1/L).

An optional uniform electric field enters as the electron's potential energy +e E·(r − r_c)
(H → H + diag(E·(r − r_c)), r_c the flake centroid, e = 1). Everything after the flake is built is
written in ``jax.numpy`` through the degeneracy-safe :func:`qgeo_jax._linalg.eigh`, so
``jax.jacfwd`` with respect to the field gives the exact static linear response of a gapped flake
(keep μ inside a gap of the *flake* spectrum at T = 0, or use T > 0).

Units: as the rest of the package (ħ = e = 1, model energy and length units); magnetizations per
length^dim, like :func:`qgeo_jax.orbital_magnetization`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

from ._config import require_x64
from ._linalg import eigh
from ._occupation import check_temperature, fermi_dirac
from .models._base import AbstractModel
from .models._tight_binding import TightBinding

# Odd grids keep the R window symmetric, [−(N−1)/2, (N−1)/2], so that t(R) and t(−R) = t(R)† are
# both kept; each try doubles the reach.
_AUTO_GRIDS = {1: (5, 9, 17, 33, 65), 2: (5, 9, 17, 33), 3: (5, 9, 17)}
_N_CHECK = 8
DEFAULT_FLAKE_DEGEN_TOL = 1e-9
_PAIRS = ((1, 2), (2, 0), (0, 1))  # (a, b) for c = x, y, z: X^c = ½ ε_abc X^ab


# --------------------------------------------------------------------------------------------------
# hopping tables
# --------------------------------------------------------------------------------------------------
class Hoppings(eqx.Module):
    """Real-space hopping table t_ij(R) = ⟨i, 0|H|j, R⟩ of a lattice model.

    Attributes
    ----------
    vectors : (nR, dim) integer lattice vectors R (lattice-vector units); R = 0 (on-site block) is
        always present, and −R is present whenever R is.
    matrices : (nR, n, n) complex t(R), with t(−R) = t(R)†.
    lattice : (dim, dim) lattice vectors as rows (length units).
    positions : (n, dim) Cartesian orbital positions τ_i of the physical orbitals.
    """

    vectors: Int[Array, "nR dim"]
    matrices: Complex[Array, "nR n n"]
    lattice: Float[Array, "dim dim"]
    positions: Float[Array, "n dim"]

    @property
    def dim(self) -> int:
        return self.lattice.shape[0]

    @property
    def norb(self) -> int:
        return self.matrices.shape[-1]

    def bloch_hamiltonian(self, k: Float[Array, " dim"]) -> Complex[Array, "n n"]:
        """H_ij(k) = Σ_R t_ij(R) e^{ik·(R + τ_j − τ_i)} (package convention)."""
        k = jnp.asarray(k, dtype=jnp.float64)
        phase_r = jnp.exp(1j * ((self.vectors.astype(jnp.float64) @ self.lattice) @ k))
        h_cell = jnp.tensordot(phase_r, self.matrices, axes=(0, 0))
        v = jnp.exp(1j * (self.positions @ k))
        return jnp.conj(v)[:, None] * h_cell * v[None, :]


def _phase_positions(model: AbstractModel) -> Array:
    """The τ that appear in the model's Bloch phases (zero for a TightBinding in "cell" convention).

    A ``TightBinding(convention="cell")`` has the same physical orbitals at the same places as its
    "positions" twin; only its Bloch phases omit τ. Its flake is therefore the same physical object.
    """
    if isinstance(model, TightBinding) and model.convention == "cell":
        return jnp.zeros_like(model.positions())
    return jnp.asarray(model.positions(), dtype=jnp.float64)


@eqx.filter_jit
def _cell_hamiltonians(model: AbstractModel, kpts, tau):
    """H^cell(k) = V H(k) V†, V = diag(e^{ik·τ}), at every k (one compiled call)."""

    def h_cell(k):
        v = jnp.exp(1j * (tau @ k))
        return v[:, None] * model.hamiltonian(k) * jnp.conj(v)[None, :]

    return jax.vmap(h_cell)(kpts)


@eqx.filter_jit
def _max_deviation(model: AbstractModel, hop: Hoppings, kpts):
    """max over k of |H(k) − Σ_R t(R) e^{ik·(R+τ_j−τ_i)}| and of |H(k)|."""
    h = jax.vmap(model.hamiltonian)(kpts)
    rebuilt = jax.vmap(hop.bloch_hamiltonian)(kpts)
    return jnp.max(jnp.abs(h - rebuilt)), jnp.max(jnp.abs(h))


def _fourier_hoppings(model: AbstractModel, grid: tuple[int, ...], tol: float):
    dim = model.dim
    lattice = jnp.asarray(model.lattice, dtype=jnp.float64)
    recip = model.reciprocal()
    tau = _phase_positions(model)
    axes = [jnp.arange(n) / n for n in grid]
    frac = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dim)
    kpts = frac @ recip

    hk = np.asarray(_cell_hamiltonians(model, kpts, tau))
    n = hk.shape[-1]
    hk = hk.reshape(tuple(grid) + (n, n))
    # t(R) = (1/N) Σ_k H^cell(k) e^{−2πi m·R/N}: numpy's forward FFT, index R mod N.
    tR = np.fft.fftn(hk, axes=tuple(range(dim))) / np.prod(grid)
    tR = tR.reshape(-1, n, n)
    idx = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, dim)
    grid_arr = np.asarray(grid)
    R = np.where(idx > (grid_arr - 1) // 2, idx - grid_arr, idx)
    keep = np.max(np.abs(tR), axis=(1, 2)) > tol
    keep |= np.all(R == 0, axis=1)
    order = np.lexsort(R[keep].T[::-1])
    return Hoppings(
        vectors=jnp.asarray(R[keep][order], dtype=jnp.int32),
        matrices=jnp.asarray(tR[keep][order]),
        lattice=lattice,
        positions=jnp.asarray(model.positions(), dtype=jnp.float64),
    ), tau


def _reconstruction_error(model: AbstractModel, hop: Hoppings, tau, seed: int = 0):
    """(max |H(k) − rebuilt|, max |H(k)|) over random k (fixed seed: deterministic)."""
    rng = np.random.default_rng(seed)
    frac = rng.uniform(-0.5, 0.5, size=(_N_CHECK, model.dim))
    kpts = jnp.asarray(frac) @ model.reciprocal()
    # Rebuild with the model's own phase positions (zero for "cell"-convention TightBinding).
    rebuilt = eqx.tree_at(lambda x: x.positions, hop, tau)
    err, scale = _max_deviation(model, rebuilt, kpts)
    return float(err), float(scale)


def real_space_hoppings(
    model: AbstractModel, grid=None, tol: float = 1e-12, *, check_tol: float = 1e-9
) -> Hoppings:
    r"""Hopping table t_ij(R) of a lattice model from its Bloch Hamiltonian.

    .. math:: t_{ij}(\mathbf R) = \frac1N\sum_{\mathbf k} H^{\rm cell}_{ij}(\mathbf k)\,
              e^{-i\mathbf k\cdot\mathbf R},\qquad
              H^{\rm cell}(\mathbf k) = V H(\mathbf k) V^\dagger,\
              V = {\rm diag}(e^{i\mathbf k\cdot\boldsymbol τ})

    on a Monkhorst–Pack grid of ``grid`` = (N_1, …, N_dim) points containing Γ (odd sizes keep the
    window of R symmetric). Works for any lattice model whose H(k) follows the package convention
    H_ij(k) = Σ_R t_ij(R) e^{ik·(R + τ_j − τ_i)} with τ = ``model.positions()`` (for a
    ``TightBinding`` in the "cell" convention, τ = 0 in the phases but the returned positions are
    the physical ones). Entries with max |t_ij(R)| ≤ ``tol`` are dropped.

    The table is verified by rebuilding H(k) at random k; if the largest error exceeds
    ``check_tol`` × max(1, max|H|), the hoppings reach beyond the grid's window (or H(k) is not of
    the declared form, e.g. the positions do not match its phases) and a ``ValueError`` says so.
    ``grid=None`` tries 5, 9, 17, … points per axis until the check passes.
    """
    require_x64()
    if not model.is_lattice:
        raise ValueError(
            f"{type(model).__name__} is a continuum model: it has no real-space hopping table."
        )
    dim = model.dim
    if grid is None:
        grids = [(g,) * dim for g in _AUTO_GRIDS[dim]]
    else:
        g = tuple(int(x) for x in np.broadcast_to(np.asarray(grid), (dim,)))
        if any(x < 1 for x in g):
            raise ValueError(f"real_space_hoppings: grid {g} must be positive integers.")
        grids = [g]
    err = scale = np.nan
    for g in grids:
        hop, tau = _fourier_hoppings(model, g, tol)
        err, scale = _reconstruction_error(model, hop, tau)
        if err <= check_tol * max(1.0, scale) + 10 * hop.vectors.shape[0] * tol:
            return hop
    raise ValueError(
        f"real_space_hoppings: the hopping table of {type(model).__name__} on a {grids[-1]} grid "
        f"rebuilds H(k) only to {err:.3g} (max |H| = {scale:.3g}). Either the hoppings reach "
        f"further than ±{(grids[-1][0] - 1) // 2} cells (pass a larger odd grid=...), or H(k) is "
        "not of the form Σ_R t(R) e^{ik·(R+τ_j−τ_i)} with τ = model.positions() "
        "(check the positions)."
    )


# --------------------------------------------------------------------------------------------------
# flakes
# --------------------------------------------------------------------------------------------------
class Flake(eqx.Module):
    """A finite piece of a lattice model with open boundaries (build it with :func:`build_flake`).

    Attributes
    ----------
    hamiltonian : (N, N) dense Hermitian H, N = n_cells × norb, index = cell_flat × norb + orbital.
    positions : (N, 3) Cartesian positions r = R + τ_i of every orbital (zero-padded to 3D).
    center : (3,) centroid of ``positions``: origin of r × v and of the potential E·(r − r_c).
    cell : (N, dim) integer cell index (n_1, …) of every orbital; ``orbital`` : (N,) its orbital.
    orbital_spin : (3, norb, norb) spin operators of one cell (units ħ), or ``None``; the flake's
        spin operator is block diagonal (see :meth:`spin_operators`).
    cell_volume : volume (area in 2D) of one unit cell.
    shape : (L_1, …, L_dim) cells per lattice direction.
    """

    hamiltonian: Complex[Array, "N N"]
    positions: Float[Array, "N 3"]
    center: Float[Array, "3"]
    cell: Int[Array, "N dim"]
    orbital: Int[Array, " N"]
    orbital_spin: Complex[Array, "3 n n"] | None
    cell_volume: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.shape))

    @property
    def norb(self) -> int:
        return self.hamiltonian.shape[0] // self.n_cells

    @property
    def size(self) -> int:
        return self.hamiltonian.shape[0]

    @property
    def area(self) -> Array:
        """n_cells × cell volume: the area (2D) or volume (3D) the flake's totals are divided by."""
        return self.n_cells * self.cell_volume

    def spin_operators(self) -> Complex[Array, "3 N N"] | None:
        """Dense block-diagonal spin operators 1_cells ⊗ S (48 N² bytes: small flakes only)."""
        if self.orbital_spin is None:
            return None
        eye = jnp.eye(self.n_cells, dtype=jnp.complex128)
        return jnp.stack([jnp.kron(eye, s) for s in self.orbital_spin])


def build_flake(model: AbstractModel, shape, *, hoppings: Hoppings | None = None) -> Flake:
    """Open-boundary flake of ``shape`` = (L_1, …, L_dim) unit cells of a lattice model.

    ⟨i, n|H|j, n + R⟩ = t_ij(R) for both cells inside the flake; bonds leaving it are cut. Orbital
    i of cell n = (n_1, …) sits at r = Σ_a n_a a_a + τ_i. The hopping table is
    :func:`real_space_hoppings` of the model unless given. The flake's shape follows the lattice
    vectors (a parallelogram in 2D). The per-cell spin operators are ``model.spin_operators()``
    (``model`` may be ``None`` when ``hoppings`` is given: no spin then).
    """
    require_x64()
    if hoppings is None:
        hoppings = real_space_hoppings(model)
    dim = hoppings.dim
    shape = tuple(int(x) for x in np.atleast_1d(shape))
    if len(shape) != dim or any(x < 1 for x in shape):
        raise ValueError(
            f"build_flake: shape {shape} must be {dim} positive integers for a {dim}D model."
        )
    n = hoppings.norb
    grid = np.meshgrid(*[np.arange(L) for L in shape], indexing="ij")
    cells = np.stack(grid, -1).reshape(-1, dim)
    ncell = cells.shape[0]
    flat = lambda c: np.ravel_multi_index(tuple(c.T), shape)
    rows, cols, which = [], [], []
    for r_idx, R in enumerate(np.asarray(hoppings.vectors)):
        target = cells + R
        inside = np.all((target >= 0) & (target < np.asarray(shape)), axis=1)
        rows.append(np.nonzero(inside)[0])
        cols.append(flat(target[inside]))
        which.append(np.full(int(inside.sum()), r_idx))
    rows, cols, which = (np.concatenate(x) for x in (rows, cols, which))
    # Assembled in NumPy (shapes change with every flake; eager JAX would compile each op anew).
    h4 = np.zeros((ncell, n, ncell, n), dtype=np.complex128)
    np.add.at(h4, (rows, slice(None), cols, slice(None)), np.asarray(hoppings.matrices)[which])
    h = h4.reshape(ncell * n, ncell * n)
    h = jnp.asarray(0.5 * (h + h.conj().T))  # exact Hermiticity (t(−R) = t(R)† only to round-off)

    lattice = np.asarray(hoppings.lattice, dtype=np.float64)
    r = (cells @ lattice)[:, None, :] + np.asarray(hoppings.positions)[None, :, :]
    r3 = np.zeros((ncell * n, 3))
    r3[:, :dim] = r.reshape(-1, dim)
    spin = model.spin_operators() if model is not None else None
    return Flake(
        hamiltonian=h,
        positions=jnp.asarray(r3),
        center=jnp.asarray(r3.mean(axis=0)),
        cell=jnp.asarray(np.repeat(cells, n, axis=0), dtype=jnp.int32),
        orbital=jnp.asarray(np.tile(np.arange(n), ncell), dtype=jnp.int32),
        orbital_spin=None if spin is None else jnp.asarray(spin, dtype=jnp.complex128),
        cell_volume=jnp.asarray(abs(np.linalg.det(lattice))),
        shape=shape,
    )


# --------------------------------------------------------------------------------------------------
# observables
# --------------------------------------------------------------------------------------------------
def _field_vector(field) -> Array:
    if field is None:
        return jnp.zeros(3)
    e = jnp.asarray(field, dtype=jnp.float64).reshape(-1)
    if e.shape[0] > 3:
        raise ValueError(f"the electric field must have at most 3 components, got shape {e.shape}.")
    return jnp.concatenate([e, jnp.zeros(3 - e.shape[0])])


def flake_hamiltonian(flake: Flake, field=None) -> Complex[Array, "N N"]:
    """H + e E·(r − r_c) (electron potential energy, e = 1); H itself when ``field`` is None."""
    if field is None:
        return flake.hamiltonian
    pot = (flake.positions - flake.center) @ _field_vector(field)
    return flake.hamiltonian + jnp.diag(pot.astype(jnp.complex128))


def flake_eigensystem(flake: Flake, field=None, *, degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL):
    """Eigenvalues (ascending) and eigenvectors (columns) of :func:`flake_hamiltonian`.

    Uses the degeneracy-safe :func:`qgeo_jax._linalg.eigh`: derivatives w.r.t. ``field`` are finite.
    """
    require_x64()
    return eigh(flake_hamiltonian(flake, field), degen_tol)


def _angular_operator(flake: Flake, hamiltonian) -> Complex[Array, "c N N"]:
    """(r × v)^c with v = i[H, r]: element-wise i H_ij (r_i × r_j)^c, r from the centroid.

    Only the components that can be non-zero are returned: z alone in 2D, all three in 3D.
    """
    r = flake.positions - flake.center
    comps = (2,) if flake.dim < 3 else (0, 1, 2)
    ops = []
    for c in comps:
        a, b = _PAIRS[c]
        cross = r[:, a, None] * r[None, :, b] - r[:, b, None] * r[None, :, a]
        ops.append(1j * hamiltonian * cross)
    return jnp.stack(ops)


@eqx.filter_jit
def _state_moments(flake: Flake, field, degen_tol):
    h = flake_hamiltonian(flake, field)
    energies, u = eigh(h, degen_tol)
    ops = _angular_operator(flake, h)
    per_state = jnp.real(jnp.sum(jnp.conj(u)[None] * (ops @ u[None]), axis=1))  # (c, N)
    comps = [2] if flake.dim < 3 else [0, 1, 2]
    moments = jnp.zeros((3, u.shape[1])).at[jnp.asarray(comps)].set(-0.5 * per_state)
    return energies, moments.T


def flake_state_moments(flake: Flake, field=None, *, degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL):
    r"""Energies E_n and orbital moments m_n = −(e/2)⟨ψ_n|r × v|ψ_n⟩ of every flake eigenstate.

    Returns ``(energies (N,), moments (N, 3))``; v = i[H, r] (ħ = 1), e = 1, electron charge −e.
    Each single moment depends on the origin only through ⟨ψ_n|v|ψ_n⟩ = 0, so it is
    origin-independent; r is measured from the centroid to keep round-off small.
    """
    require_x64()
    return _state_moments(flake, _field_vector(field), degen_tol)


def _mu_temperature(mu, temperature):
    mu = jnp.asarray(mu, dtype=jnp.float64)
    temperature = jnp.asarray(temperature, dtype=jnp.float64)
    return jnp.broadcast_arrays(mu, temperature)


def _occupations(energies, mu, temperature):
    temperature = check_temperature(temperature, fermi_surface=False)
    return fermi_dirac(energies, mu[..., None], temperature[..., None])


@eqx.filter_jit
def _orbital_magnetization(flake, field, mu, temperature, degen_tol):
    energies, moments = _state_moments(flake, field, degen_tol)
    f = _occupations(energies, mu, temperature)
    return jnp.einsum("...n,nc->...c", f, moments) / flake.area


def flake_orbital_magnetization(
    flake: Flake,
    mu,
    *,
    temperature=0.0,
    field=None,
    degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL,
) -> Float[Array, "... 3"]:
    r"""Orbital magnetization of a flake: the moment of its occupied states per area (volume).

    .. math:: \mathbf M = -\frac{e}{2A}\sum_n f_0(E_n)\,
              \langle ψ_n|\mathbf r\times\mathbf v|ψ_n\rangle,
              \qquad \mathbf v = i[H, \mathbf r]

    (ħ = e = 1, electron charge −e; A = ``flake.area``). It includes the edge currents and tends to
    the bulk M^O of :func:`qgeo_jax.orbital_magnetization` as O(1/L) for μ in the bulk gap
    (Ceresoli et al., PRB 74, 024408 (2006), doi:10.1103/PhysRevB.74.024408; Thonhauser et al.,
    PRL 95, 137205 (2005), doi:10.1103/PhysRevLett.95.137205). ``mu`` and ``temperature``
    broadcast; the output has their shape + (3,). ``field`` (E, length ≤ 3) adds the potential
    +e E·(r − r_c); ``jax.jacfwd`` w.r.t. it gives ∂M/∂E exactly (μ in a flake gap at T = 0).
    """
    require_x64()
    mu, temperature = _mu_temperature(mu, temperature)
    return _orbital_magnetization(flake, _field_vector(field), mu, temperature, degen_tol)


@eqx.filter_jit
def _spin_density(flake, field, mu, temperature, degen_tol):
    energies, u = eigh(flake_hamiltonian(flake, field), degen_tol)
    ub = u.reshape(flake.n_cells, flake.norb, -1)  # (cell, orbital, state): S acts on the orbital
    spins = jnp.real(jnp.einsum("cis,aij,cjs->sa", jnp.conj(ub), flake.orbital_spin, ub))
    f = _occupations(energies, mu, temperature)
    return jnp.einsum("...n,nc->...c", f, spins) / flake.area


def flake_spin_density(
    flake: Flake,
    mu,
    *,
    temperature=0.0,
    field=None,
    degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL,
) -> Float[Array, "... 3"]:
    r"""Spin density of a flake, Σ_n f_0(E_n) ⟨ψ_n|S|ψ_n⟩ / A (units ħ per length^dim).

    The spin magnetization is −g μ_B times this (cf. :func:`qgeo_jax.spin_magnetization`, the
    bulk limit). ``field`` adds +e E·(r − r_c) as in :func:`flake_orbital_magnetization`; the
    output has the broadcast shape of ``mu`` and ``temperature`` + (3,).
    """
    require_x64()
    if flake.orbital_spin is None:
        raise ValueError("flake_spin_density: the flake's model has no spin operators.")
    mu, temperature = _mu_temperature(mu, temperature)
    return _spin_density(flake, _field_vector(field), mu, temperature, degen_tol)


# --------------------------------------------------------------------------------------------------
# local markers (Bianco & Resta)
# --------------------------------------------------------------------------------------------------
def _marker_rows(flake: Flake, cells):
    """Orbital indices of the requested cells and the shape of the per-cell output."""
    if cells is None:
        return np.arange(flake.size), flake.shape
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, flake.dim)
    if np.any(cells < 0) or np.any(cells >= np.asarray(flake.shape)):
        raise ValueError(f"cells {cells.tolist()} lie outside the flake of shape {flake.shape}.")
    flat = np.ravel_multi_index(tuple(cells.T), flake.shape)
    rows = (flat[:, None] * flake.norb + np.arange(flake.norb)[None, :]).reshape(-1)
    return rows, (cells.shape[0],)


@eqx.filter_jit
def _marker_terms(flake: Flake, field, mu, rows, degen_tol, with_energy: bool):
    """Per-orbital Im⟨i|P r_a Q r_b P|i⟩ and Im⟨i|P r_a Q H Q r_b P − Q r_a P H P r_b Q|i⟩.

    Only the requested rows are formed, so the cost beyond the eigendecomposition is
    O(N² × rows): P = W U† with W = U diag(θ(μ − E)), and products with P go through (W, U†).
    Returns two arrays of shape μ.shape + (3, rows) (components out of the flake's plane are 0).
    """
    h = flake_hamiltonian(flake, field)
    energies, u = eigh(h, degen_tol)
    uh = jnp.conj(u.T)
    r = (flake.positions - flake.center).astype(u.dtype)
    comps = (2,) if flake.dim < 3 else (0, 1, 2)

    def one_mu(m):
        w = u * (energies < m).astype(u.real.dtype)[None, :]
        p_rows = w[rows] @ uh  # P[rows, :]
        p_cols = jnp.conj(p_rows.T)  # P[:, rows]
        apply_p = lambda x: w @ (uh @ x)  # P @ x
        chern = jnp.zeros((3, rows.shape[0]))
        energy = jnp.zeros((3, rows.shape[0]))
        for c in comps:
            a, b = _PAIRS[c]
            ra, rb = r[:, a], r[:, b]
            pa = p_rows * ra[None, :]  # (P r_a)[rows, :]
            pa_p = jnp.conj(apply_p(jnp.conj(pa.T)).T)  # (P r_a P)[rows, :]
            pa_q = pa - pa_p  # (P r_a Q)[rows, :]
            rb_p = rb[:, None] * p_cols  # (r_b P)[:, rows]
            pb_p = apply_p(rb_p)  # (P r_b P)[:, rows]
            qb_p = rb_p - pb_p  # (Q r_b P)[:, rows]
            chern = chern.at[c].set(jnp.imag(jnp.sum(pa_q * qb_p.T, axis=1)))
            if with_energy:
                qa_p = ra[rows, None] * p_rows - pa_p  # (Q r_a P)[rows, :]
                pb_q = p_cols * rb[rows][None, :] - pb_p  # (P r_b Q)[:, rows]
                lc = jnp.sum((pa_q @ h) * qb_p.T, axis=1)
                ic = jnp.sum((qa_p @ h) * pb_q.T, axis=1)
                energy = energy.at[c].set(jnp.imag(lc - ic))
        return chern, energy

    chern, energy = jax.vmap(one_mu)(mu.reshape(-1))
    return chern.reshape(mu.shape + chern.shape[1:]), energy.reshape(mu.shape + energy.shape[1:])


def _cell_sum(flake: Flake, per_orbital: Array, out_shape) -> Array:
    """(..., 3, rows) per-orbital values → (..., *out_shape, 3) sums per cell / cell volume."""
    lead = per_orbital.shape[:-2]
    x = per_orbital.reshape(lead + (3, -1, flake.norb)).sum(-1)
    x = jnp.moveaxis(x, -2, -1)
    return x.reshape(lead + tuple(out_shape) + (3,)) / flake.cell_volume


def local_chern_marker(
    flake: Flake, mu, *, cells=None, field=None, degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL
) -> Float[Array, "..."]:
    r"""Bianco–Resta local Chern marker of a 2D flake, summed per cell:

    .. math:: C(\mathbf R) = -\frac{4\pi}{A_{\rm cell}}\,{\rm Im}\sum_{i\in\mathbf R}
              \langle i|P x Q y P|i\rangle

    with P the projector on the states below ``mu`` (T = 0) and Q = 1 − P. In the interior of a
    flake it equals the Chern number C = (1/2π) ∫ Ω^{xy} of :func:`qgeo_jax.chern_number` (same
    sign convention: Ω^{xy} = −2 Im Σ_m x_nm y_mn). R. Bianco & R. Resta, PRB 84, 241106(R)
    (2011), doi:10.1103/PhysRevB.84.241106.

    ``cells`` (m, 2) integer cell indices restricts the work to those cells (output μ.shape + (m,));
    by default every cell is returned (output μ.shape + flake.shape).
    """
    require_x64()
    if flake.dim != 2:
        raise ValueError(f"local_chern_marker is defined for 2D flakes; this one is {flake.dim}D.")
    rows, out_shape = _marker_rows(flake, cells)
    mu = jnp.asarray(mu, dtype=jnp.float64)
    chern, _ = _marker_terms(flake, _field_vector(field), mu, jnp.asarray(rows), degen_tol, False)
    return -4 * jnp.pi * _cell_sum(flake, chern, out_shape)[..., 2]


def local_orbital_magnetization(
    flake: Flake, mu, *, cells=None, field=None, degen_tol: float = DEFAULT_FLAKE_DEGEN_TOL
) -> Float[Array, "... 3"]:
    r"""Bianco–Resta local marker of the orbital magnetization, summed per cell:

    .. math:: \mathfrak M^{c}(\mathbf R) = \frac{1}{A_{\rm cell}}\,{\rm Im}\sum_{i\in\mathbf R}
              \langle i|\,P r_a Q H Q r_b P − Q r_a P H P r_b Q − 2μ\,P r_a Q r_b P\,|i\rangle,
              \qquad (a, b, c) \text{ cyclic}

    (ħ = e = 1, electron charge −e, T = 0, P the projector on the states below ``mu``). It is the
    real-space form of the insulator formula M = −Im Σ_{n∈occ, m∉occ} (2μ − E_n − E_m) x_nm y_mn,
    which is Σ_occ ∫ [m_n + Ω_n (μ − E_n)] of :func:`qgeo_jax.orbital_magnetization` at T = 0
    rewritten with x_nm = i v_nm/(E_m − E_n). Every factor P r Q = P[r, Q] is a commutator, so the
    marker is local and origin independent; in the interior of a flake it converges to the bulk
    M^O exponentially in the distance to the edge (trivial and Chern insulators alike), much faster
    than the O(1/L) total moment of :func:`flake_orbital_magnetization`. R. Bianco & R. Resta,
    PRL 116, 087202 (2016), doi:10.1103/PhysRevLett.116.087202.

    ``cells`` (m, dim) integer cell indices restricts the work to those cells (cost O(N² m norb)
    beyond one eigendecomposition; output μ.shape + (m, 3)); by default every cell is returned
    (output μ.shape + flake.shape + (3,)). With ``field``, H includes +e E·(r − r_c), so the
    marker then measures from the local potential (a constant shift of H acts like a shift of μ).
    """
    require_x64()
    rows, out_shape = _marker_rows(flake, cells)
    mu = jnp.asarray(mu, dtype=jnp.float64)
    field = _field_vector(field)
    chern, energy = _marker_terms(flake, field, mu, jnp.asarray(rows), degen_tol, True)
    total = energy - 2 * mu[..., None, None] * chern
    return _cell_sum(flake, total, out_shape)
