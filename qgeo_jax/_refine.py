r"""Adaptive Fermi-surface refinement of a uniform Brillouin-zone mesh.

Fermi-surface responses (the extrinsic/Edelstein kinetic responses, anything with f0' = ∂f0/∂E)
have an integrand of width ~T in energy, i.e. ~T/|v| in k. A uniform mesh must resolve that width
everywhere, although only a thin shell around the Fermi surface contributes.
:func:`refine_fermi_surface`
keeps a coarse Monkhorst–Pack mesh and subdivides only the cells that can reach the Fermi window:

* every coarse point k_c is the centre of its cell (midpoint rule): fractional coordinates
  (i_a + s_a)/n_a ± 1/(2 n_a);
* the band energies are computed at the cell centres and at the cell corners (the corner grid is
  the same mesh shifted by half a step, so it costs one more eigenvalue pass); for every band the
  cell's energy range is [min, max] over its 2^d corners and its centre, widened by a curvature
  margin ``slack`` × (the spread of E over the corners, the centre and the 2·d neighbouring cell
  centres — the wider stencil catches saddle points, where centre and corners can coincide);
* a cell is refined when, for some band and some requested μ, that range comes within
  ``window`` · T of μ, i.e. f0'(E) can exceed ~e^{−window}/(4T) somewhere in the cell;
* a refined cell is replaced by the m^d midpoints of its sub-cells (``subdivisions`` = m), each with
  weight w_cell/m^d; an unrefined cell keeps its centre with the full weight w_cell.

The weights are therefore exact: they sum to 1/V_cell (the BZ integral of 1/(2π)^d), and on a
cell-by-cell basis the refined mesh is a composite midpoint rule:

.. math:: \int_{BZ}\frac{d^dk}{(2π)^d} F ≈ \sum_{c\ \text{coarse}} w_c F(k_c)
          + \sum_{c\ \text{refined}} \frac{w_c}{m^d}\sum_{s=1}^{m^d} F(k_{c,s}),
          \qquad w_c = \frac{1}{N V_\text{cell}}

(uniform mesh: H. J. Monkhorst and J. D. Pack, PRB 13, 5188 (1976), doi:10.1103/PhysRevB.13.5188;
adaptive refinement of the Fermi-surface region, cf. WannierBerri: S. S. Tsirkin, npj Comput.
Mater. 7, 33 (2021), doi:10.1038/s41524-021-00498-5). Inside the refined region the sub-mesh is
uniform, so it keeps the fast (exponential) convergence of equispaced sums for the smooth f0';
outside it the integrand is below ~e^{−window} of its peak. The result is an ordinary
:class:`qgeo_jax.ExplicitMesh`, usable by every function that takes a mesh. Mesh construction
is a numpy step outside jit (vectorised, no Python loop over k); the eigenvalue passes are jitted
and chunked.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._bz import DEFAULT_CHUNK, ExplicitMesh, MonkhorstPackMesh
from ._config import require_x64
from .models._base import AbstractModel

DEFAULT_WINDOW = 10.0
DEFAULT_SLACK = 0.5


@eqx.filter_jit
def _energies(model, mesh, chunk_size):
    """Band energies at every point of ``mesh`` (n_points padded to chunks, n_bands)."""

    def chunk(c):
        k, _ = mesh.chunk(c, chunk_size)
        return jax.vmap(lambda kk: jnp.linalg.eigvalsh(model.hamiltonian(kk)))(k)

    e = jax.lax.map(chunk, jnp.arange(mesh.num_chunks(chunk_size)))
    return e.reshape(-1, e.shape[-1])


def _grid_energies(model, mesh, chunk_size):
    e = np.asarray(_energies(model, mesh, min(chunk_size, mesh.size)))[: mesh.size]
    return e.reshape(mesh.shape + (e.shape[-1],))


def cell_energy_ranges(
    model: AbstractModel,
    mesh: MonkhorstPackMesh,
    *,
    slack: float = DEFAULT_SLACK,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Per cell and band, (lo, hi) of E_n over the cell: min/max over centre and 2^d corners,
    widened by ``slack`` × the spread over centre, corners and the 2·dim neighbouring centres.
    Arrays of shape mesh.shape + (n_bands,)."""
    dim = mesh.dim
    centre = _grid_energies(model, mesh, chunk_size)
    corner_mesh = MonkhorstPackMesh(
        shape=mesh.shape, shift=tuple(s - 0.5 for s in mesh.shift),
        reciprocal=mesh.reciprocal, cell_volume=mesh.cell_volume,
    )
    corner = _grid_energies(model, corner_mesh, chunk_size)
    # corner j of cell i sits at (i + j + s − 1/2)/n: the corner grid rolled by −j (periodic BZ).
    lo, hi = centre.copy(), centre.copy()
    for offs in itertools.product((0, 1), repeat=dim):
        rolled = np.roll(corner, shift=tuple(-o for o in offs), axis=tuple(range(dim)))
        lo, hi = np.minimum(lo, rolled), np.maximum(hi, rolled)
    # Curvature margin from a wider stencil (the 2·dim face-neighbour centres as well): at a saddle
    # point the centre and all corners can be equal while the band varies inside the cell.
    wlo, whi = lo.copy(), hi.copy()
    for axis in range(dim):
        for step in (1, -1):
            rolled = np.roll(centre, shift=step, axis=axis)
            wlo, whi = np.minimum(wlo, rolled), np.maximum(whi, rolled)
    spread = whi - wlo
    return lo - slack * spread, hi + slack * spread


