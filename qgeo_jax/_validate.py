r"""Input validation and numerical honesty.

Two levels of checks (the pattern of ``diffrax``): problems visible from Python values (a model
whose H(k) is not Hermitian, NaN parameters, a 3D mesh for a 2D model, T < 0) raise ``ValueError``
that names the offending value and the fix, *before* anything is traced; when the values are
tracers (inside ``jit``, ``grad``, ``vmap``, a sweep) the value checks become ``equinox.error_if``,
which costs a few scalar comparisons and fails at run time with the same message.

Checked once per model object (cached by identity, so repeated calls cost nothing): finite array
fields, H(k) square, Hermitian and finite at a few fixed pseudo-random k, spin operators of shape
(3, n, n), finite and Hermitian. Nothing here changes a result.

Numerical honesty:

* :func:`chern_report` (also ``chern_number(..., report=True)``) returns a :class:`ChernResult`:
  both routes (Kubo and Fukui–Hatsugai plaquettes), the nearest integer, the deviation from it, the
  minimum *direct* gap between the band set and the other bands found on the mesh and where, the
  number of near-degenerate mesh points, and ``is_quantized`` — instead of an integer that may be
  wrong where the gap closes or the mesh is too coarse.
* :func:`converged` evaluates a quantity on a mesh and on the mesh refined ``factor`` times and
  returns both with |Δ|, an estimate of the discretisation error of the coarse value.
* :func:`check_inputs` is a preflight: all of the above checks plus the band edges over the mesh
  and a :class:`QgeoWarning` for chemical potentials outside all bands.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .models._base import AbstractModel

#: H(k) counts as Hermitian when max|H − H†| ≤ this × max(1, max|H|) (float64 round-off is ~1e-16).
HERMITIAN_RTOL = 1e-10
#: Fewest k-points per reciprocal axis for which a lattice Chern number is computed at all.
MIN_CHERN_POINTS = 4
#: Default tolerance of :class:`ChernResult`: quantized when both routes are this close to an int.
CHERN_TOL = 1e-3
_N_PROBES = 3


class QgeoWarning(UserWarning):
    """A result may be meaningless (e.g. μ outside every band); the computation still ran."""


class InvalidValueError(ValueError, eqx.EquinoxRuntimeError):
    """A value check that failed on concrete inputs, raised in Python before JAX runs.

    A ``ValueError``, and also an ``equinox.EquinoxRuntimeError``: the class the same check raises
    at run time when the value is traced, so one ``except`` clause catches both.
    """


# --- helpers --------------------------------------------------------------------------------------
def is_concrete(tree) -> bool:
    """True when no array leaf of ``tree`` is a JAX tracer (values can be inspected in Python)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def error_if(x, pred, message: str):
    """``equinox.error_if`` that raises a plain ``ValueError`` when ``pred`` is already known.

    Eagerly, ``eqx.error_if`` raises an ``EquinoxRuntimeError`` wrapped in a long note about JIT
    stacks; for concrete values the user deserves a one-line ``ValueError`` instead.
    """
    if is_concrete(pred):
        if bool(np.any(np.asarray(pred))):
            raise InvalidValueError(message)
        return x
    return eqx.error_if(x, pred, message)


def check_tau(tau, needed_by: str):
    """The relaxation time τ as a float64 array, checked finite and > 0 (also under jit).

    ``needed_by`` names what needs it in the error for ``tau=None`` (e.g. "mechanism='extrinsic'").
    """
    if tau is None:
        raise ValueError(
            f"{needed_by} needs the relaxation time tau > 0 (units ħ/energy), got tau=None."
        )
    tau = jnp.asarray(tau, dtype=jnp.float64)
    bad = jnp.any(~(tau > 0)) | jnp.any(~jnp.isfinite(tau))
    return error_if(tau, bad, "the relaxation time tau must be finite and > 0 (units ħ/energy).")


def _field_name(model, path) -> str:
    return type(model).__name__ + jax.tree_util.keystr(path)


def _fmt_k(k) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in np.asarray(k).ravel()) + ")"


