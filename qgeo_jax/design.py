r"""Inverse design: optimise model parameters for a response, on top of optax and equinox.

Every response of qgeo_jax is a differentiable function of the model's array fields, so "find the
parameters θ that maximise R(θ) under constraints" is a gradient-based optimisation:

.. code-block:: python

    import optax, qgeo_jax as qj
    from qgeo_jax import design

    mesh = qj.monkhorst_pack(model, (48, 48), shift=0.5)

    def edelstein(m):                      # objective: any scalar function of the model
        mu = design.chemical_potential(m, mesh, density=0.3, temperature=0.1)   # fixed filling
        a = qj.kinetic_magnetization(m, mesh, mu=mu, temperature=0.1, part="spin",
                                     mechanism="extrinsic", tau=1.0)
        return -a[1, 0]                    # δM_y per E_x

    result = design.optimize(
        edelstein, model, free=["t", "alpha"],                     # the rest is frozen
        bounds={"alpha": (0.0, None), "t": (0.1, None)},          # projection (clip)
        project=design.fix_bandwidth(mesh, 6.0),                  # projection (rescale H)
        penalties=[design.at_least(lambda m: design.band_gap(m, mesh, 0), 0.2, weight=1e2)],
        optimizer=optax.adam(2e-2), steps=200)
    result.model, result.history["objective"]

Pieces:

* **objective** — ``objective(model) -> scalar``; maximised (``maximize=True``, default) or
  minimised. Build it from any response; use a jit-friendly function (no Python control flow on
  values).
* **free parameters** — ``free`` names the fields that move: field names (``"alpha"``,
  ``"params.t"`` for a :func:`~qgeo_jax.models.from_function` dict), a ``where`` function as in
  ``eqx.tree_at`` (``lambda m: (m.t, m.alpha)``), or a boolean filter-spec pytree. Everything else
  is frozen with ``eqx.partition`` (Kidger, *Equinox*, arXiv:2111.00254) and never differentiated.
* **constraints**, three kinds (use the strongest that applies):

  - *reparametrisation* — enforce an equality exactly inside the objective, e.g. fixed filling by
    solving for μ with :func:`chemical_potential` (its gradient is exact, by the implicit-function
    theorem);
  - *projection* — after every optimizer update: ``bounds={"alpha": (lo, hi)}`` clips (projected
    gradient method); ``project=fn`` maps a model to the feasible set, e.g. :func:`fix_bandwidth`
    (rescales H so that its bandwidth is fixed);
  - *penalty* — ``penalties=[...]`` adds ``weight·violation²`` to the loss: :func:`at_least`,
    :func:`at_most`, :func:`equal_to` around any scalar function of the model, e.g.
    :func:`band_gap` (keep a gap open), :func:`bandwidth`, :func:`electron_density`. Penalties are
    soft: the optimum violates them by O(1/weight); check the returned history.

* **optimizer** — any ``optax.GradientTransformation`` (default ``optax.adam(1e-2)``). Complex
  fields descend along ∂L/∂Re z + i ∂L/∂Im z; JAX's gradient of a complex leaf is the complex
  conjugate of that, so it is conjugated before the optax update.

The optimisation step (gradient of the whole pipeline + optax update + projection) is one
``eqx.filter_jit`` function wrapped in ``eqx.debug.assert_max_traces(max_traces=1)``: it is traced
and compiled once per :func:`optimize` call and then only dispatched (a retrace raises).

Cost of a gradient. Memory: a reverse-mode gradient through a mesh reduction stores one k-chunk's
residuals at a time (the chunk body of :func:`qgeo_jax.integrate` is checkpointed), so its memory
does not grow with the number of k-points. Measured (XLA temp buffers of the compiled gradient of
M^O, chunk 256, CPU): 0.34 MiB for the 2-band Haldane model at 64² … 256² k-points (79 MiB at 256²
without the checkpoint) and 4.0 MiB for an 8-band model at 32² … 128² (318 MiB at 128² without; the
process's peak RSS grew by 7 MiB vs 712 MiB at 192²). Time: a full reverse-mode gradient (all
parameters at once) costs ≈ 2.9 forward passes for a 2-band and ≈ 1.5 for an 8-band model (steady
state; the checkpoint's recomputation is cheaper than storing residuals: without it the 8-band
gradient took 3.0 forward passes). A forward-mode jvp costs about the same per direction.

Degeneracies: gradients are finite and exact at exact degeneracies for parameters that preserve
them (e.g. PT-preserving parameters of a Kramers-degenerate model). A derivative with respect to a
parameter that *splits* an exact degeneracy, taken exactly at the degenerate point, can miss the
intra-degenerate terms of degenerate perturbation theory when the output weighs the members
differently (Fermi-surface terms at T > 0, the (μ − E_n)Ω_n term of M^O); differentiate a hair off
the symmetric point (splitting ≫ ``degen_tol``), e.g. at an exchange field of 1e-5, instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PyTree

from ._bz import DEFAULT_CHUNK, AbstractMesh
from ._linalg import eigh
from ._occupation import fermi_dirac
from .models._base import AbstractModel

__all__ = [
    "DesignResult",
    "at_least",
    "at_most",
    "band_energies",
    "band_gap",
    "bandwidth",
    "chemical_potential",
    "electron_density",
    "equal_to",
    "fix_bandwidth",
    "free_filter",
    "make_step",
    "optimize",
]


# --- results --------------------------------------------------------------------------------------
class DesignResult(eqx.Module):
    """Outcome of :func:`optimize`.

    Attributes
    ----------
    model : the model after the last step (frozen fields untouched).
    history : dict of NumPy arrays of length ``steps + 1``, entry i evaluated at the parameters
        after i updates: ``"objective"``, ``"loss"`` (minimised: ∓objective + penalties),
        ``"penalty"``, ``"grad_norm"``; and ``"params"``, the free fields with a leading step axis
        (same pytree as the model, ``None`` at frozen fields).
    num_traces : how many times the step function was traced (1: compiled once).
    """

    model: Any
    history: dict
    num_traces: int = eqx.field(static=True)


# --- which fields are free ------------------------------------------------------------------------
def _where_from_names(names: Sequence[str]) -> Callable:
    paths = [name.split(".") for name in names]

    def where(model):
        out = []
        for name, path in zip(names, paths, strict=True):
            node = model
            for part in path:
                if isinstance(node, Mapping):
                    if part not in node:
                        raise ValueError(
                            f"free parameter {name!r}: no key {part!r} (keys: {sorted(node)})."
                        )
                    node = node[part]
                else:
                    if not hasattr(node, part):
                        raise ValueError(
                            f"free parameter {name!r}: {type(node).__name__} has no field {part!r}."
                        )
                    node = getattr(node, part)
            out.append(node)
        return tuple(out)

    return where


def free_filter(model: AbstractModel, free) -> PyTree[bool]:
    """Boolean filter spec (True = optimised) from field names, a ``where`` function or a spec.

    Only inexact (float/complex) array leaves can be free; naming anything else raises.
    """
    inexact = jax.tree_util.tree_map(eqx.is_inexact_array, model)
    if isinstance(free, str):
        free = [free]
    if callable(free) or (isinstance(free, Sequence) and all(isinstance(f, str) for f in free)):
        where = free if callable(free) else _where_from_names(list(free))
        false = jax.tree_util.tree_map(lambda _: False, model)
        mark = lambda node: jax.tree_util.tree_map(lambda _: True, node)
        try:
            chosen = eqx.tree_at(where, false, replace_fn=mark)
        except (TypeError, AttributeError) as err:  # a `where` that does not select model fields
            raise ValueError(
                f"free={free!r} does not select fields of {type(model).__name__}: {err}"
            ) from err
        spec = jax.tree_util.tree_map(lambda a, c: bool(a and c), inexact, chosen)
    else:
        spec = jax.tree_util.tree_map(lambda a, c: bool(a and c), inexact, free)
    if not any(jax.tree_util.tree_leaves(spec)):
        raise ValueError(
            f"free={free!r} selects no float/complex array field of {type(model).__name__}; name "
            "array fields such as 'alpha' (static fields and integer arrays cannot be optimised)."
        )
    return spec


# --- constraints ----------------------------------------------------------------------------------
def at_least(fn: Callable[[Any], Array], lower, *, weight=1.0) -> Callable[[Any], Array]:
    """Penalty weight·max(lower − fn(model), 0)² (inequality fn ≥ lower, soft)."""
    return lambda model: weight * jnp.sum(jnp.square(jax.nn.relu(lower - fn(model))))


def at_most(fn: Callable[[Any], Array], upper, *, weight=1.0) -> Callable[[Any], Array]:
    """Penalty weight·max(fn(model) − upper, 0)² (inequality fn ≤ upper, soft)."""
    return lambda model: weight * jnp.sum(jnp.square(jax.nn.relu(fn(model) - upper)))


def equal_to(fn: Callable[[Any], Array], target, *, weight=1.0) -> Callable[[Any], Array]:
    """Penalty weight·(fn(model) − target)² (equality, soft)."""
    return lambda model: weight * jnp.sum(jnp.square(fn(model) - target))


def band_energies(model: AbstractModel, mesh: AbstractMesh, *, chunk_size: int = DEFAULT_CHUNK):
    """Band energies E_n(k) at every mesh point, ``(mesh.size, n)``, and weights ``(mesh.size,)``.

    Chunked like :func:`qgeo_jax.integrate` (checkpointed chunks, so reverse mode stores one chunk's
    eigenvectors at a time); the energies themselves are kept (size × n floats). Differentiable;
    the eigenvalue derivative is exact also at degeneracies.
    """
    size = min(chunk_size, mesh.size)
    n_chunks = mesh.num_chunks(size)

    @jax.checkpoint
    def one_chunk(c):
        k, w = mesh.chunk(c, size)
        e = jax.vmap(lambda kk: eigh(model.hamiltonian(kk))[0])(k.reshape(size, mesh.dim))
        return e, w

    e, w = jax.lax.map(one_chunk, jnp.arange(n_chunks))
    e, w = e.reshape(n_chunks * size, -1)[: mesh.size], w.reshape(-1)[: mesh.size]
    return e, w


def _masked_extremum(values, weights, op):
    # Zero-weight points lie outside the integration region (padding, outside a ball): skip them.
    fill = jnp.inf if op is jnp.min else -jnp.inf
    inside = (weights > 0).reshape((-1,) + (1,) * (values.ndim - 1))
    return op(jnp.where(inside, values, fill))


def band_gap(
    model: AbstractModel, mesh: AbstractMesh, band: int, *, chunk_size: int = DEFAULT_CHUNK
) -> Float[Array, ""]:
    """Indirect gap min_k E_{band+1}(k) − max_k E_band(k) on the mesh (negative for overlapping
    bands; bands counted from 0 at the bottom). Use with :func:`at_least` to keep a gap open."""
    e, w = band_energies(model, mesh, chunk_size=chunk_size)
    if not 0 <= band < e.shape[1] - 1:
        raise ValueError(
            f"band_gap: band={band} must be in [0, {e.shape[1] - 1}) (gap above band `band`)."
        )
    return _masked_extremum(e[:, band + 1], w, jnp.min) - _masked_extremum(e[:, band], w, jnp.max)


def bandwidth(
    model: AbstractModel, mesh: AbstractMesh, bands=None, *, chunk_size: int = DEFAULT_CHUNK
) -> Float[Array, ""]:
    """max − min of the energies of ``bands`` (default: all bands) over the mesh."""
    e, w = band_energies(model, mesh, chunk_size=chunk_size)
    if bands is not None:
        e = e[:, jnp.asarray(np.atleast_1d(bands))]
    return _masked_extremum(e, w, jnp.max) - _masked_extremum(e, w, jnp.min)


def fix_bandwidth(mesh: AbstractMesh, width, bands=None) -> Callable[[Any], Any]:
    """Projection for ``optimize(project=...)``: rescale the free fields by width/W(model).

    If H is linear and homogeneous in the free fields (e.g. RashbaLattice with t, α and J free and
    ``onsite`` = 0), the whole spectrum scales with them and the bandwidth W becomes exactly
    ``width`` after every step; otherwise the rescaling is an approximate projection that settles
    over the steps (check ``bandwidth`` of the result). ``bands`` as in :func:`bandwidth`.
    """

    def project(model, free_spec):
        scale = width / jax.lax.stop_gradient(bandwidth(model, mesh, bands))
        return jax.tree_util.tree_map(lambda x, f: x * scale if f else x, model, free_spec)

    project.needs_free_spec = True
    return project


def electron_density(
    model: AbstractModel,
    mesh: AbstractMesh,
    mu,
    temperature=0.0,
    *,
    chunk_size: int = DEFAULT_CHUNK,
):
    r"""Electrons per unit volume (area in 2D), n(μ, T) = ∫ d^dk/(2π)^d Σ_n f0(E_n(k)).

    Per unit cell: multiply by ``model.cell_volume()``. For continuum models all states inside the
    mesh's cutoff are counted (the density is measured from the cutoff's band bottom).
    """
    e, w = band_energies(model, mesh, chunk_size=chunk_size)
    mu = jnp.asarray(mu, jnp.float64)
    f = fermi_dirac(e, mu[..., None, None], jnp.asarray(temperature, jnp.float64)[..., None, None])
    return jnp.einsum("...kn,k->...", f, w)


def chemical_potential(
    model: AbstractModel,
    mesh: AbstractMesh,
    *,
    density,
    temperature,
    iterations: int = 80,
    chunk_size: int = DEFAULT_CHUNK,
) -> Float[Array, ""]:
    r"""μ such that :func:`electron_density` (μ, T) = ``density`` (electrons per volume; per cell:
    divide the per-cell filling by ``model.cell_volume()``).

    Bisection on the monotone n(μ) over [min E − 40T, max E + 40T] using energies computed once,
    wrapped in ``jax.lax.custom_root``: the derivative follows from the implicit-function theorem,
    dμ/dθ = −(∂n/∂θ)/(∂n/∂μ), not from differentiating the bisection. Needs T > 0 (n(μ) is a
    step function on a finite mesh at T = 0); the target must lie strictly between 0 and the total
    number of states (runtime error otherwise).
    """
    temperature = jnp.asarray(temperature, jnp.float64)
    temperature = eqx.error_if(
        temperature, ~(temperature > 0), "chemical_potential needs temperature > 0."
    )
    e, w = band_energies(model, mesh, chunk_size=chunk_size)
    density = jnp.asarray(density, jnp.float64)
    full = jnp.sum(w) * e.shape[1]
    density = eqx.error_if(
        density,
        (density <= 0) | (density >= full),
        "chemical_potential: density must lie in (0, total states).",
    )

    def excess(mu):
        return jnp.einsum("kn,k->", fermi_dirac(e, mu, temperature), w) - density

    def bisect(fn, _guess):
        lo = jax.lax.stop_gradient(jnp.min(e) - 40 * temperature)
        hi = jax.lax.stop_gradient(jnp.max(e) + 40 * temperature)

        def body(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            below = fn(mid) < 0
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
        return 0.5 * (lo + hi)

    scalar_solve = lambda g, y: y / g(1.0)
    return jax.lax.custom_root(excess, jnp.zeros(()), bisect, scalar_solve)


# --- the optimisation loop ------------------------------------------------------------------------
def _projection(static_model, spec, bounds, project):
    clips = []
    for name, (lo, hi) in (bounds or {}).items():
        where = _where_from_names([name])
        sel = eqx.tree_at(
            where,
            jax.tree_util.tree_map(lambda _: False, spec),
            replace_fn=lambda n: jax.tree_util.tree_map(lambda _: True, n),
        )
        if not any(
            a and b
            for a, b in zip(
                jax.tree_util.tree_leaves(sel), jax.tree_util.tree_leaves(spec), strict=True
            )
        ):
            raise ValueError(
                f"bounds: {name!r} is not a free parameter (the free fields are those in `free`)."
            )
        clips.append((where, lo, hi))

    def apply(params):
        if project is not None:
            model = eqx.combine(params, static_model)
            model = (
                project(model, spec)
                if getattr(project, "needs_free_spec", False)
                else project(model)
            )
            params = eqx.filter(model, spec)
        for where, lo, hi in clips:
            params = eqx.tree_at(
                where, params, replace_fn=lambda x, lo=lo, hi=hi: jnp.clip(x, lo, hi)
            )
        # Strong dtypes: Python-number parameters are weakly typed, and a weak → strong change
        # between the first and second step would retrace the step function.
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), params)

    return apply


def make_step(
    objective: Callable[[Any], Array],
    model: AbstractModel,
    *,
    free,
    optimizer: optax.GradientTransformation | None = None,
    penalties: Sequence[Callable[[Any], Array]] = (),
    bounds: Mapping[str, tuple] | None = None,
    project: Callable | None = None,
    maximize: bool = True,
):
    """Build the compiled optimisation step; :func:`optimize` runs it in a loop.

    Returns ``(step, params, static, opt_state)`` with
    ``params, opt_state, info = step(params, static, opt_state)``: one value-and-gradient of the
    loss (∓objective + Σ penalties), one optax update, the projections; ``info`` holds the loss,
    objective, penalty and gradient norm *before* the update. ``step`` is
    ``eqx.filter_jit(eqx.debug.assert_max_traces(..., max_traces=1))``: it compiles once and raises
    if anything would make it retrace; ``eqx.debug.get_num_traces(step)`` counts traces.
    """
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    spec = free_filter(model, free)
    params, static = eqx.partition(model, spec)
    project_fn = _projection(static, spec, bounds, project)
    params = project_fn(params)
    sign = -1.0 if maximize else 1.0
    penalties = tuple(penalties)

    def loss_fn(p, st):
        m = eqx.combine(p, st)
        obj = jnp.asarray(objective(m))
        if obj.shape != ():
            raise ValueError(f"the objective must return a scalar; got shape {obj.shape}.")
        pen = sum((jnp.asarray(pf(m)) for pf in penalties), jnp.zeros(()))
        return sign * obj + pen, (obj, pen)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(p, st, opt_state):
        (loss, (obj, pen)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(p, st)
        # JAX returns ∂L/∂x − i∂L/∂y for a complex leaf; descent needs its conjugate.
        grads = jax.tree_util.tree_map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, grads)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        new = project_fn(eqx.apply_updates(p, updates))
        info = {"loss": loss, "objective": obj, "penalty": pen, "grad_norm": optax.tree.norm(grads)}
        return new, opt_state, info

    opt_state = optimizer.init(params)
    return step, params, static, opt_state


def optimize(
    objective: Callable[[Any], Array],
    model: AbstractModel,
    *,
    free,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 100,
    penalties: Sequence[Callable[[Any], Array]] = (),
    bounds: Mapping[str, tuple] | None = None,
    project: Callable | None = None,
    maximize: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> DesignResult:
    """Optimise ``objective(model)`` over the ``free`` fields; see the module docstring.

    Arguments: ``objective`` (model → scalar), ``model`` (starting point), ``free`` (field names,
    ``where`` function or filter spec), ``optimizer`` (optax, default adam(1e-2)), ``steps``,
    ``penalties`` (model → scalar ≥ 0, added to the loss), ``bounds`` ({name: (lo, hi)}, ``None``
    for an open side; clipped after each update), ``project`` (model → feasible model after each
    update, e.g. :func:`fix_bandwidth`; a projection with the attribute ``needs_free_spec`` is called
    as ``project(model, free_spec)``), ``maximize``, ``callback(i, info)`` called after every step
    with NumPy scalars (progress bars, early inspection).

    Returns a :class:`DesignResult` (final model, per-step history, number of traces = 1).
    """
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    step, params, static, opt_state = make_step(
        objective,
        model,
        free=free,
        optimizer=optimizer,
        penalties=penalties,
        bounds=bounds,
        project=project,
        maximize=maximize,
    )
    infos, trajectory = [], []
    # steps + 1 calls: the last one only reports the objective at the final parameters.
    for i in range(int(steps) + 1):
        trajectory.append(params)
        new_params, new_state, info = step(params, static, opt_state)
        info = {k: float(v) for k, v in info.items()}
        infos.append(info)
        if i < steps:
            params, opt_state = new_params, new_state
            if callback is not None:
                callback(i, info)
    history = {k: np.array([d[k] for d in infos]) for k in infos[0]}
    history["params"] = jax.tree_util.tree_map(
        lambda *xs: np.stack([np.asarray(x) for x in xs]), *trajectory
    )
    return DesignResult(
        model=eqx.combine(params, static),
        history=history,
        num_traces=eqx.debug.get_num_traces(step),
    )
