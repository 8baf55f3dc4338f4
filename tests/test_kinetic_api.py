"""Public API of the kinetic magnetization: shapes, broadcasting, validation, compile-once, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax as q
from qgeo_jax._kinetic import kinetic_integrand, kinetic_magnetization, spin_berry_curvature
from qgeo_jax.models import PAULI


@pytest.fixture(scope="module")
def rashba():
    model = q.models.Rashba(mass=0.5, alpha=0.5, exchange=(0.0, 0.0, 0.05))
    return model, q.continuum_mesh(model, k_max=1.6, n=(200, 8))


ALL = [("spin", "extrinsic"), ("spin", "intrinsic"), ("orbital", "extrinsic")]


def _kw(mechanism):
    return dict(tau=1.0) if mechanism == "extrinsic" else {}


@pytest.mark.parametrize(("part", "mechanism"), ALL)
def test_shapes_and_broadcasting(rashba, part, mechanism):
    model, mesh = rashba
    mus, temps = jnp.array([-0.02, 0.1, 0.3]), jnp.array([0.01, 0.02])
    grid = kinetic_magnetization(
        model, mesh, mu=mus[:, None], temperature=temps[None, :], part=part, mechanism=mechanism, **_kw(mechanism)
    )
    assert grid.shape == (3, 2, 3, 3)
    for i, j in [(0, 1), (2, 0)]:
        one = kinetic_magnetization(
            model, mesh, mu=mus[i], temperature=temps[j], part=part, mechanism=mechanism, **_kw(mechanism)
        )
        assert one.shape == (3, 3)
        assert_close(grid[i, j], one, rtol=1e-12, atol=1e-15)
    # scalar T broadcasts against a μ vector
    vec = kinetic_magnetization(model, mesh, mu=mus, temperature=0.01, part=part, mechanism=mechanism, **_kw(mechanism))
    assert_close(vec, grid[:, 0], rtol=1e-12, atol=1e-15)


def test_tau_and_g_factor_scaling_and_broadcasting(rashba):
    model, mesh = rashba
    kw = dict(mu=jnp.array([0.1, 0.3]), temperature=0.01, mechanism="extrinsic")
    base = kinetic_magnetization(model, mesh, part="spin", tau=1.0, **kw)
    taus = jnp.array([[0.5], [2.0], [7.0]])  # broadcasts with μ's shape (2,) → (3, 2)
    many = kinetic_magnetization(model, mesh, part="spin", tau=taus, **kw)
    assert many.shape == (3, 2, 3, 3)
    assert_close(many, taus[..., None, None] * base[None], rtol=1e-13, atol=1e-15)
    assert_close(kinetic_magnetization(model, mesh, part="spin", tau=1.0, g_factor=2.2, **kw), 1.1 * base, rtol=1e-13)
    # g does not enter the orbital part
    orb = kinetic_magnetization(model, mesh, part="orbital", tau=1.0, **kw)
    assert_close(kinetic_magnetization(model, mesh, part="orbital", tau=1.0, g_factor=3.0, **kw), orb, rtol=0)


@pytest.mark.parametrize(("part", "mechanism"), ALL)
def test_integrand_matches_entry_point(rashba, part, mechanism):
    model, mesh = rashba
    mus, t = jnp.array([0.1, 0.3]), 0.02
    direct = kinetic_magnetization(model, mesh, mu=mus, temperature=t, part=part, mechanism=mechanism, **_kw(mechanism))
    k_pts, w = mesh.all_points()
    density = jax.jit(jax.vmap(lambda k: kinetic_integrand(model, k, mu=mus, temperature=t, part=part, mechanism=mechanism)))
    dens = density(k_pts)
    assert_close(jnp.tensordot(w, dens, axes=(0, 0)), direct, rtol=1e-12, atol=1e-15)


# --- validation --------------------------------------------------------------------------------------
def test_spin_parts_need_spin_operators():
    model = q.models.QiWuZhang()
    mesh = q.monkhorst_pack(model, (8, 8))
    for mechanism in ("extrinsic", "intrinsic"):
        with pytest.raises(ValueError, match="spin operators"):
            kinetic_magnetization(model, mesh, mu=0.0, temperature=0.1, part="spin", mechanism=mechanism, **_kw(mechanism))
    with pytest.raises(ValueError, match="spin operators"):
        spin_berry_curvature(q.spectrum(model, jnp.zeros(2)))
    # the orbital part works without spin operators
    out = kinetic_magnetization(model, mesh, mu=0.0, temperature=0.1, part="orbital", mechanism="extrinsic", tau=1.0)
    assert np.all(np.isfinite(out))


def test_argument_errors(rashba):
    model, mesh = rashba
    base = dict(mu=0.1, temperature=0.01)
    with pytest.raises(ValueError, match="unknown part"):
        kinetic_magnetization(model, mesh, part="charge", mechanism="extrinsic", tau=1.0, **base)
    with pytest.raises(ValueError, match="different model units"):
        kinetic_magnetization(model, mesh, part="total", mechanism="extrinsic", tau=1.0, **base)
    with pytest.raises(ValueError, match="unknown mechanism"):
        kinetic_magnetization(model, mesh, part="spin", mechanism="skew", tau=1.0, **base)
    with pytest.raises(ValueError, match="tau"):
        kinetic_magnetization(model, mesh, part="spin", mechanism="extrinsic", **base)
    with pytest.raises(ValueError, match="does not depend on the relaxation time"):
        kinetic_magnetization(model, mesh, part="spin", mechanism="intrinsic", tau=1.0, **base)
    mesh3d = q.ExplicitMesh(points=jnp.zeros((4, 3)), weights=jnp.ones(4))
    with pytest.raises(ValueError, match="mesh is 3D"):
        kinetic_magnetization(model, mesh3d, part="spin", mechanism="intrinsic", **base)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), jnp.array([1.0, -2.0])])
def test_tau_must_be_positive(rashba, tau):
    model, mesh = rashba
    with pytest.raises(eqx.EquinoxRuntimeError, match="tau"):
        kinetic_magnetization(model, mesh, mu=0.1, temperature=0.01, part="spin", mechanism="extrinsic", tau=tau)


def test_temperature_checks(rashba):
    model, mesh = rashba
    for part in ("spin", "orbital"):
        with pytest.raises(eqx.EquinoxRuntimeError, match="temperature > 0"):
            kinetic_magnetization(model, mesh, mu=0.1, temperature=jnp.array([0.01, 0.0]), part=part,
                                  mechanism="extrinsic", tau=1.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="temperature"):
        kinetic_magnetization(model, mesh, mu=0.1, temperature=-0.01, part="spin", mechanism="intrinsic")
    # the Fermi-sea (intrinsic) response accepts T = 0
    out = kinetic_magnetization(model, mesh, mu=0.1, temperature=0.0, part="spin", mechanism="intrinsic")
    assert np.all(np.isfinite(out))


# --- compile once -------------------------------------------------------------------------------------
_TRACES = {"n": 0}


def _counting_rashba(k, p):
    _TRACES["n"] += 1  # runs only while JAX traces the function
    kin = (k[0] ** 2 + k[1] ** 2) / (2 * p["m"])
    return kin * jnp.eye(2) + p["a"] * (k[0] * PAULI[1] - k[1] * PAULI[0]) + p["j"] * PAULI[2]


@pytest.mark.parametrize(("part", "mechanism"), ALL)
def test_no_recompilation_when_values_change(part, mechanism):
    params = dict(m=jnp.asarray(0.5), a=jnp.asarray(0.5), j=jnp.asarray(0.05))
    model = q.models.from_function(_counting_rashba, params, dim=2, spin=PAULI / 2, k_cutoff=1.6)
    mesh = q.continuum_mesh(model, n=(64, 8))

    def run(mu, t, tau, g, model=model):
        kw = dict(tau=tau) if mechanism == "extrinsic" else {}
        return kinetic_magnetization(model, mesh, mu=mu, temperature=t, part=part, mechanism=mechanism, g_factor=g, **kw)

    model2 = q.models.from_function(_counting_rashba, dict(params, a=jnp.asarray(0.4)), dim=2, spin=PAULI / 2, k_cutoff=1.6)
    first = run(jnp.array([0.1, 0.2]), 0.01, 1.0, 2.0)
    traced = _TRACES["n"]
    second = run(jnp.array([0.15, 0.3]), 0.02, 3.0, 2.1)
    third = run(jnp.array([0.15, 0.3]), 0.02, 3.0, 2.1, model=model2)
    assert _TRACES["n"] == traced, "changing μ, T, τ, g or a parameter value must not retrace"
    if part == "spin":  # (the orbital Edelstein response of the isotropic Rashba gas is zero)
        assert not np.allclose(first, second) and not np.allclose(second, third)


# --- differentiability ----------------------------------------------------------------------------------
def test_gradient_against_closed_form():
    """Edelstein above the band crossing: α^{yx} = −g τ m α/(4π) (tests/test_kinetic_spin.py), so
    ∂α^{yx}/∂α = −g τ m/(4π) and ∂α^{yx}/∂m = −g τ α/(4π); reverse mode through the whole pass."""
    m, a, tau = 0.5, 0.5, 1.5
    mesh = q.continuum_mesh(q.models.Rashba(mass=m, alpha=a), k_max=1.6, n=(400, 8))

    def response(model):
        return kinetic_magnetization(model, mesh, mu=0.3, temperature=0.01, part="spin", mechanism="extrinsic", tau=tau)[1, 0]

    grads = eqx.filter_grad(response)(q.models.Rashba(mass=m, alpha=a))
    assert_close(grads.alpha, -2 * tau * m / (4 * np.pi), rtol=1e-6)  # mesh error of f0'' terms: 2e-7
    assert_close(grads.mass, -2 * tau * a / (4 * np.pi), rtol=1e-6)


@pytest.mark.parametrize(("part", "mechanism"), ALL)
def test_gradient_matches_finite_differences(part, mechanism):
    mesh = q.monkhorst_pack(q.models.RashbaLattice(), (24, 24))

    def response(j):
        model = q.models.RashbaLattice(t=1.0, alpha=0.6, exchange=jnp.stack([0.1, 0.0, j]))
        out = kinetic_magnetization(model, mesh, mu=-2.0, temperature=0.3, part=part, mechanism=mechanism, **_kw(mechanism))
        return jnp.sum(out * jnp.arange(9.0).reshape(3, 3))

    j0, h = 0.3, 1e-3
    grad = jax.grad(response)(j0)
    fd = (8 * (response(j0 + h) - response(j0 - h)) - (response(j0 + 2 * h) - response(j0 - 2 * h))) / (12 * h)
    assert np.isfinite(grad)
    assert_close(grad, fd, rtol=1e-6, atol=1e-10)


def test_gradient_finite_at_kramers_degeneracies():
    """Exactly degenerate bands at the TRIM of a time-reversal symmetric lattice (k = 0 is on the
    mesh): gradients stay finite (degeneracy-safe eigh + masked denominators)."""
    mesh = q.monkhorst_pack(q.models.RashbaLattice(), (16, 16))

    def response(a):
        model = q.models.RashbaLattice(t=1.0, alpha=a)
        ex = kinetic_magnetization(model, mesh, mu=-2.0, temperature=0.3, part="spin", mechanism="extrinsic", tau=1.0)
        orb = kinetic_magnetization(model, mesh, mu=-2.0, temperature=0.3, part="orbital", mechanism="extrinsic", tau=1.0)
        inn = kinetic_magnetization(model, mesh, mu=-2.0, temperature=0.3, part="spin", mechanism="intrinsic")
        return ex[1, 0] + jnp.sum(orb) + jnp.sum(inn)

    assert np.isfinite(jax.grad(response)(0.6))


# --- the intrinsic orbital part is helper B2's integrand, dispatched here ---------------------------------
def _honeycomb(phase, nnn):
    """Strained gapped honeycomb; ``phase`` on one bond and imaginary NNN hopping ``nnn`` break T."""
    lattice = [[np.sqrt(3), 0.0], [np.sqrt(3) / 2, 1.5]]
    hops = [(-1.0, 0, 1, (0, 0)), (-1.15 * np.exp(1j * phase), 0, 1, (-1, 0)), (-0.9, 0, 1, (0, -1)),
            (1j * nnn, 0, 0, (1, 0)), (1j * nnn, 1, 1, (1, 0))]
    return q.models.TightBinding(lattice, [[0, 0], [1 / 3, 1 / 3]], [0.5, -0.5], hops)


def test_intrinsic_orbital_dispatch_and_symmetry():
    me = pytest.importorskip("qgeo_jax._magnetoelectric")
    mesh = q.monkhorst_pack(_honeycomb(0.0, 0.0), (16, 16))
    mus = jnp.array([0.0, 0.9])
    kw = dict(mu=mus, temperature=0.1, part="orbital", mechanism="intrinsic")
    # time-reversal symmetric (real hoppings): the intrinsic orbital response vanishes
    out = kinetic_magnetization(_honeycomb(0.0, 0.0), mesh, **kw)
    assert out.shape == (2, 3, 3)
    assert np.abs(out).max() < 1e-12
    # breaking T makes it finite, and the entry point is Σ_k w(k) × B2's per-k integrand
    model_t = _honeycomb(0.4, 0.1)
    out_t = kinetic_magnetization(model_t, mesh, **kw)
    k_pts, w = mesh.all_points()
    t_b = jnp.full(mus.shape, 0.1)
    dens = jax.jit(jax.vmap(lambda k: me.intrinsic_orbital_integrand(model_t, k, mus, t_b)))(k_pts)
    assert_close(out_t, jnp.tensordot(w, dens, axes=(0, 0)), rtol=1e-11, atol=1e-16)
    assert np.all(np.isfinite(out_t)) and np.abs(out_t).max() > 1e-6


def test_inside_user_jit_and_vmap_over_parameters(rashba):
    """The entry point composes with jax.jit and with vmap over a model parameter (sweeps)."""
    model, mesh = rashba
    eager = kinetic_magnetization(model, mesh, mu=0.1, temperature=0.01, part="spin", mechanism="extrinsic", tau=2.0)

    @jax.jit
    def run(mu, tau):
        return kinetic_magnetization(model, mesh, mu=mu, temperature=0.01, part="spin", mechanism="extrinsic", tau=tau)

    assert_close(run(0.1, 2.0), eager, rtol=1e-13, atol=1e-16)

    def by_alpha(a):
        m = q.models.Rashba(mass=0.5, alpha=a, exchange=(0.0, 0.0, 0.05))
        return kinetic_magnetization(m, mesh, mu=0.1, temperature=0.01, part="spin", mechanism="intrinsic")

    alphas = jnp.array([0.3, 0.5])
    batched = jax.vmap(by_alpha)(alphas)
    for i, a in enumerate(alphas):
        assert_close(batched[i], by_alpha(a), rtol=1e-12, atol=1e-16)