# --- models ---------------------------------------------------------------------------------------
_checked: dict[int, weakref.ref] = {}


def _forget(key):
    _checked.pop(key, None)


def _probe_points(model) -> np.ndarray:
    """A few fixed, generic wavevectors (no high-symmetry point, same on every run)."""
    frac = np.random.default_rng(0x51CE).uniform(0.05, 0.95, size=(_N_PROBES, model.dim))
    if model.is_lattice:
        return frac @ np.asarray(model.reciprocal())
    radius = model.k_cutoff if model.k_cutoff else 1.0
    return (2 * frac - 1) * radius / np.sqrt(model.dim)


@eqx.filter_jit
def _sample_hamiltonians(model, ks):
    return jax.vmap(model.hamiltonian)(ks)


def check_model(model):
    """Validate a model and return it (with run-time checks attached when it is traced).

    Concrete models: every inexact array field finite; H(k) square, finite and Hermitian at a few
    generic k; spin operators (if any) of shape (3, n, n), finite and Hermitian. Done once per model
    object. Traced models (inside jit/grad/vmap): the finiteness of the fields is checked at run
    time with ``equinox.error_if``; H(k) itself is not sampled.
    """
    if not isinstance(model, AbstractModel):
        raise TypeError(
            f"expected a qgeo_jax model (a subclass of qgeo_jax.models.AbstractModel), got "
            f"{type(model).__name__}; wrap a function H(k) with qgeo_jax.models.from_function."
        )
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))[0]
    if not is_concrete(model):
        traced = [x for _, x in leaves if isinstance(x, jax.core.Tracer)]
        if traced:
            bad = jnp.any(jnp.stack([~jnp.all(jnp.isfinite(x)) for x in traced]))
            # Attach the check to the traced leaves only (other leaves keep their Python types).
            dyn, rest = eqx.partition(model, lambda x: isinstance(x, jax.core.Tracer))
            msg = f"{type(model).__name__}: a model parameter is NaN or inf."
            model = eqx.combine(eqx.error_if(dyn, bad, msg), rest)
        return model
    key = id(model)
    ref = _checked.get(key)
    if ref is not None and ref() is model:
        return model
    for path, x in leaves:
        arr = np.asarray(x)
        if not np.all(np.isfinite(arr)):
            bad = arr.ravel()[~np.isfinite(arr.ravel())][0]
            raise InvalidValueError(
                f"{_field_name(model, path)} contains {bad} (model parameters must be finite); "
                "fix the value passed to the constructor or the step that produced it."
            )
    _check_hamiltonian(model)
    try:
        _checked[key] = weakref.ref(model, lambda _r, key=key: _forget(key))
    except TypeError:  # not weak-referenceable: check again next time (correct, only slower)
        pass
    return model


def _check_hamiltonian(model) -> None:
    name = type(model).__name__
    ks = jnp.asarray(_probe_points(model))
    h = np.asarray(_sample_hamiltonians(model, ks))
    if h.ndim != 3 or h.shape[1] != h.shape[2]:
        raise ValueError(
            f"{name}.hamiltonian(k) must return a square (n, n) matrix, got {h.shape[1:]}."
        )
    if not np.all(np.isfinite(h)):
        i = int(np.argmax(~np.isfinite(h).all(axis=(1, 2))))
        raise ValueError(
            f"{name}: H(k) contains NaN or inf at k = {_fmt_k(ks[i])}; check the model parameters "
            "and divisions in hamiltonian(k)."
        )
    err = np.abs(h - np.conj(np.swapaxes(h, 1, 2))).max(axis=(1, 2))
    scale = max(1.0, float(np.abs(h).max()))
    i = int(np.argmax(err))
    if err[i] > HERMITIAN_RTOL * scale:
        raise ValueError(
            f"{name}: H(k) is not Hermitian: max |H − H†| = {err[i]:.3g} (|H| up to {scale:.3g}) "
            f"at k = {_fmt_k(ks[i])}. Bloch Hamiltonians must be Hermitian: when H is built from "
            "hoppings, add the Hermitian conjugate (H + H†), and keep on-site energies real."
        )
    s = model.spin_operators()
    if s is None:
        return
    s = np.asarray(s)
    n = h.shape[-1]
    if s.shape != (3, n, n):
        raise ValueError(
            f"{name}: spin_operators() has shape {s.shape} but H(k) is {n}×{n}; "
            f"expected (3, {n}, {n}) (S_x, S_y, S_z in the orbital basis, units of ħ)."
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name}: spin operators contain NaN or inf.")
    serr = float(np.abs(s - np.conj(np.swapaxes(s, 1, 2))).max())
    if serr > HERMITIAN_RTOL * max(1.0, float(np.abs(s).max())):
        raise ValueError(f"{name}: spin operators are not Hermitian (max |S − S†| = {serr:.3g}).")


