"""Fermi–Dirac occupations: values, stability for |β(E − μ)| up to 1e4 and beyond, T → 0 limits,
derivatives by autodiff, Sommerfeld moments, and temperature validation.

Closed forms: f0 = 1/(1 + e^x), x = (E − μ)/T; f0' = ∂f0/∂E = −f0(1 − f0)/T; the grand-potential
weight of seed eq. (5), −T ln(1 − f0) = T ln(1 + e^{−x}); ∂/∂μ of that weight is f0.
Sommerfeld (Ashcroft & Mermin, ch. 2): ∫ (−f0') dE = 1, ∫ (−f0') (E − μ)² dE = π²T²/3.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy.special import expit

import qgeo_jax._bz as bz
from qgeo_jax._occupation import (
    check_temperature,
    fermi_dirac,
    fermi_dirac_derivative,
    grand_potential_weight,
)
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax.models import QiWuZhang, RashbaLattice


def test_values_against_scipy():
    x = np.linspace(-40, 40, 801)
    for mu, t in [(0.0, 1.0), (0.3, 0.01), (-2.0, 0.5)]:
        e = mu + t * x
        assert_close(fermi_dirac(e, mu, t), expit(-x), rtol=1e-13, atol=1e-300)
        f = expit(-x)
        # −f0(1 − f0)/T written without the cancellation in 1 − f0: −e^{−|x|}/(1 + e^{−|x|})²/T
        ex = np.exp(-np.abs(x))
        assert_close(
            fermi_dirac_derivative(e, mu, t), -ex / (1 + ex) ** 2 / t, rtol=1e-13, atol=1e-300
        )
        assert_close(grand_potential_weight(e, mu, t), t * np.logaddexp(0.0, -x), rtol=1e-13)
        # −T ln(1 − f0) directly where 1 − f0 is not rounded away
        safe = (
            x > -10
        )  # beyond that the naive log1p(−f0) itself loses digits (why softplus is used)
        assert_close(
            np.asarray(grand_potential_weight(e, mu, t))[safe], -t * np.log1p(-f[safe]), rtol=1e-10
        )
    assert float(fermi_dirac(0.7, 0.7, 0.2)) == 0.5


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e8, 1e300])
def test_stable_for_huge_beta_e(scale):
    """|x| up to 1e300: no inf/NaN, exact saturation, and finite gradients."""
    t = 0.01
    e = jnp.array([-scale, -1.0, 0.0, 1.0, scale]) * t
    f = np.asarray(fermi_dirac(e, 0.0, t))
    d = np.asarray(fermi_dirac_derivative(e, 0.0, t))
    w = np.asarray(grand_potential_weight(e, 0.0, t))
    for arr in (f, d, w):
        assert np.isfinite(arr).all()
    # e^{−|x|}: 3.7e-44 at |x| = 100, 0 in float64 beyond |x| ≈ 745
    tail = np.exp(-scale)
    assert f[0] == 1.0 and abs(f[-1] - tail) <= 1e-15 * tail
    assert abs(d[0]) <= 1.01 * tail / t and abs(d[-1]) <= 1.01 * tail / t and np.all(d <= 0)
    assert_close(w[0], scale * t, rtol=1e-15)  # = μ − E for E ≪ μ
    assert abs(w[-1] - t * tail) <= 1e-15 * t * tail and np.all(w >= 0)
    for fn in (fermi_dirac, fermi_dirac_derivative, grand_potential_weight):
        for argnum in (0, 1, 2):
            g = jax.vmap(jax.grad(fn, argnums=argnum), in_axes=(0, None, None))(e, 0.0, t)
            assert np.isfinite(np.asarray(g)).all(), (fn.__name__, argnum)


def test_zero_temperature_limits():
    e = jnp.array([-1.0, -1e-3, 0.0, 1e-3, 1.0])
    mu = 0.0
    # T = 0 exactly: the documented limits
    assert_close(fermi_dirac(e, mu, 0.0), [1, 1, 0.5, 0, 0], rtol=0, atol=0)
    assert_close(grand_potential_weight(e, mu, 0.0), [1.0, 1e-3, 0, 0, 0], rtol=0, atol=0)
    assert_close(fermi_dirac_derivative(e, mu, 0.0), 0.0, rtol=0, atol=0)
    # T → 0⁺ approaches them: |weight(T) − max(μ − E, 0)| ≤ T ln 2 (equality at E = μ)
    for t in (1e-2, 1e-5, 1e-9):
        w = np.asarray(grand_potential_weight(e, mu, t))
        assert np.all(
            np.abs(w - np.maximum(mu - np.asarray(e), 0.0)) <= t * np.log(2) * (1 + 1e-12)
        )
        assert_close(w[2], t * np.log(2), rtol=1e-14)
        if t < 1e-4:
            assert_close(fermi_dirac(e, mu, t), [1, 1, 0.5, 0, 0], rtol=0, atol=1e-40)
    # the gradient at T = 0 is finite (the T > 0 branch is masked with a double where)
    for fn in (fermi_dirac, grand_potential_weight, fermi_dirac_derivative):
        assert np.isfinite(
            np.asarray(jax.vmap(jax.grad(fn, argnums=2), in_axes=(0, None, None))(e, mu, 0.0))
        ).all()


def test_derivatives_by_autodiff():
    """Autodiff vs the closed forms.

    Absolute tolerance 1e-14/T: autodiff of the logistic function uses
    σ(1 − σ), which loses relative (not absolute) accuracy where f0 rounds to 1."""
    e = jnp.linspace(-1.0, 1.0, 41)
    mu, t = 0.13, 0.07
    df_de = jax.vmap(jax.grad(fermi_dirac), in_axes=(0, None, None))(e, mu, t)
    assert_close(df_de, fermi_dirac_derivative(e, mu, t), rtol=1e-12, atol=1e-14 / t)
    df_dmu = jax.vmap(jax.grad(fermi_dirac, argnums=1), in_axes=(0, None, None))(e, mu, t)
    assert_close(df_dmu, -fermi_dirac_derivative(e, mu, t), rtol=1e-12, atol=1e-14 / t)
    # ∂(weight)/∂μ = f0 and ∂(weight)/∂E = −f0: the Středa structure of seed eq. (5)
    dw_dmu = jax.vmap(jax.grad(grand_potential_weight, argnums=1), in_axes=(0, None, None))(
        e, mu, t
    )
    assert_close(dw_dmu, fermi_dirac(e, mu, t), rtol=1e-12, atol=1e-300)
    dw_de = jax.vmap(jax.grad(grand_potential_weight), in_axes=(0, None, None))(e, mu, t)
    assert_close(dw_de, -fermi_dirac(e, mu, t), rtol=1e-12, atol=1e-300)
    # ∂f0/∂T = −(E − μ)/T · f0'
    df_dt = jax.vmap(jax.grad(fermi_dirac, argnums=2), in_axes=(0, None, None))(e, mu, t)
    assert_close(
        df_dt, -(e - mu) / t * fermi_dirac_derivative(e, mu, t), rtol=1e-12, atol=1e-14 / t
    )


def test_sommerfeld_moments():
    mu, t = 0.2, 0.03
    e = np.linspace(mu - 60 * t, mu + 60 * t, 24001)
    minus_fp = -np.asarray(fermi_dirac_derivative(jnp.asarray(e), mu, t))
    de = e[1] - e[0]
    assert_close(np.sum(minus_fp) * de, 1.0, rtol=1e-10)
    assert_close(np.sum(minus_fp * (e - mu) ** 2) * de, np.pi**2 * t**2 / 3, rtol=1e-8)
    # ∫ f0 dE over [a, b] with a ≪ μ: μ − a (the T ln(…) tails cancel to e^{−60})
    f = np.asarray(fermi_dirac(jnp.asarray(e), mu, t))
    assert_close(np.sum(f) * de - 0.5 * de * (f[0] + f[-1]), mu - e[0], rtol=1e-9)


def test_broadcasting_shapes():
    e = jnp.zeros((4,))
    mu = jnp.zeros((3, 1))
    t = jnp.full((2, 1, 1), 0.1)
    assert fermi_dirac(e, mu, t).shape == (2, 3, 4)
    assert grand_potential_weight(e, mu, t).shape == (2, 3, 4)


def test_check_temperature():
    check_temperature(jnp.array([0.0, 0.1]), fermi_surface=False)
    check_temperature(jnp.array([1e-3, 0.1]), fermi_surface=True)
    with pytest.raises(RuntimeError, match="finite and >= 0"):
        check_temperature(jnp.array([0.1, -1e-3]), fermi_surface=False)
    with pytest.raises(RuntimeError, match="finite and >= 0"):
        check_temperature(jnp.array(np.nan), fermi_surface=False)
    with pytest.raises(RuntimeError, match="finite and >= 0"):
        check_temperature(jnp.array(np.inf), fermi_surface=False)
    with pytest.raises(RuntimeError, match="needs temperature > 0"):
        check_temperature(jnp.array([0.1, 0.0]), fermi_surface=True)
    # also under jit (equinox error_if is a runtime check)
    jitted = eqx.filter_jit(lambda t: check_temperature(t, fermi_surface=True))
    assert_close(jitted(jnp.array(0.2)), 0.2, rtol=0)
    with pytest.raises(RuntimeError, match="needs temperature > 0"):
        jitted(jnp.array(0.0))


def test_responses_reject_bad_temperatures():
    model = RashbaLattice(exchange=(0.0, 0.0, 0.2))
    mesh = bz.monkhorst_pack(model, (4, 4))
    for fn in (orbital_magnetization, spin_magnetization, anomalous_hall_conductivity):
        with pytest.raises(RuntimeError, match="finite and >= 0"):
            fn(model, mesh, mu=0.0, temperature=np.array([0.1, -0.01]))
    with pytest.raises(RuntimeError, match="finite and >= 0"):
        orbital_magnetization(
            QiWuZhang(), bz.monkhorst_pack(QiWuZhang(), (4, 4)), mu=0.0, temperature=np.nan
        )
