r"""k-space meshes and the chunked Brillouin-zone reduction.

A mesh is a quadrature rule for ∫ d^dk/(2π)^d: points k (Cartesian) and weights w with
Σ w F(k) ≈ ∫ d^dk/(2π)^d F(k). For a lattice mesh of N points, w = 1/(N V_cell), so responses
come out per unit volume (per unit area in 2D) directly.

Meshes never materialise all their points: ``mesh.chunk(c, size)`` computes the points and
weights of chunk ``c`` from integer indices, so the memory of a reduction is set by the chunk size,
not by the mesh. The last chunk is padded with zero-weight points, so every chunk has the same
shape and the reduction compiles once.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from .models._base import AbstractModel

DEFAULT_CHUNK = 256


class AbstractMesh(eqx.Module):
    """A quadrature rule for ∫ d^dk/(2π)^d, generated chunk by chunk.

    Every mesh has a static ``devices`` field: the devices its reduction is spread over
    (``None``: :func:`default_devices` — all GPUs, or one CPU device). Change it with
    :func:`with_devices`.
    """

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of k-points."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Dimension of k."""

    @abc.abstractmethod
    def points_and_weights(self, index: Int[Array, " c"]) -> tuple[Float[Array, "c dim"], Float[Array, " c"]]:
        """Points and weights of the given flat indices (indices ≥ size get weight 0)."""

    def chunk(self, c: Int[Array, ""], size: int):
        return self.points_and_weights(c * size + jnp.arange(size))

    def num_chunks(self, size: int) -> int:
        return max(1, math.ceil(self.size / size))

    def all_points(self):
        """All points and weights at once (for small meshes, plotting and tests)."""
        return self.points_and_weights(jnp.arange(self.size))


class MonkhorstPackMesh(AbstractMesh):
    """Uniform mesh k = Σ_a (i_a + s_a)/n_a b_a over the reciprocal cell (Monkhorst & Pack 1976)."""

    shape: tuple[int, ...] = eqx.field(static=True)
    shift: tuple[float, ...] = eqx.field(static=True)
    reciprocal: Float[Array, "dim dim"]
    cell_volume: Float[Array, ""]
    devices: tuple | None = eqx.field(static=True, default=None)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dim(self) -> int:
        return len(self.shape)

    def fractional(self, index):
        idx = jnp.unravel_index(jnp.minimum(index, self.size - 1), self.shape)
        return jnp.stack(
            [(i + s) / n for i, s, n in zip(idx, self.shift, self.shape, strict=True)], axis=-1
        )

    def points_and_weights(self, index):
        frac = self.fractional(index)
        w = jnp.where(index < self.size, 1.0 / (self.size * self.cell_volume), 0.0)
        return frac.astype(self.reciprocal.dtype) @ self.reciprocal, w  # float32 mesh: float32 points


class PolarMesh(AbstractMesh):
    """Disk |k − k0| < k_max in 2D: Gauss–Legendre in |k|, uniform in angle.

    Exponentially accurate for smooth integrands; use enough radial nodes to resolve the Fermi
    surface (its width is ~T/v).
    """

    k_max: float = eqx.field(static=True)
    n_radial: int = eqx.field(static=True)
    n_angle: int = eqx.field(static=True)
    center: Float[Array, "2"]
    nodes: Float[Array, " nr"]
    node_weights: Float[Array, " nr"]
    devices: tuple | None = eqx.field(static=True, default=None)

    @property
    def size(self) -> int:
        return self.n_radial * self.n_angle

    @property
    def dim(self) -> int:
        return 2

    def points_and_weights(self, index):
        safe = jnp.minimum(index, self.size - 1)
        ir, it = safe // self.n_angle, safe % self.n_angle
        r = self.nodes[ir]
        theta = 2 * jnp.pi * (it + 0.5) / self.n_angle
        k = self.center + r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1).astype(r.dtype)
        w = r * self.node_weights[ir] * (2 * jnp.pi / self.n_angle) / (2 * jnp.pi) ** 2
        return k, jnp.where(index < self.size, w, 0.0)