def check_real_finite(name: str, values, what: str = "values") -> np.ndarray | None:
    """Model-constructor helper: concrete ``values`` must be real and finite (returns them as a
    float64 array); traced values pass through unchanged (returns ``None``)."""
    if not is_concrete(values):
        return None
    arr = np.asarray(values)
    if np.iscomplexobj(arr):
        if np.any(arr.imag != 0):
            raise ValueError(
                f"{name}: {what} must be real (H is Hermitian, so its diagonal is real); "
                f"got {arr!r}."
            )
        arr = arr.real
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: {what} must be finite, got {arr!r}.")
    return arr


# --- meshes, μ and T ------------------------------------------------------------------------------
def check_mesh(model, mesh) -> None:
    """The mesh must match the model: dimension, and for lattice meshes the same reciprocal cell."""
    from ._bz import MonkhorstPackMesh

    if mesh.dim != model.dim:
        raise ValueError(
            f"the mesh is {mesh.dim}D but {type(model).__name__} is {model.dim}D; build the mesh "
            "from this model (qgeo_jax.monkhorst_pack(model, shape) or continuum_mesh(model, ...))."
        )
    if isinstance(mesh, MonkhorstPackMesh):
        if not model.is_lattice:
            raise ValueError(
                f"{type(model).__name__} is a continuum model but the mesh is a Brillouin-zone "
                "(Monkhorst–Pack) mesh; use qgeo_jax.continuum_mesh(model, k_max=..., n=...)."
            )
        # A float32 mesh (qgeo_jax._precision.cast_precision) stores b_i rounded to float32.
        rtol = 1e-6 if mesh.reciprocal.dtype == np.float32 else 1e-10
        if is_concrete((mesh, model)) and not np.allclose(
            np.asarray(mesh.reciprocal), np.asarray(model.reciprocal()), rtol=rtol, atol=rtol * 1e-2
        ):
            raise ValueError(
                f"the mesh was built for a different lattice than {type(model).__name__}'s; "
                "rebuild it with qgeo_jax.monkhorst_pack(model, shape)."
            )


def check_chern_mesh(model, mesh) -> None:
    """A lattice Chern number needs a 2D lattice model and ≥ MIN_CHERN_POINTS points per axis."""
    from ._bz import MonkhorstPackMesh

    if not isinstance(mesh, MonkhorstPackMesh) or model.dim != 2 or not model.is_lattice:
        raise ValueError(
            "chern_number needs a 2D lattice model and a qgeo_jax.monkhorst_pack mesh "
            f"(got {type(model).__name__}, {model.dim}D, and a {type(mesh).__name__})."
        )
    check_mesh(model, mesh)
    if min(mesh.shape) < MIN_CHERN_POINTS:
        raise ValueError(
            f"a Chern number on a {'×'.join(map(str, mesh.shape))} mesh is meaningless: use at "
            f"least {MIN_CHERN_POINTS} points per axis, and enough to resolve the smallest gap "
            "(typically 30 × 30 or more; chern_number(..., report=True) says whether it is)."
        )


def _as_float_array(x, name: str):
    try:
        return jnp.asarray(x, dtype=jnp.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a real number or an array of real numbers, got {x!r}."
        ) from None


