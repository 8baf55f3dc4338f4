"""Batched parameter sweeps (qgeo_jax._sweep): the Python loop's results, compiled once.

Routes compared: ``sweep`` (lax.map over blocks, vmap inside) against the plain Python loop over the
individual models, for several block sizes (with and without a remainder block), and batched models
built three ways (stack_models, vary, eqx.tree_at + ``batched=``); gradients through a sweep against
the loop of gradients.

Closed forms: the Qi–Wu–Zhang phase diagram, |C| = 1 for 0 < |u/t| < 2 and C = 0 for |u/t| > 2,
with sign(C) = −sign(u) in this package's convention (X.-L. Qi, Y.-S. Wu, S.-C. Zhang, PRB 74,
085308 (2006), doi:10.1103/PhysRevB.74.085308; the sign follows from C = (1/2π)∫Ω^{xy} with
Ω = −2 Im Σ v^x v^y/(ΔE)², README "Conventions"), as one sweep of the plaquette (Fukui–Hatsugai)
Chern number; and Edelstein's |α^{yx}| = g τ α m*/(4π) for the Rashba gas above the crossing.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgeo_jax  # noqa: F401  (x64 policy)
from qgeo_jax._bz import continuum_mesh, monkhorst_pack
from qgeo_jax._chern import chern_number
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._responses import anomalous_hall_conductivity, orbital_magnetization
from qgeo_jax._sweep import batch_length, stack_models, sweep, unstack_models, vary
from qgeo_jax.models import Haldane, MassiveDirac, QiWuZhang, Rashba

MUS = jnp.array([-0.8, 0.0, 0.45])


@pytest.fixture(scope="module")
def haldane_batch():
    base = Haldane(t1=-1.0, t2=0.15, phi=1.1, delta=0.2)
    phis = jnp.linspace(0.2, 2.9, 5)
    return base, phis, monkhorst_pack(base, (16, 16))


def _loop(fn, models, *args, **kwargs):
    return jnp.stack([fn(m, *args, **kwargs) for m in models])


@pytest.mark.parametrize("batch_size", [None, 0, 2, 5])
def test_sweep_equals_python_loop(haldane_batch, batch_size):
    base, phis, mesh = haldane_batch
    models = vary(base, lambda m: m.phi, phis)
    singles = [eqx.tree_at(lambda m: m.phi, base, p) for p in phis]
    got = sweep(
        orbital_magnetization, models, mesh, mu=MUS, temperature=0.05, batch_size=batch_size
    )
    want = _loop(orbital_magnetization, singles, mesh, mu=MUS, temperature=0.05)
    assert got.shape == (5, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_three_ways_to_build_a_batch_agree(haldane_batch):
    base, phis, mesh = haldane_batch
    singles = [eqx.tree_at(lambda m: m.phi, base, p) for p in phis]
    by_stack = stack_models(singles)
    by_vary = vary(base, lambda m: m.phi, phis)
    by_tree_at = eqx.tree_at(lambda m: m.phi, base, phis)  # only φ carries the batch axis
    a = sweep(anomalous_hall_conductivity, by_stack, mesh, mu=MUS, temperature=0.05)
    b = sweep(anomalous_hall_conductivity, by_vary, mesh, mu=MUS, temperature=0.05)
    c = sweep(
        anomalous_hall_conductivity,
        by_tree_at,
        mesh,
        mu=MUS,
        temperature=0.05,
        batched=lambda m: m.phi,
    )
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-16)
    # round trip
    back = unstack_models(by_stack)
    assert len(back) == 5 and batch_length(by_stack) == 5
    for m, s in zip(back, singles, strict=True):
        assert float(m.phi) == float(s.phi) and float(m.t2) == float(s.t2)


def test_sweep_compiles_once(haldane_batch):
    """The swept function is traced once per program; new parameter values do not retrace."""
    base, phis, mesh = haldane_batch
    traces = []

    def counted(model, mesh, mu):
        traces.append(1)
        return orbital_magnetization(model, mesh, mu=mu, temperature=0.05)

    sweep(counted, vary(base, lambda m: m.phi, phis), mesh, MUS, batch_size=5)
    n_first = len(traces)
    assert n_first == 1
    sweep(counted, vary(base, lambda m: m.phi, phis + 0.1), mesh, MUS + 0.2, batch_size=5)
    sweep(counted, vary(base, lambda m: m.phi, -phis), mesh, MUS - 0.1, batch_size=5)
    assert len(traces) == n_first


def test_gradient_of_sweep_equals_loop_of_gradients(haldane_batch):
    base, phis, mesh = haldane_batch

    def total(phis):
        out = sweep(
            orbital_magnetization,
            vary(base, lambda m: m.phi, phis),
            mesh,
            mu=0.0,
            temperature=0.0,
            batch_size=2,
        )
        return jnp.sum(out[:, 2])

    single = jax.jit(
        jax.grad(
            lambda p: orbital_magnetization(eqx.tree_at(lambda m: m.phi, base, p), mesh, mu=0.0)[2]
        )
    )
    got = jax.grad(total)(phis)
    want = jnp.stack([single(p) for p in phis])
    np.testing.assert_allclose(got, want, rtol=1e-11)


def test_qwz_phase_diagram_in_one_sweep():
    """C(u) of Qi–Wu–Zhang for many u in one compiled sweep, against the closed form."""
    us = jnp.array([-2.6, -1.5, -0.5, 0.5, 1.5, 2.6])
    models = vary(QiWuZhang(t=1.0), lambda m: m.u, us)
    mesh = monkhorst_pack(QiWuZhang(), (24, 24))
    plaquette = sweep(lambda m, mesh: chern_number(m, mesh, [0], method="plaquette"), models, mesh)
    closed_form = np.where(np.abs(us) < 2, -np.sign(us), 0.0)
    np.testing.assert_allclose(plaquette, closed_form, atol=1e-9)
    # the Kubo route converges to the same integers (second route, here on the same mesh)
    kubo = sweep(lambda m, mesh: chern_number(m, mesh, [0]), models, mesh, batch_size=3)
    np.testing.assert_allclose(kubo, closed_form, atol=2e-2)


def test_sweep_of_a_kinetic_response_over_two_fields():
    base = Rashba(mass=0.5, alpha=0.5)
    mesh = continuum_mesh(base, k_max=3.0, n=(96, 24))
    alphas = jnp.array([0.3, 0.5, 0.7])
    jzs = jnp.array([0.0, 0.05, 0.1])
    exchange = jnp.stack([jnp.zeros(3), jnp.zeros(3), jzs], axis=-1)
    models = vary(base, lambda m: (m.alpha, m.exchange), (alphas, exchange))

    def edelstein(m, mesh):
        return kinetic_magnetization(
            m, mesh, mu=0.4, temperature=0.05, part="spin", mechanism="extrinsic", tau=1.0
        )

    got = sweep(edelstein, models, mesh, batch_size=2)
    want = _loop(edelstein, unstack_models(models), mesh)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-16)
    # Physics check on the first model (J = 0): Edelstein's closed form above the band crossing,
    # |α^{yx}| = g τ α m*/(4π) = α/(4π) for g = 2, m* = 0.5, and α^{xy} = −α^{yx} (V. M. Edelstein,
    # SSC 73, 233 (1990), doi:10.1016/0038-1098(90)90963-C). Tolerance: Sommerfeld corrections
    # O((T/μ)²) at T = 0.05, μ = 0.4 and the radial quadrature across the Fermi surface (≈ 3e-4).
    closed = 0.3 / (4 * np.pi)
    assert abs(abs(float(got[0, 1, 0])) - closed) < 1e-3 * closed
    assert abs(float(got[0, 0, 1] + got[0, 1, 0])) < 1e-12


def test_errors_are_clear():
    with pytest.raises(ValueError, match="static configuration"):
        stack_models([MassiveDirac(valley=1), MassiveDirac(valley=-1)])
    with pytest.raises(ValueError, match="at least one"):
        stack_models([])
    bad = eqx.tree_at(lambda m: (m.t2, m.phi), Haldane(), (jnp.zeros(3), jnp.zeros(4)))
    with pytest.raises(ValueError, match="same leading batch axis"):
        sweep(lambda m: m.t2, bad)
    with pytest.raises(ValueError, match="shape"):
        vary(Haldane(), lambda m: m.t2, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        sweep(lambda m: m.t2, vary(Haldane(), lambda m: m.t2, jnp.zeros(3)), batch_size=-1)
    with pytest.raises(ValueError, match="same batch length"):
        vary(Haldane(), lambda m: (m.t2, m.phi), (jnp.zeros(3), jnp.zeros(4)))
