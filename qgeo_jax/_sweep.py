r"""Batched parameter sweeps: evaluate any response for many models in one compiled program.

A *batched model* is an ordinary model whose batched array fields carry one extra leading axis of
length B (the batch). Build one with :func:`stack_models` (a list of models of the same type and
static configuration), with :func:`vary` (one model, some fields replaced by arrays of values), or
by hand with ``eqx.tree_at``. :func:`sweep` then evaluates ``fn(model_b, *args, **kwargs)`` for
every b and stacks the results, exactly as the Python loop

.. code-block:: python

    jnp.stack([fn(m, *args, **kwargs) for m in unstack_models(models)])

would, but as ONE jit-compiled program: ``jax.lax.map`` over the batch, ``vmap`` inside blocks of
``batch_size`` models (the same chunking as k, :func:`qgeo_jax.integrate`), so the memory is set by
``batch_size`` and not by B. The result is differentiable (forward and reverse mode) with respect to
every batched field, and ``grad`` of a sweep equals the sweep of ``grad``.

Compilation: ``fn`` is a static argument (compare by identity — define it once, not as a fresh
``lambda`` in a loop); arrays in ``args``/``kwargs`` (μ grids, meshes) are traced, so new values do
not recompile, while Python scalars in them are static and do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

M = TypeVar("M")


def _batched_mask(models, batched):
    """Bool pytree over ``models``: True at the array leaves that carry the batch axis."""
    is_arr = jax.tree_util.tree_map(eqx.is_array, models)
    if batched is None:
        return is_arr
    if not callable(batched):
        raise ValueError(
            "batched must be None (every array field is batched) or a `where` function like "
            f"eqx.tree_at's, e.g. `lambda m: (m.t2, m.phi)`; got {batched!r}."
        )
    false = jax.tree_util.tree_map(lambda _: False, models)
    mark = lambda node: jax.tree_util.tree_map(lambda _: True, node)
    chosen = eqx.tree_at(batched, false, replace_fn=mark)
    return jax.tree_util.tree_map(lambda a, c: bool(a and c), is_arr, chosen)


def batch_length(models, *, batched: Callable | None = None) -> int:
    """Length B of the leading batch axis, checked to be the same on every batched field."""
    mask = _batched_mask(models, batched)
    leaves = [
        x
        for x, m in zip(
            jax.tree_util.tree_leaves(models), jax.tree_util.tree_leaves(mask), strict=True
        )
        if m
    ]
    if not leaves:
        raise ValueError("the batched model has no batched array fields: nothing to sweep over.")
    sizes = {x.shape[0] if x.ndim else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(x.shape) for x in leaves]
        raise ValueError(
            "every batched field must carry the same leading batch axis; got field shapes "
            f"{shapes}. Build batched models with qgeo_jax.stack_models or qgeo_jax.vary, or pass "
            "`batched=` to name the fields that carry the batch axis."
        )
    return sizes.pop()


def stack_models(models: Sequence[M]) -> M:
    """Stack models of one type and static configuration into one batched model.

    Every array field of the result has a leading axis of length ``len(models)``. Static fields
    (e.g. ``MassiveDirac.valley``) and non-array leaves must agree — they change the compiled
    program, so sweep over them with a Python loop instead.
    """
    models = list(models)
    if not models:
        raise ValueError("stack_models needs at least one model.")
    parts = [eqx.partition(m, eqx.is_array) for m in models]
    treedef = jax.tree_util.tree_structure(parts[0][0])
    static_leaves = jax.tree_util.tree_leaves(parts[0][1])
    for i, (dyn, st) in enumerate(parts[1:], start=1):
        if (
            jax.tree_util.tree_structure(dyn) != treedef
            or jax.tree_util.tree_leaves(st) != static_leaves
        ):
            raise ValueError(
                f"stack_models: model #{i} ({type(models[i]).__name__}) differs from model #0 "
                f"({type(models[0]).__name__}) in its type or static configuration; only array "
                "fields may vary within a batch."
            )
        for a, b in zip(
            jax.tree_util.tree_leaves(dyn), jax.tree_util.tree_leaves(parts[0][0]), strict=True
        ):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(
                    f"stack_models: model #{i} has a field of shape {a.shape} ({a.dtype}) where "
                    f"model #0 has {b.shape} ({b.dtype}); batched fields must match in shape and dtype."
                )
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[d for d, _ in parts])
    return eqx.combine(stacked, parts[0][1])


def unstack_models(models: M, *, batched: Callable | None = None) -> list[M]:
    """Inverse of :func:`stack_models`: the list of the B individual models."""
    mask = _batched_mask(models, batched)
    n = batch_length(models, batched=batched)
    take = lambda i: jax.tree_util.tree_map(lambda x, m: x[i] if m else x, models, mask)
    return [take(i) for i in range(n)]


def vary(model: M, where: Callable[[M], Any], values) -> M:
    """Batched copy of ``model`` with the fields selected by ``where`` set to ``values``.

    ``where`` is as in ``eqx.tree_at`` (``lambda m: m.t2`` or ``lambda m: (m.t2, m.phi)``);
    ``values`` holds one array per selected field, each with a leading batch axis of the same
    length B. Every other array field is broadcast to the batch (cheap: model parameters are
    small), so the result is a batched model for :func:`sweep` with the default ``batched=None``.

    Example: ``vary(Haldane(), lambda m: m.phi, jnp.linspace(0, jnp.pi, 64))``.
    """
    target = where(model)
    single = not isinstance(target, tuple | list)
    values = (values,) if single else tuple(values)
    targets = (target,) if single else tuple(target)
    if len(values) != len(targets):
        raise ValueError(
            f"vary: `where` selects {len(targets)} fields but {len(values)} value arrays were "
            "given."
        )
    cast = []
    for t, v in zip(targets, values, strict=True):
        if not eqx.is_array(t):
            raise ValueError(f"vary: `where` must select array fields; got {type(t).__name__}.")
        v = jnp.asarray(v, dtype=t.dtype)
        if v.shape[1:] != t.shape:
            raise ValueError(
                f"vary: values for a field of shape {t.shape} must have shape (B,) + {t.shape}; "
                f"got {v.shape}."
            )
        cast.append(v)
    sizes = {v.shape[0] for v in cast}
    if len(sizes) != 1:
        raise ValueError(f"vary: all value arrays need the same batch length; got {sorted(sizes)}.")
    (b,) = sizes
    broadcast = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (b,) + x.shape) if eqx.is_array(x) else x, model
    )
    return eqx.tree_at(where, broadcast, cast[0] if single else tuple(cast))


@eqx.filter_jit
def _sweep(fn, batched_part, rest, args, kwargs, batch_size):
    def one(part):
        return fn(eqx.combine(part, rest), *args, **kwargs)

    return jax.lax.map(one, batched_part, batch_size=batch_size)


def sweep(
    fn: Callable[..., PyTree],
    models,
    *args,
    batched: Callable | None = None,
    batch_size: int | None = None,
    **kwargs,
) -> PyTree:
    """Evaluate ``fn(model, *args, **kwargs)`` for every model of a batch, stacked on axis 0.

    ``models`` is a batched model (:func:`stack_models`, :func:`vary`, or ``eqx.tree_at`` with
    arrays of leading length B). By default every array field carries the batch axis; pass
    ``batched=lambda m: (m.t2, ...)`` when only the selected fields do (the others are shared).
    ``batch_size`` models are evaluated at once with ``vmap`` (memory ∝ batch_size × one
    evaluation), blocks run one after the other (``jax.lax.map``); ``None`` runs them one at a time,
    ``0`` all at once. Identical to the Python loop over :func:`unstack_models`, compiled once, and
    differentiable with respect to the batched fields.

    Example::

        models = qgeo_jax.vary(Haldane(), lambda m: m.phi, jnp.linspace(0, jnp.pi, 64))
        M = qgeo_jax.sweep(qgeo_jax.orbital_magnetization, models, mesh, mu=mus, batch_size=8)
        # M.shape == (64,) + mus.shape + (3,)
    """
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 0):
        raise ValueError(f"batch_size must be None or an integer >= 0, got {batch_size!r}.")
    batch_length(models, batched=batched)  # validates the batch axis
    mask = _batched_mask(models, batched)
    batched_part, rest = eqx.partition(models, mask)
    return _sweep(
        fn, batched_part, rest, args, kwargs, None if batch_size is None else int(batch_size)
    )