def check_mu_temperature(mu, temperature, *, fermi_surface: bool = False):
    """μ and T as broadcast float64 arrays; clear errors for NaN μ, T < 0, T = 0 at a Fermi surface.

    Concrete values raise :class:`InvalidValueError` (a ``ValueError``) here; traced μ gets an
    ``error_if`` (T keeps the one of :func:`qgeo_jax._occupation.check_temperature`).
    """
    if isinstance(mu, str) or isinstance(temperature, str):
        which = "mu" if isinstance(mu, str) else "temperature"
        raise ValueError(
            f"{which} must be numeric (energy units, k_B = 1), got the string "
            f"{mu if which == 'mu' else temperature!r}."
        )
    mu = _as_float_array(mu, "mu")
    temperature = _as_float_array(temperature, "temperature")
    try:
        mu, temperature = jnp.broadcast_arrays(mu, temperature)
    except ValueError:
        raise ValueError(
            f"mu has shape {mu.shape} and temperature {temperature.shape}: they must broadcast "
            "against each other (for a μ × T grid use mu[:, None] and temperature[None, :])."
        ) from None
    mu = error_if(mu, ~jnp.all(jnp.isfinite(mu)), "the chemical potential mu must be finite.")
    if is_concrete(temperature):
        t = np.asarray(temperature)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            bad = t.ravel()[~(np.isfinite(t.ravel()) & (t.ravel() >= 0))][0]
            raise InvalidValueError(
                f"temperature must be finite and >= 0 (energy units, k_B = 1), got {bad}."
            )
        if fermi_surface and np.any(t <= 0):
            raise InvalidValueError(
                "this Fermi-surface quantity needs temperature > 0 (f0' is a delta function at "
                "T = 0); use a small positive T, e.g. a few times the mesh's energy resolution."
            )
    return mu, temperature


# --- band edges and the preflight -----------------------------------------------------------------
@eqx.filter_jit
def _band_edges(model, mesh, chunk_size):
    def chunk(c):
        k, w = mesh.chunk(c, chunk_size)
        e = jax.vmap(lambda kk: jnp.linalg.eigvalsh(model.hamiltonian(kk)))(k)
        used = (w > 0)[:, None]
        return jnp.min(jnp.where(used, e, jnp.inf), 0), jnp.max(jnp.where(used, e, -jnp.inf), 0)

    lo, hi = jax.lax.map(chunk, jnp.arange(mesh.num_chunks(chunk_size)))
    return jnp.stack([jnp.min(lo, 0), jnp.max(hi, 0)], axis=-1)


def band_edges(model, mesh, *, chunk_size: int = 256) -> np.ndarray:
    """(n_bands, 2): minimum and maximum of every band over the mesh points (energy units)."""
    return np.asarray(_band_edges(model, mesh, min(chunk_size, mesh.size)))


def mu_outside_bands(mu, edges) -> list[str]:
    """Messages for every μ below or above all bands of ``edges`` (see :func:`band_edges`)."""
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64)).ravel()
    bottom, top = float(np.min(edges[:, 0])), float(np.max(edges[:, 1]))
    out = []
    below, above = mu[mu < bottom], mu[mu > top]
    if below.size:
        out.append(
            f"mu = {', '.join(f'{x:g}' for x in below[:5])}{' ...' if below.size > 5 else ''} lies "
            f"below every band (bottom {bottom:.6g}): all bands are empty there and the responses "
            "are zero or exponentially small."
        )
    if above.size:
        out.append(
            f"mu = {', '.join(f'{x:g}' for x in above[:5])}{' ...' if above.size > 5 else ''} lies "
            f"above every band (top {top:.6g}): all bands are filled there (a model with finitely "
            "many bands has no Fermi surface above its top band)."
        )
    return out


@dataclasses.dataclass(frozen=True)
class InputReport:
    """What :func:`check_inputs` found: band edges over the mesh, and the warnings it issued."""

    band_edges: np.ndarray
    warnings: tuple[str, ...]


