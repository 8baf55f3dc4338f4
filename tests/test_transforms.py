"""Invariances of the computation: basis changes, jit/eager, vmap/loop, chunking.

* Gauge invariance: a k-independent unitary change of orbital basis, H' = W H W†, S' = W S W†,
  leaves every observable unchanged — band_geometry fields, M^O, M^S, σ_AHC, Chern (both routes).
* jit vs eager (``jax.disable_jit``), vmap over model parameters vs a Python loop, and the chunk
  size of the Brillouin-zone reduction (including sizes that do not divide the mesh, 1, and more
  than the mesh) change results only at round-off.
* The modern-theory integrand of seed eq. (5) re-implemented in NumPy from band_geometry outputs and
  summed in a Python loop reproduces :func:`orbital_magnetization` (second route for the reduction
  and the occupation weights).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy.special import expit

import qgeo_jax._bz as bz
from qgeo_jax._chern import chern_number
from qgeo_jax._geometry import band_geometry
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax.models import PAULI, Haldane, QiWuZhang, from_function


def random_unitary(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    return q * (np.diag(r) / np.abs(np.diag(r)))


def _qwz_with_pseudospin():
    qwz = QiWuZhang(u=1.1)
    # a lambda, not the bound method: equinox bound methods are pytrees carrying the model's arrays,
    # which from_function would store in a static field (equinox warns about that)
    return from_function(lambda k: qwz.hamiltonian(k), dim=2, lattice=np.eye(2), spin=PAULI / 2)


def _four_band(rng):
    """Two coupled QWZ copies (C ≠ 0) with spin ½ ⊗ orbital; all orbitals at the origin."""
    a, b = QiWuZhang(u=1.2), QiWuZhang(u=-0.7, t=0.8)
    c = 0.15 * (rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)))

    def h(k):
        top = jnp.concatenate([a.hamiltonian(k) - 2.5 * jnp.eye(2), c], axis=1)
        bot = jnp.concatenate([c.conj().T, b.hamiltonian(k) + 2.5 * jnp.eye(2)], axis=1)
        return jnp.concatenate([top, bot], axis=0)

    spin = np.stack([np.kron(np.eye(2), s) for s in PAULI / 2])
    return from_function(h, dim=2, lattice=np.eye(2), spin=spin)


def _with_basis(model, w):
    """H' = W H W†, S' = W S W†. W is a parameter of one shared function, so the base model
    (W = 1) and every rotated one compile once together."""
    spin = (
        None
        if model.spin_operators() is None
        else jnp.einsum("ij,ajk,kl->ail", w, model.spin_operators(), np.conj(w.T))
    )
    return from_function(
        _rotate, {"w": w, "base": model}, dim=2, lattice=np.asarray(model.lattice), spin=spin
    )


def _rotate(k, p):
    w = p["w"]
    return w @ p["base"].hamiltonian(k) @ jnp.conj(w.T)


@pytest.mark.parametrize("which", ["qwz", "four_band"])
def test_gauge_invariance_under_orbital_basis_change(rng, which):
    base = _qwz_with_pseudospin() if which == "qwz" else _four_band(rng)
    n = base.norb
    rotated = _with_basis(base, random_unitary(rng, n))
    base = _with_basis(base, np.eye(n, dtype=complex))
    ks = jnp.asarray(rng.uniform(-np.pi, np.pi, size=(16, 2)))
    geo = jax.jit(jax.vmap(lambda m, k: band_geometry(m, k), in_axes=(None, 0)))
    g0, g1 = geo(base, ks), geo(rotated, ks)
    for field in (
        "energies",
        "velocity",
        "berry_curvature",
        "quantum_metric",
        "orbital_moment",
        "spin",
    ):
        ref = np.asarray(getattr(g0, field))
        assert_close(getattr(g1, field), ref, rtol=0, atol=1e-11 * np.max(np.abs(ref)), what=field)

    mesh = bz.monkhorst_pack(base, (16, 16))
    mus, temps = np.array([-2.0, 0.1, 1.0]), np.array([0.0, 0.05])[:, None]
    for fn in (orbital_magnetization, spin_magnetization, anomalous_hall_conductivity):
        r0, r1 = (
            fn(base, mesh, mu=mus, temperature=temps),
            fn(rotated, mesh, mu=mus, temperature=temps),
        )
        scale = np.max(np.abs(np.asarray(r0)))
        assert scale > 1e-4, fn.__name__
        assert_close(r1, r0, rtol=0, atol=1e-11 * scale, what=fn.__name__)
    occupied = list(range(n // 2))
    for method in ("kubo", "plaquette"):
        c0 = float(chern_number(base, mesh, occupied, method=method))
        c1 = float(chern_number(rotated, mesh, occupied, method=method))
        assert abs(c0 - c1) < 1e-10, (method, c0, c1)
    assert abs(round(c0)) == 1 or which == "four_band"


def test_chunk_size_does_not_change_results():
    model = Haldane(phi=0.9, delta=0.1)
    mesh = bz.monkhorst_pack(model, (10, 10), shift=0.25)  # 100 points
    ref_m = orbital_magnetization(model, mesh, mu=np.array([-0.3, 0.6]), temperature=0.02)
    ref_c = chern_number(model, mesh, [0], method="kubo")
    ref_s = anomalous_hall_conductivity(model, mesh, mu=0.6, temperature=0.02)
    for chunk in (1, 7, 1000):
        got = orbital_magnetization(
            model, mesh, mu=np.array([-0.3, 0.6]), temperature=0.02, chunk_size=chunk
        )
        assert_close(got, ref_m, rtol=1e-12, atol=1e-16, what=f"M^O chunk {chunk}")
    assert_close(chern_number(model, mesh, [0], chunk_size=7), ref_c, rtol=1e-12)
    assert_close(
        anomalous_hall_conductivity(model, mesh, mu=0.6, temperature=0.02, chunk_size=7),
        ref_s,
        rtol=1e-12,
        atol=1e-16,
    )
    with pytest.raises(ValueError, match="chunk_size"):
        orbital_magnetization(model, mesh, mu=0.0, chunk_size=0)


def test_integrate_padding_and_weights():
    """Σ w = ∫d^dk/(2π)^d of 1: 1/V_cell (lattice), πK²/(2π)² (disk); padding adds exactly zero."""
    model = Haldane()
    for shape, chunk in [((7, 5), 8), ((7, 5), 35), ((7, 5), 3)]:
        mesh = bz.monkhorst_pack(model, shape)
        total = bz.integrate(lambda k: jnp.ones(()), mesh, chunk_size=chunk)
        assert_close(total, 1 / float(model.cell_volume()), rtol=1e-14)
        # a non-trivial periodic function: the mean of cos(k·a1) over a uniform mesh is 0
        cosine = bz.integrate(
            lambda k: jnp.cos(k @ jnp.asarray(model.lattice[0])), mesh, chunk_size=chunk
        )
        assert abs(float(cosine)) < 1e-14
    from qgeo_jax.models import MassiveDirac

    disk = bz.continuum_mesh(MassiveDirac(cutoff=3.0), n=(20, 12))
    assert_close(
        bz.integrate(lambda k: jnp.ones(()), disk, chunk_size=50),
        np.pi * 9 / (2 * np.pi) ** 2,
        rtol=1e-13,
    )
    # ∫ k² over the disk: 2π K⁴/4 / (2π)² (Gauss–Legendre is exact for polynomials)
    assert_close(
        bz.integrate(lambda k: k @ k, disk, chunk_size=33),
        2 * np.pi * 81 / 4 / (2 * np.pi) ** 2,
        rtol=1e-13,
    )


@pytest.mark.slow  # 13 s; jit is exercised by every other test
def test_eager_vs_jit():
    model = _qwz_with_pseudospin()
    mesh = bz.monkhorst_pack(model, (3, 3), shift=0.5)
    kw = dict(mu=np.array([-0.5, 0.4]), temperature=0.1, chunk_size=5)  # two chunks, one padded
    jitted = orbital_magnetization(model, mesh, **kw)
    # op-by-op execution compiles every primitive separately (~5 s CPU), so one response only; the
    # other responses share the same reduction and kernels
    with jax.disable_jit():
        eager = orbital_magnetization(model, mesh, **kw)
    assert_close(jitted, eager, rtol=1e-12, atol=1e-16)


def test_vmap_over_parameters_vs_loop():
    mesh = bz.monkhorst_pack(QiWuZhang(), (12, 12))
    us = jnp.array([-2.5, -1.0, 0.5, 1.7])
    sweep = jax.vmap(
        lambda u: orbital_magnetization(QiWuZhang(u=u), mesh, mu=0.05, temperature=0.01)
    )(us)
    for i, u in enumerate(us):
        assert_close(
            sweep[i],
            orbital_magnetization(QiWuZhang(u=u), mesh, mu=0.05, temperature=0.01),
            rtol=1e-12,
            atol=1e-16,
        )


def test_orbital_magnetization_numpy_loop_route():
    """Seed eq. (5) re-implemented in a NumPy loop:

    Σ_k w Σ_n [m_n f0 + Ω_n T ln(1 + e^{(μ−E_n)/T})]."""
    model = Haldane(t1=-1.0, t2=0.2, phi=1.0, delta=0.25)
    mesh = bz.monkhorst_pack(model, (9, 9), shift=0.5)
    points, weights = map(np.asarray, mesh.all_points())
    mus, temp = np.array([-1.2, 0.0, 0.7]), 0.07
    total = np.zeros((3, 3))
    one_k = jax.jit(lambda k: band_geometry(model, k))
    for k, w in zip(points, weights, strict=True):
        geo = one_k(jnp.asarray(k))
        e = np.asarray(geo.energies)
        x = (mus[:, None] - e[None, :]) / temp
        f0 = expit(x)
        gpw = temp * np.logaddexp(0.0, x)  # −(1/β) ln(1 − f0)
        total += w * (f0 @ np.asarray(geo.orbital_moment) + gpw @ np.asarray(geo.berry_curvature))
    got = orbital_magnetization(model, mesh, mu=mus, temperature=temp)
    assert_close(got, total, rtol=1e-11, atol=1e-16)