class BoxMesh(AbstractMesh):
    """Midpoint grid on the cube [−k_max, k_max]^d, optionally restricted to the ball |k| < k_max."""

    k_max: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    ball: bool = eqx.field(static=True)
    devices: tuple | None = eqx.field(static=True, default=None)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dim(self) -> int:
        return len(self.shape)

    def points_and_weights(self, index):
        idx = jnp.unravel_index(jnp.minimum(index, self.size - 1), self.shape)
        k = jnp.stack([-self.k_max + (2 * self.k_max) * (i + 0.5) / n for i, n in zip(idx, self.shape, strict=True)], -1)
        dv = float(np.prod([2 * self.k_max / n for n in self.shape])) / (2 * np.pi) ** self.dim
        inside = jnp.sum(k * k, axis=-1) < self.k_max**2 if self.ball else True
        return k, jnp.where((index < self.size) & inside, dv, 0.0)


class ExplicitMesh(AbstractMesh):
    """User-given points (Cartesian) and weights (for ∫ d^dk/(2π)^d)."""

    points: Float[Array, "nk dim"]
    weights: Float[Array, " nk"]
    devices: tuple | None = eqx.field(static=True, default=None)

    @property
    def size(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def points_and_weights(self, index):
        safe = jnp.minimum(index, self.size - 1)
        return self.points[safe], jnp.where(index < self.size, self.weights[safe], 0.0)


def with_devices(mesh: AbstractMesh, devices) -> AbstractMesh:
    """The same mesh, reduced over ``devices`` (a sequence of ``jax.Device``; ``None`` = all)."""
    import dataclasses

    return dataclasses.replace(mesh, devices=None if devices is None else tuple(devices))


# --- constructors ---------------------------------------------------------------------------------
def monkhorst_pack(model: AbstractModel, shape, *, shift=None) -> MonkhorstPackMesh:
    """Uniform mesh over the Brillouin zone of a lattice model. ``shape`` = (n1, ..., n_dim).

    ``shift`` (reduced units of one mesh step, default 0) offsets the mesh, e.g. 0.5 to avoid
    high-symmetry points.
    """
    if not model.is_lattice:
        raise ValueError(
            f"{type(model).__name__} is a continuum model; use qgeo_jax.continuum_mesh(model, k_max=..., n=...)."
        )
    shape = tuple(int(n) for n in np.atleast_1d(shape))
    if len(shape) != model.dim:
        raise ValueError(f"mesh shape {shape} has {len(shape)} axes but the model is {model.dim}D.")
    if any(n < 1 for n in shape):
        raise ValueError(f"mesh shape {shape} must be positive integers.")
    shift = (0.0,) * len(shape) if shift is None else tuple(float(s) for s in np.broadcast_to(shift, len(shape)))
    return MonkhorstPackMesh(
        shape=shape, shift=shift, reciprocal=model.reciprocal(), cell_volume=model.cell_volume()
    )


def continuum_mesh(model: AbstractModel, *, k_max: float | None = None, n=(200, 64), kind: str = "polar", center=(0.0, 0.0)):
    """Mesh for a continuum model, bounded by ``k_max`` (default ``model.k_cutoff``).

    ``kind="polar"`` (2D): ``n = (n_radial, n_angle)`` Gauss–Legendre × uniform nodes on the disk
    around ``center``. ``kind="box"``: ``n`` points per axis on [−k_max, k_max]^dim restricted to
    the ball |k| < k_max (``kind="cube"`` keeps the whole cube).
    """
    if model.is_lattice:
        raise ValueError(f"{type(model).__name__} is a lattice model; use qgeo_jax.monkhorst_pack(model, shape).")
    k_max = model.k_cutoff if k_max is None else k_max
    if k_max is None or not k_max > 0:
        raise ValueError(f"continuum_mesh needs a positive k_max (got {k_max!r}); the model gives no k_cutoff.")
    if kind == "polar":
        if model.dim != 2:
            raise ValueError(f"a polar mesh is 2D but the model is {model.dim}D; use kind='box'.")
        nr, nt = (int(n), int(n)) if np.ndim(n) == 0 else (int(n[0]), int(n[1]))
        if nr < 1 or nt < 1:
            raise ValueError(f"continuum_mesh: n = (n_radial, n_angle) must be positive, got {n!r}.")
        x, wx = np.polynomial.legendre.leggauss(nr)
        return PolarMesh(
            k_max=float(k_max), n_radial=nr, n_angle=nt, center=jnp.asarray(center, dtype=jnp.float64),
            nodes=jnp.asarray(0.5 * k_max * (x + 1)), node_weights=jnp.asarray(0.5 * k_max * wx),
        )
    if kind in ("box", "cube"):
        shape = tuple(int(m) for m in np.broadcast_to(n, (model.dim,)))
        if any(m < 1 for m in shape):
            raise ValueError(f"continuum_mesh: n must be positive integers, got {n!r}.")
        return BoxMesh(k_max=float(k_max), shape=shape, ball=kind == "box")
    raise ValueError(f"unknown continuum mesh kind {kind!r}; use 'polar', 'box' or 'cube'.")


# --- reduction -------------------------------------------------------------------------------------
def default_devices():
    """The devices a reduction is spread over by default: every device of the default backend.

    GPUs/TPUs: all of them (under ``jax.distributed.initialize()`` those of every process). CPU:
    JAX shows one CPU device per process unless asked for more —
    :func:`qgeo_jax.parallel.use_cpu_cores` (``jax_num_cpu_devices``) before JAX starts, which the
    ``qgeo`` command does — and every CPU device of every process is used. Measured on 2 cores
    (random tight-binding M^O at 101 μ, 128² k): two CPU devices ran 2.03× (N = 2), 1.93× (N = 8)
    and 1.93× (N = 32) faster than one device pinned to one core. This needs the per-matrix LAPACK
    loop of :func:`qgeo_jax._linalg.eigh` on the CPU: with jaxlib's batched eigh kernel two host
    devices deadlocked (jax 0.10.2).
    """
    return tuple(jax.devices())


def _shard_map(fn, mesh, in_specs, out_specs):
    # The per-device bodies are independent (no collectives), so replication/varying-axis checks
    # add nothing; they also reject constants mixed with sharded values in reverse mode.
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # jax < 0.6

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def integrate(fn, mesh: AbstractMesh, *, chunk_size: int = DEFAULT_CHUNK, devices=None) -> PyTree[Array]:
    """Σ_k w(k) fn(k) over the mesh: ``vmap`` inside fixed-size chunks, ``lax.scan`` across them.

    ``fn(k)`` maps one k to a pytree of arrays. The chunk body is checkpointed, so reverse-mode
    gradients store one chunk's residuals at a time (memory independent of the mesh size).

    With several devices (``devices``, else ``mesh.devices``, else :func:`default_devices`), the
    mesh is cut into one contiguous run of chunks per device (the chunk shrinks so that the runs
    are equally long) and dealt out with ``shard_map``; each device reduces its own run and the
    per-device partial sums are added at the end (no collective inside the loop; across
    processes under ``jax.distributed`` one all-reduce). Results agree with one device to
    round-off (the summation order differs).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    chunk_size = min(chunk_size, mesh.size)
    n_chunks = mesh.num_chunks(chunk_size)
    kdim = mesh.dim
    if devices is None:
        devices = mesh.devices if mesh.devices is not None else default_devices()
    devices = tuple(devices)

    def make_weighted(size):
        def weighted(c):
            k, w = mesh.chunk(c, size)
            vals = jax.vmap(fn)(k.reshape(size, kdim))
            return jax.tree_util.tree_map(lambda v: jnp.tensordot(w.astype(v.dtype), v, axes=(0, 0)), vals)

        return jax.checkpoint(weighted)

    if len(devices) > 1 and mesh.size >= len(devices):
        from jax.sharding import Mesh, PartitionSpec

        n_dev = len(devices)
        per_device = -(-n_chunks // n_dev)
        # Even out the devices' work: padded points cost as much as real ones, so use the smallest
        # chunk that still gives per_device chunks each (padding < n_dev·per_device points overall,
        # instead of up to one whole chunk per device). Same chunk count, same compile.
        local_chunk = -(-mesh.size // (n_dev * per_device))
        weighted = make_weighted(local_chunk)

        def local(chunk_ids):
            parts = jax.lax.map(weighted, chunk_ids[0])
            return jax.tree_util.tree_map(lambda p: jnp.sum(p, axis=0)[None], parts)

        dev_mesh = Mesh(np.array(devices), ("k",))
        spread = _shard_map(local, dev_mesh, PartitionSpec("k"), PartitionSpec("k"))
        partial = spread(jnp.arange(n_dev * per_device).reshape(n_dev, per_device))
        return jax.tree_util.tree_map(lambda p: jnp.sum(p, axis=0), partial)

    weighted = make_weighted(chunk_size)
    init = jax.eval_shape(weighted, jnp.asarray(0))
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), init)

    def body(acc, c):
        return jax.tree_util.tree_map(jnp.add, acc, weighted(c)), None

    total, _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return total