def check_inputs(model, mesh, *, mu=None, temperature=None, chunk_size: int = 256) -> InputReport:
    """Preflight before a long run: every check of the response functions, plus one pass over the
    mesh for the band edges, with a :class:`QgeoWarning` for each μ outside all bands."""
    model = check_model(model)
    check_mesh(model, mesh)
    if mu is not None or temperature is not None:
        check_mu_temperature(0.0 if mu is None else mu, 0.0 if temperature is None else temperature)
    edges = band_edges(model, mesh, chunk_size=chunk_size)
    found = tuple(mu_outside_bands(mu, edges)) if mu is not None else ()
    for text in found:
        warnings.warn(text, QgeoWarning, stacklevel=2)
    return InputReport(band_edges=edges, warnings=found)


# --- Chern numbers that say whether they are quantized --------------------------------------------
@eqx.filter_jit
def _direct_gap(model, mesh, in_set, tol, chunk_size):
    """Per chunk: min over k of the direct gap between the band set and the rest, its k, and the
    number of k with a gap below ``tol``."""
    from ._linalg import eigh

    cross = in_set[:, None] & ~in_set[None, :]

    def chunk(c):
        k, w = mesh.chunk(c, chunk_size)
        e = jax.vmap(lambda kk: eigh(model.hamiltonian(kk))[0])(k)
        diff = jnp.abs(e[:, :, None] - e[:, None, :])
        gap = jnp.min(jnp.where(cross[None], diff, jnp.inf), axis=(1, 2))
        gap = jnp.where(w > 0, gap, jnp.inf)
        i = jnp.argmin(gap)
        return gap[i], k[i], jnp.sum(gap < tol)

    return jax.lax.map(chunk, jnp.arange(mesh.num_chunks(chunk_size)))


def direct_gap(model, mesh, bands, *, tol: float = 1e-5, chunk_size: int = 256):
    """Minimum direct gap min_k min_{n∈bands, m∉bands} |E_n(k) − E_m(k)| over the mesh.

    Returns ``(gap, k_at_min, n_below_tol)``; ``gap = inf`` when ``bands`` holds every band.
    """
    from ._responses import _band_mask

    in_set = jnp.asarray(_band_mask(model, bands) > 0)
    g, k, n = _direct_gap(model, mesh, in_set, tol, min(chunk_size, mesh.size))
    g, k, n = np.asarray(g), np.asarray(k), np.asarray(n)
    i = int(np.argmin(g))
    return float(g[i]), k[i], int(n.sum())


@dataclasses.dataclass(frozen=True)
class ChernResult:
    """A Chern number with the evidence needed to trust it (see :func:`chern_report`).

    Attributes: ``value`` (unrounded, the requested method), ``method``, ``kubo`` and
    ``plaquette`` (both routes; ``plaquette`` is ``None`` on a shifted mesh), ``nearest`` (integer
    nearest to ``value``), ``deviation`` (max over the routes of |route − nearest|), ``min_gap``
    (smallest direct gap between the band set and the other bands on the mesh, energy units) and
    ``min_gap_k`` (where), ``near_degenerate_points`` (mesh points where that gap is below
    ``gap_tol``: there the band set is not separated and the Kubo formula drops terms), ``tol``,
    ``gap_tol``, ``mesh_shape``, ``is_quantized`` (deviation ≤ tol and no near-degenerate point).
    ``float(result)`` is ``value``; there is deliberately no ``int()``: use ``nearest`` after
    checking ``is_quantized``.
    """

    value: float
    method: str
    kubo: float
    plaquette: float | None
    nearest: int
    deviation: float
    min_gap: float
    min_gap_k: np.ndarray
    near_degenerate_points: int
    tol: float
    gap_tol: float
    mesh_shape: tuple[int, ...]
    is_quantized: bool

    def __float__(self) -> float:
        return self.value

    @property
    def reason(self) -> str:
        """Why the result is not quantized ('' when it is)."""
        parts = []
        if self.near_degenerate_points:
            parts.append(
                f"the band set touches another band (direct gap < {self.gap_tol:g}) at "
                f"{self.near_degenerate_points} mesh point(s), smallest gap {self.min_gap:.3g} at "
                f"k = {_fmt_k(self.min_gap_k)}"
            )
        if self.deviation > self.tol:
            routes = f"Kubo {self.kubo:+.6f}" + (
                f", plaquette {self.plaquette:+.6f}" if self.plaquette is not None else ""
            )
            parts.append(
                f"{routes}: {self.deviation:.3g} away from the integer {self.nearest} "
                f"(tolerance {self.tol:g}); the gap closes or the "
                f"{'×'.join(map(str, self.mesh_shape))} mesh is too coarse for it"
            )
        return "; ".join(parts)

    def __str__(self) -> str:
        head = f"C = {self.value:+.6f} ({self.method})"
        if self.is_quantized:
            return (
                f"{head}, quantized: {self.nearest} (deviation {self.deviation:.2g}, "
                f"min direct gap {self.min_gap:.4g})"
            )
        return f"{head}, NOT quantized: {self.reason}"