def refine_fermi_surface(
    model: AbstractModel,
    mesh: MonkhorstPackMesh,
    *,
    mu,
    temperature,
    window: float = DEFAULT_WINDOW,
    subdivisions: int = 4,
    max_cells: int | None = None,
    slack: float = DEFAULT_SLACK,
    chunk_size: int = DEFAULT_CHUNK,
) -> ExplicitMesh:
    r"""A two-level mesh: the uniform ``mesh`` with its cells near the Fermi surface subdivided.

    Parameters
    ----------
    model : a lattice model.
    mesh : the coarse :class:`MonkhorstPackMesh` (``qgeo_jax.monkhorst_pack(model, shape)``).
    mu, temperature : every chemical potential (and temperature, broadcast) the mesh will be used
        for, in energy units. A cell is refined when some band's energy range over the cell comes
        within ``window`` · T of some μ.
    window : half-width of the Fermi window in units of T (default 10: f0' has decayed to
        ~e^{−10} ≈ 5e-5 of its peak outside).
    subdivisions : m, the refined cells get m^dim sub-cells (midpoint rule).
    max_cells : optional cap on the number of refined cells (a memory/time budget); the cells whose
        energy range is closest to the window (in units of T) are kept.
    slack : curvature margin: each cell's energy range is widened by ``slack`` × its spread.

    Returns an :class:`~qgeo_jax.ExplicitMesh` (float64 points and weights for ∫ d^dk/(2π)^d)
    whose weights sum exactly to those of ``mesh`` (1/V_cell), every coarse cell's weight split
    evenly among its sub-points. Use it with any response, e.g.
    ``kinetic_magnetization(model, refine_fermi_surface(model, mp, mu=mu, temperature=T), ...)``.
    The refinement targets Fermi-surface integrands (f0'); Fermi-sea integrands (f0 terms)
    remain as accurate as on the coarse mesh for their smooth part.
    """
    require_x64()
    if not isinstance(mesh, MonkhorstPackMesh):
        raise TypeError(
            "refine_fermi_surface refines a uniform mesh (qgeo_jax.monkhorst_pack), got "
            f"{type(mesh).__name__}."
        )
    m = int(subdivisions)
    if m < 1:
        raise ValueError(f"subdivisions must be a positive integer, got {subdivisions!r}.")
    if not window > 0:
        raise ValueError(f"window must be > 0 (units of the temperature), got {window!r}.")
    mu_arr, t_arr = np.broadcast_arrays(
        np.asarray(mu, dtype=np.float64), np.asarray(temperature, dtype=np.float64)
    )
    mu_arr, t_arr = mu_arr.ravel(), t_arr.ravel()
    if mu_arr.size == 0 or not np.all(np.isfinite(mu_arr)):
        raise ValueError("mu must be finite (at least one value).")
    if not np.all(np.isfinite(t_arr)) or np.any(t_arr <= 0):
        raise ValueError(
            "refine_fermi_surface needs temperature > 0 (the Fermi window is window·T wide)."
        )
    dim = mesh.dim
    lo, hi = cell_energy_ranges(model, mesh, slack=slack, chunk_size=chunk_size)
    # distance (in units of T) of each cell-band energy interval from each μ; 0 when μ is inside.
    # Loop over μ (few values), vectorised over cells and bands.
    dist = np.full(mesh.shape, np.inf)
    for mu_i, t_i in zip(mu_arr, t_arr, strict=True):
        gap = np.maximum(np.maximum(lo - mu_i, mu_i - hi), 0.0) / t_i
        dist = np.minimum(dist, gap.min(axis=-1))
    selected = (dist < window).ravel()
    if max_cells is not None and selected.sum() > max_cells:
        order = np.argsort(dist.ravel(), kind="stable")[: int(max_cells)]
        selected = np.zeros_like(selected)
        selected[order] = True
    n = np.asarray(mesh.shape)
    shift = np.asarray(mesh.shift)
    idx = np.stack(np.unravel_index(np.arange(mesh.size), mesh.shape), axis=-1)  # (N, dim)
    centres = (idx + shift) / n  # fractional
    w_cell = 1.0 / (mesh.size * float(np.asarray(mesh.cell_volume)))
    keep = centres[~selected]
    # sub-cell midpoints, as offsets from the cell centre in units of one coarse step
    grid = np.stack(np.meshgrid(*[np.arange(m)] * dim, indexing="ij"), -1).reshape(-1, dim)
    sub = (grid + 0.5) / m - 0.5
    fine = (centres[selected][:, None, :] + sub[None, :, :] / n).reshape(-1, dim)
    frac = np.concatenate([keep, fine], axis=0)
    weights = np.concatenate([np.full(len(keep), w_cell), np.full(len(fine), w_cell / m**dim)])
    points = frac @ np.asarray(mesh.reciprocal, dtype=np.float64)
    return ExplicitMesh(points=jnp.asarray(points), weights=jnp.asarray(weights))


def refinement_summary(mesh: MonkhorstPackMesh, refined: ExplicitMesh, subdivisions: int) -> dict:
    """Counts for reports: coarse points, refined cells, total points of the refined mesh."""
    cells = (refined.size - mesh.size) // (subdivisions**mesh.dim - 1) if subdivisions > 1 else 0
    return dict(coarse=mesh.size, refined_cells=int(cells), points=int(refined.size))


__all__ = ["refine_fermi_surface", "cell_energy_ranges", "refinement_summary"]
