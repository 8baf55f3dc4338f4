"""Matplotlib figures: bands coloured by geometry, maps over the Brillouin zone, responses vs μ.

matplotlib is an optional extra (``pip install qgeo_jax[notebooks]``): it is imported inside the
functions, never at package import. Every function builds a :class:`matplotlib.figure.Figure`
directly (no pyplot global state, works with any backend, including Agg on headless machines)
and returns it; pass ``ax=`` to draw into an existing axes instead.

Quantities (``color_by`` / ``quantity``), band-resolved, from :func:`qgeo_jax.band_geometry`:

* ``"berry_curvature"`` Ω_n (length²), ``"orbital_moment"`` m_n (e·energy·length²/ħ): vector
  component ``component`` (default "z");
* ``"spin"`` ⟨S⟩_n (ħ), component ``component``;
* ``"quantum_metric"`` g_n: the trace Σ_i g_n^{ii} (length²);
* ``"energy"`` E_n (maps only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._geometry import band_geometry
from .models._base import AbstractModel

_QUANTITIES = ("berry_curvature", "orbital_moment", "spin", "quantum_metric", "energy")
_COMPONENTS = {"x": 0, "y": 1, "z": 2}
_LABELS = {
    "berry_curvature": "Berry curvature Ω",
    "orbital_moment": "orbital moment m",
    "spin": "spin ⟨S⟩ (ħ)",
    "quantum_metric": "quantum metric tr g",
    "energy": "energy",
}


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "qgeo_jax.plotting needs matplotlib, an optional extra: pip install matplotlib "
            "(or qgeo_jax[notebooks])."
        ) from exc
    return Figure


def _new_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    Figure = _matplotlib()
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ------------------------------------------------------------------------------------------------
# k-paths
# ------------------------------------------------------------------------------------------------
class KPath(NamedTuple):
    """A piecewise-straight path through k-space.

    points: (N, dim) Cartesian k; distance: (N,) cumulative |Δk| (the plot's abscissa);
    ticks: distance of each corner; labels: the corner labels.
    """

    points: np.ndarray
    distance: np.ndarray
    ticks: np.ndarray
    labels: tuple[str, ...]


# Reduced coordinates (in units of the reciprocal vectors b1, b2 of lattice rows a1, a2).
HEXAGONAL_POINTS = {"Γ": (0.0, 0.0), "M": (0.5, 0.0), "K": (2 / 3, 1 / 3), "K'": (1 / 3, 2 / 3)}
SQUARE_POINTS = {"Γ": (0.0, 0.0), "X": (0.5, 0.0), "Y": (0.0, 0.5), "M": (0.5, 0.5)}


def k_path(
    model: AbstractModel,
    corners: Sequence,
    *,
    n: int = 200,
    reduced: bool | None = None,
    labels: Sequence[str] | None = None,
) -> KPath:
    """Path through ``corners``, ~``n`` points in total, spaced uniformly in |k|.

    ``corners`` are either labels of :data:`HEXAGONAL_POINTS` / :data:`SQUARE_POINTS` (chosen by the
    angle between the lattice vectors of a 2D model), ``(label, coords)`` pairs, or bare coordinate
    tuples. Coordinates are reduced (units of the reciprocal vectors) for lattice models and
    Cartesian (1/length) for continuum models unless ``reduced`` says otherwise. The hexagonal
    labels assume 60° between a1 and a2; with 120° use explicit coordinates.
    """
    if len(corners) < 2:
        raise ValueError("k_path needs at least two corners.")
    reduced = model.is_lattice if reduced is None else reduced
    if reduced and not model.is_lattice:
        raise ValueError(
            "reduced coordinates need a lattice model; give Cartesian corners for a continuum "
            "model."
        )
    table = _named_points(model)
    names, coords = [], []
    for c in corners:
        if isinstance(c, str):
            if c not in table:
                raise ValueError(
                    f"unknown point {c!r}; known: {sorted(table)} (or give (label, coords))."
                )
            names.append(c)
            coords.append(table[c])
            continue
        if len(c) == 2 and isinstance(c[0], str):
            names.append(c[0])
            coords.append(c[1])
            continue
        names.append("")
        coords.append(c)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape[1] != model.dim:
        raise ValueError(
            f"corners have {coords.shape[1]} coordinates but the model is {model.dim}D."
        )
    if reduced:
        coords = coords @ np.asarray(model.reciprocal())
    if labels is not None:
        if len(labels) != len(coords):
            raise ValueError(f"{len(labels)} labels for {len(coords)} corners.")
        names = list(labels)
    seg = np.linalg.norm(np.diff(coords, axis=0), axis=1)
    if not (seg > 0).all():
        raise ValueError("consecutive corners of the k-path coincide.")
    counts = np.maximum(2, np.round(n * seg / seg.sum()).astype(int))
    pts, dist = [], []
    start = 0.0
    for i, m in enumerate(counts):
        t = np.linspace(0.0, 1.0, m, endpoint=i == len(counts) - 1)
        pts.append(coords[i] + t[:, None] * (coords[i + 1] - coords[i]))
        dist.append(start + t * seg[i])
        start += seg[i]
    ticks = np.concatenate([[0.0], np.cumsum(seg)])
    return KPath(np.concatenate(pts), np.concatenate(dist), ticks, tuple(names))


def _named_points(model):
    if not model.is_lattice or model.dim != 2:
        return {"Γ": (0.0,) * model.dim} if model.is_lattice else {}
    a = np.asarray(model.lattice)
    cos = a[0] @ a[1] / np.linalg.norm(a[0]) / np.linalg.norm(a[1])
    if abs(cos - 0.5) < 1e-6 and abs(
        np.linalg.norm(a[0]) - np.linalg.norm(a[1])
    ) < 1e-9 * np.linalg.norm(a[0]):
        return HEXAGONAL_POINTS
    return SQUARE_POINTS if abs(cos) < 1e-9 else {"Γ": (0.0, 0.0)}


def high_symmetry_path(model: AbstractModel, *, n: int = 200, extent=None) -> KPath:
    """The default path of a model (what ``qgeo`` draws its band structure along).

    Lattice models, reduced coordinates: hexagonal 2D lattices (60° between a1 and a2) Γ–K–M–Γ;
    other 2D lattices Γ–X–M–Γ–Y with X = (½, 0), M = (½, ½), Y = (0, ½) (the square-lattice names;
    for an oblique lattice they are just those reduced points); 1D −X–Γ–X (X = ½); 3D Γ–X–M–Γ–R
    with X = (½,0,0), M = (½,½,0), R = (½,½,½). Continuum models: a line cut along k_x through
    Γ, from −k to k with k = ``extent`` or the model's ``k_cutoff`` (1/length).
    """
    if model.is_lattice:
        if model.dim == 1:
            corners = [("−X", (-0.5,)), ("Γ", (0.0,)), ("X", (0.5,))]
        elif model.dim == 2 and _named_points(model) is HEXAGONAL_POINTS:
            corners = ["Γ", "K", "M", "Γ"]
        elif model.dim == 2:
            pts = SQUARE_POINTS
            corners = [(c, pts[c]) for c in ("Γ", "X", "M", "Γ", "Y")]
        else:
            corners = [
                ("Γ", (0.0, 0.0, 0.0)),
                ("X", (0.5, 0.0, 0.0)),
                ("M", (0.5, 0.5, 0.0)),
                ("Γ", (0.0, 0.0, 0.0)),
                ("R", (0.5, 0.5, 0.5)),
            ]
        return k_path(model, corners, n=n, reduced=True)
    k = model.k_cutoff if extent is None else extent
    if k is None or not float(k) > 0:
        raise ValueError("a continuum model needs extent= (or a k_cutoff) for its line cut.")
    k = float(k)
    point = lambda x: (x,) + (0.0,) * (model.dim - 1)
    corners = [(f"−{k:.3g}", point(-k)), ("Γ", point(0.0)), (f"{k:.3g}", point(k))]
    return k_path(model, corners, n=n, reduced=False)


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
def band_quantity(model: AbstractModel, k, quantity: str, *, component: str = "z"):
    """E_n(k) (nk, n) and the band-resolved ``quantity`` (nk, n) at the Cartesian points ``k``."""
    if quantity not in _QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; choose one of {_QUANTITIES}.")
    if component not in _COMPONENTS:
        raise ValueError(f"component must be 'x', 'y' or 'z', got {component!r}.")
    if quantity == "spin" and model.spin_operators() is None:
        raise ValueError(
            f"color_by='spin' needs spin operators, but {type(model).__name__} has none."
        )
    c = _COMPONENTS[component]
    g = _geometry_batch(model, jnp.asarray(k, dtype=jnp.float64))
    if quantity == "energy":
        values = g.energies
    elif quantity == "quantum_metric":
        values = np.trace(np.asarray(g.quantum_metric), axis1=-2, axis2=-1)
    else:
        values = np.asarray(getattr(g, quantity))[..., c]
    return np.asarray(g.energies), np.asarray(values)


@eqx.filter_jit
def _geometry_batch(model, k):
    """band_geometry at every k: compiled once per model structure and number of points, for
    every quantity and component (selected afterwards), so several figures share one compile."""
    return jax.vmap(lambda kk: band_geometry(model, kk))(k)


def _symmetric_norm(values, vmax):
    from matplotlib.colors import Normalize

    vmax = float(np.max(np.abs(values))) if vmax is None else float(vmax)
    vmax = vmax if vmax > 0 else 1.0
    return Normalize(vmin=-vmax, vmax=vmax)


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def plot_bands(
    model: AbstractModel,
    path: KPath | Sequence,
    *,
    color_by: str | None = None,
    component: str = "z",
    bands=None,
    energy_window=None,
    cmap: str = "coolwarm",
    vmax=None,
    linewidth: float = 2.0,
    ax=None,
    figsize=(5.0, 4.0),
    energy_unit: str = "",
    clip_percentile: float | None = None,
):
    """Band structure along ``path`` (a :class:`KPath` or corners for :func:`k_path`).

    ``color_by`` (None, "berry_curvature", "orbital_moment", "spin", "quantum_metric") colours each
    band segment by that band-resolved quantity (diverging colour map centred on 0, clipped at
    ``vmax``, default max |value|). ``bands`` selects band indices; ``energy_window`` = (Emin, Emax)
    sets the y-range. ``clip_percentile`` (e.g. 98) sets ``vmax`` to that percentile of |value|
    when ``vmax`` is not given, so that one sharp peak (Ω near a small gap) does not wash out the
    colours everywhere else. Returns the Figure.
    """
    from matplotlib.collections import LineCollection

    path = path if isinstance(path, KPath) else k_path(model, path)
    fig, ax = _new_axes(ax, figsize)
    quantity = "energy" if color_by is None else color_by
    energies, values = band_quantity(model, path.points, quantity, component=component)
    idx = np.arange(energies.shape[1]) if bands is None else np.atleast_1d(np.asarray(bands))
    x = path.distance
    if color_by is None:
        for n in idx:
            ax.plot(x, energies[:, n], color="k", lw=linewidth)
    else:
        mids = 0.5 * (values[1:] + values[:-1])
        if vmax is None and clip_percentile is not None:
            vmax = float(np.percentile(np.abs(mids[:, idx]), clip_percentile)) or None
        norm = _symmetric_norm(mids[:, idx], vmax) if quantity != "quantum_metric" else None
        if norm is None:
            from matplotlib.colors import Normalize

            top = float(np.max(mids[:, idx])) if vmax is None else float(vmax)
            norm = Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
        lc = None
        for n in idx:
            seg = np.stack(
                [np.stack([x[:-1], energies[:-1, n]], -1), np.stack([x[1:], energies[1:, n]], -1)],
                1,
            )
            lc = LineCollection(
                seg,
                cmap=cmap if quantity != "quantum_metric" else "viridis",
                norm=norm,
                linewidths=linewidth,
            )
            lc.set_array(mids[:, n])
            ax.add_collection(lc)
        label = _LABELS[quantity] + (
            f" ({component})" if quantity in ("berry_curvature", "orbital_moment", "spin") else ""
        )
        fig.colorbar(lc, ax=ax, label=label)
    ax.set_xlim(x[0], x[-1])
    lo, hi = (
        (energies[:, idx].min(), energies[:, idx].max()) if energy_window is None else energy_window
    )
    pad = 0.03 * (hi - lo) if energy_window is None else 0.0
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(path.ticks, path.labels)
    for t in path.ticks[1:-1]:
        ax.axvline(t, color="0.7", lw=0.8)
    ax.set_ylabel(f"energy{f' ({energy_unit})' if energy_unit else ''}")
    return fig


def bz_grid(model: AbstractModel, mesh_shape, *, extent=None):
    """Cartesian grid for maps: (n1, n2, 2) points over the reciprocal cell centred on Γ (lattice
    models; reduced coordinates in [−½, ½)) or the square [−k_max, k_max]² (continuum models,
    k_max = ``extent`` or ``model.k_cutoff``)."""
    if model.dim != 2:
        raise ValueError(f"BZ maps are for 2D models; {type(model).__name__} is {model.dim}D.")
    n1, n2 = (
        (int(mesh_shape), int(mesh_shape)) if np.ndim(mesh_shape) == 0 else map(int, mesh_shape)
    )
    if model.is_lattice:
        f1 = (np.arange(n1) + 0.5) / n1 - 0.5
        f2 = (np.arange(n2) + 0.5) / n2 - 0.5
        frac = np.stack(np.meshgrid(f1, f2, indexing="ij"), -1)
        return frac @ np.asarray(model.reciprocal())
    k_max = model.k_cutoff if extent is None else extent
    if k_max is None:
        raise ValueError("a continuum model needs extent= (or a k_cutoff) for a map.")
    kx = np.linspace(-k_max, k_max, n1)
    ky = np.linspace(-k_max, k_max, n2)
    return np.stack(np.meshgrid(kx, ky, indexing="ij"), -1)


def plot_bz_map(
    model: AbstractModel,
    quantity: str,
    band,
    mesh_shape=(96, 96),
    *,
    component: str = "z",
    extent=None,
    cmap: str | None = None,
    vmax=None,
    ax=None,
    figsize=(5.0, 4.2),
    show_cell: bool = True,
):
    """Map of a band-resolved ``quantity`` over the Brillouin zone of a 2D model.

    ``band`` is a band index or a sequence of indices (their values are summed, e.g. all
    occupied bands). Lattice models are sampled on ``mesh_shape`` points of the reciprocal cell
    centred on Γ (drawn in Cartesian coordinates, so the cell is a parallelogram; its outline is
    drawn if ``show_cell``); continuum models on [−k_max, k_max]². Returns the Figure.
    """
    grid = bz_grid(model, mesh_shape, extent=extent)
    shape = grid.shape[:2]
    _, values = band_quantity(model, grid.reshape(-1, 2), quantity, component=component)
    idx = np.atleast_1d(np.asarray(band))
    nb = values.shape[1]
    if (idx < -nb).any() or (idx >= nb).any():
        raise ValueError(f"band index {band} out of range for {nb} bands.")
    field = values[:, idx].sum(axis=1).reshape(shape)
    fig, ax = _new_axes(ax, figsize)
    signed = quantity in ("berry_curvature", "orbital_moment", "spin")
    norm = _symmetric_norm(field, vmax) if signed else None
    cmap = cmap or ("RdBu_r" if signed else "viridis")
    mesh = ax.pcolormesh(grid[..., 0], grid[..., 1], field, cmap=cmap, norm=norm, shading="nearest")
    if model.is_lattice and show_cell:
        b = np.asarray(model.reciprocal())
        corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]]) @ b
        ax.plot(corners[:, 0], corners[:, 1], color="0.3", lw=0.8)
    label = _LABELS[quantity] + (f" ({component})" if signed else "")
    bands_txt = ", ".join(str(int(i)) for i in idx)
    fig.colorbar(mesh, ax=ax, label=f"{label}, band{'s' * (idx.size > 1)} {bands_txt}")
    ax.set_aspect("equal")
    ax.set_xlabel("$k_x$")
    ax.set_ylabel("$k_y$")
    return fig


def plot_vs_mu(
    mus,
    values,
    label: str = "",
    units: str = "",
    *,
    components=None,
    gaps=None,
    ax=None,
    figsize=(5.0, 3.6),
    mu_unit: str = "",
    **line_kwargs,
):
    """A response against chemical potential μ. ``values`` is (nμ,), (nμ, 3) (vectors: plots
    ``components`` such as ["z"], default those not identically zero) or (nμ, 3, 3) (tensors α^{ij}:
    ``components`` such as ["zx", "zy"], default those not identically zero). ``gaps`` is a list of
    (lo, hi) energy intervals shaded as band gaps (e.g. where the Středa slope is C e/h).
    Returns the Figure."""
    mus = np.asarray(mus, dtype=np.float64)
    vals = np.asarray(values)
    if vals.shape[0] != mus.shape[0]:
        raise ValueError(
            f"values have {vals.shape[0]} rows for {mus.shape[0]} chemical potentials."
        )
    fig, ax = _new_axes(ax, figsize)
    if vals.ndim == 1:
        ax.plot(mus, vals, label=label or None, **line_kwargs)
    elif vals.ndim in (2, 3) and vals.shape[1:] == (3,) * (vals.ndim - 1):
        if vals.ndim == 2:
            names = list("xyz")
        else:
            names = [a + b for a in "xyz" for b in "xyz"]
        flat = vals.reshape(vals.shape[0], -1)
        if components is None:
            comps = [c for i, c in enumerate(names) if np.any(flat[:, i] != 0)]
        else:
            comps = list(components)
        unknown = [c for c in comps if c not in names]
        if unknown:
            raise ValueError(f"unknown component(s) {unknown}; choose from {names}.")
        for c in comps or names[-1:]:
            ax.plot(mus, flat[:, names.index(c)], label=f"{label} {c}".strip(), **line_kwargs)
    else:
        raise ValueError(f"values must be (nμ,), (nμ, 3) or (nμ, 3, 3), got shape {vals.shape}.")
    ax.axhline(0.0, color="0.7", lw=0.8)
    if gaps:
        lo_mu, hi_mu = float(mus.min()), float(mus.max())
        pad = 0.02 * (hi_mu - lo_mu) if hi_mu > lo_mu else 0.05 * max(abs(lo_mu), 1.0)
        ax.set_xlim(lo_mu - pad, hi_mu + pad)
        first = True
        for lo, hi in gaps:
            lo, hi = max(float(lo), lo_mu - pad), min(float(hi), hi_mu + pad)
            if hi > lo:
                ax.axvspan(lo, hi, color="0.85", zorder=0, label="band gap" if first else None)
                first = False
    ax.set_xlabel(f"μ{f' ({mu_unit})' if mu_unit else ''}")
    ax.set_ylabel(f"{label}{f' ({units})' if units else ''}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    return fig