def chern_report(
    model,
    mesh,
    bands,
    *,
    method: str = "kubo",
    tol: float = CHERN_TOL,
    gap_tol: float | None = None,
    degen_tol: float = 1e-8,
    chunk_size: int = 256,
) -> ChernResult:
    """Chern number of ``bands`` by both routes, with the minimum direct gap and a quantized flag.

    The Kubo integral C = (1/2π) Σ_{n∈bands} ∫ Ω_n^{xy} (Xiao, Chang, Niu, RMP 82, 1959 (2010),
    doi:10.1103/RevModPhys.82.1959) and the Fukui–Hatsugai–Suzuki plaquette sum (J. Phys. Soc. Jpn.
    74, 1674 (2005), doi:10.1143/JPSJ.74.1674) agree with one integer only when the band set is
    separated from the others by a direct gap everywhere and the mesh resolves it. The plaquette
    sum is an integer even where the gap closes, so rounding it can give a wrong integer silently;
    here the result is flagged instead. ``gap_tol`` (energy units, default max(1e3·degen_tol, 1e-6))
    is the gap below which a mesh point counts as near-degenerate. Needs concrete values (not
    inside jit); dimensionless.
    """
    from ._chern import chern_number

    if not is_concrete(model):
        raise ValueError(
            "chern_number(..., report=True) needs concrete values; call it outside jit/grad."
        )
    if method not in ("kubo", "plaquette"):
        raise ValueError(f"unknown Chern method {method!r}; use 'kubo' or 'plaquette'.")
    unshifted = all(s == 0 for s in mesh.shift)
    if method == "plaquette" and not unshifted:
        raise ValueError("the plaquette Chern number needs an unshifted mesh (shift=0).")
    gap_tol = max(1e3 * degen_tol, 1e-6) if gap_tol is None else float(gap_tol)
    common = dict(degen_tol=degen_tol, chunk_size=chunk_size)
    kubo = float(chern_number(model, mesh, bands, method="kubo", **common))
    plaq = None
    if unshifted:  # on a shifted mesh only the Kubo route is available
        plaq = float(chern_number(model, mesh, bands, method="plaquette", **common))
    value = plaq if method == "plaquette" else kubo
    nearest = int(round(value))
    deviation = max(abs(r - nearest) for r in (kubo, plaq) if r is not None)
    gap, k_gap, n_near = direct_gap(model, mesh, bands, tol=gap_tol, chunk_size=chunk_size)
    return ChernResult(
        value=value,
        method=method,
        kubo=kubo,
        plaquette=plaq,
        nearest=nearest,
        deviation=float(deviation),
        min_gap=gap,
        min_gap_k=k_gap,
        near_degenerate_points=n_near,
        tol=float(tol),
        gap_tol=gap_tol,
        mesh_shape=tuple(mesh.shape),
        is_quantized=bool(deviation <= tol and n_near == 0),
    )


# --- convergence by mesh refinement ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Convergence:
    """A quantity on a mesh and on the mesh refined ``factor`` times (see :func:`converged`).

    ``value`` is the refined (more accurate) result, ``coarse`` the other one, ``delta`` =
    |value − coarse| elementwise (same pytree), ``max_delta`` its maximum, ``scale`` = max|value|,
    ``relative`` = max_delta / scale (inf when scale is 0 and delta is not), ``shapes`` =
    (coarse, fine).
    For an integrand converging faster than the mesh step (smooth, periodic: exponentially),
    ``delta`` is the error of ``coarse`` and bounds the error of ``value``.
    """

    value: Any
    coarse: Any
    delta: Any
    max_delta: float
    scale: float
    relative: float
    shapes: tuple[tuple[int, ...], tuple[int, ...]]

    def is_converged(self, *, rtol: float = 1e-6, atol: float = 0.0) -> bool:
        """max|Δ| ≤ atol + rtol · max|value|."""
        return self.max_delta <= atol + rtol * self.scale


def converged(
    fn: Callable,
    model,
    shape,
    *,
    factor: int = 2,
    shift=None,
    k_max: float | None = None,
    kind: str = "polar",
    **kwargs,
) -> Convergence:
    """Evaluate ``fn(model, mesh, **kwargs)`` on ``shape`` and on ``factor × shape``; report |Δ|.

    Lattice models use ``monkhorst_pack(model, shape, shift=shift)``, continuum models
    ``continuum_mesh(model, k_max=k_max, n=shape, kind=kind)``. Example::

        c = qgeo_jax.converged(qgeo_jax.orbital_magnetization, model, (40, 40), mu=mus)
        c.value, c.max_delta   # result on 80 × 80, and its change from 40 × 40
    """
    from ._bz import continuum_mesh, monkhorst_pack

    if int(factor) != factor or factor < 2:
        raise ValueError(f"converged: factor must be an integer >= 2, got {factor!r}.")
    coarse_shape = tuple(int(n) for n in np.atleast_1d(shape))
    fine_shape = tuple(int(factor) * n for n in coarse_shape)

    def mesh_of(s):
        if model.is_lattice:
            return monkhorst_pack(model, s, shift=shift)
        return continuum_mesh(model, k_max=k_max, n=s if len(s) > 1 else s[0], kind=kind)

    coarse = fn(model, mesh_of(coarse_shape), **kwargs)
    fine = fn(model, mesh_of(fine_shape), **kwargs)
    delta = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), fine, coarse)
    max_delta = max(
        (float(np.max(d)) for d in jax.tree_util.tree_leaves(delta) if np.size(d)), default=0.0
    )
    scale = max(
        (
            float(np.max(np.abs(np.asarray(v))))
            for v in jax.tree_util.tree_leaves(fine)
            if np.size(v)
        ),
        default=0.0,
    )
    relative = max_delta / scale if scale > 0 else (0.0 if max_delta == 0 else math.inf)
    return Convergence(fine, coarse, delta, max_delta, scale, relative, (coarse_shape, fine_shape))


# --- file safety ----------------------------------------------------------------------------------
def safe_output_name(name: str, *, what: str = "output prefix") -> str:
    """A file-name stem that cannot leave the output directory: no separators, not absolute,
    not '.' or '..', no NUL and no leading '-' or '.'."""
    text = str(name)
    bad = (
        not text
        or os.path.isabs(text)
        or "/" in text
        or "\\" in text
        or "\0" in text
        or text in (".", "..")
        or text.startswith((".", "-"))
        or ":" in text
    )
    if bad:
        raise ValueError(
            f"{what} {text!r} must be a plain file name (no '/', '\\', '..', ':' or absolute path, "
            "not starting with '.' or '-'); choose the directory with output.dir / --out instead."
        )
    return text


def safe_child(directory, name: str, *, what: str = "output prefix") -> Path:
    """``directory / name`` after checking that it stays inside ``directory``."""
    safe_output_name(name, what=what)
    base = Path(directory).resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise ValueError(f"{what} {name!r} would write outside the output directory {str(base)!r}.")
    return Path(directory) / name
