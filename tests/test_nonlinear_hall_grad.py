"""Gradients of the nonlinear Hall quantities w.r.t. model parameters (reverse and forward mode vs
fourth-order central differences), input validation, and the SI factor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from test_nonlinear_hall_lattice import PTModel, tr_model

from qgeo_jax import units
from qgeo_jax._bz import continuum_mesh, monkhorst_pack
from qgeo_jax._nonlinear_hall import (
    berry_curvature_dipole,
    nonlinear_hall_conductivity,
    quantum_metric_dipole,
    si_factor,
)
from qgeo_jax.models import MassiveDirac

TEMP = 0.1


def _fd(fn, x, h):
    """Fourth-order central difference of a scalar function of a scalar."""
    return (-fn(x + 2 * h) + 8 * fn(x + h) - 8 * fn(x - h) + fn(x - 2 * h)) / (12 * h)


def _check_grad(scalar, x0, h=1e-3, rtol=1e-6):
    """jax.grad and jax.jvp of ``scalar`` at the vector x0 vs central differences, per component."""
    g = np.asarray(jax.grad(scalar)(x0))
    for i in range(x0.shape[0]):
        e = jnp.zeros_like(x0).at[i].set(1.0)
        fd = _fd(lambda t, e=e: scalar(x0 + t * e), 0.0, h)
        _, tangent = jax.jvp(scalar, (x0,), (e,))
        assert abs(g[i] - fd) <= rtol * max(abs(fd), 1e-3 * np.max(np.abs(g))), (i, g[i], fd)
        assert_close(tangent, g[i], rtol=1e-10, atol=1e-14)
    assert np.max(np.abs(g)) > 1e-4  # a non-trivial derivative


def test_grad_bcd_fermi_surface():
    base = tr_model()
    mesh = monkhorst_pack(base, (12, 12))

    def scalar(x):
        model = tr_model(m=x[0], e0=x[1], tx=x[2])
        d = berry_curvature_dipole(model, mesh, mu=0.6, temperature=TEMP)
        return d[0, 2] + 0.7 * d[1, 2]

    _check_grad(scalar, jnp.array([0.25, 0.3, 0.4]))


@pytest.mark.parametrize("route", ["fermi_sea", "fermi_surface"])
def test_grad_intrinsic_pt_model(route):
    """Through exactly degenerate (Kramers) bands, PT-preserving parameters; the Fermi-sea route is
    reverse mode over forward-mode ∂_k through the degeneracy-safe eigh."""
    mesh = monkhorst_pack(PTModel(), (10, 10))

    def scalar(x):
        chi = nonlinear_hall_conductivity(
            PTModel(m=x[0], t3=x[1]),
            mesh,
            mu=-0.9,
            temperature=TEMP,
            mechanism="intrinsic",
            route=route,
        )
        return chi[0, 1, 1] + 0.3 * chi[1, 0, 0]

    _check_grad(scalar, jnp.array([1.5, 0.4]))


@pytest.mark.slow  # 13 s; the Drude/BCD gradients on lattice models stay in the default run
def test_grad_drude_and_bcd_continuum():
    """Tilted Dirac valley: d/d(tilt, m) of χ_BCD + χ_Drude (τ = 2) on a polar mesh."""
    mesh = continuum_mesh(MassiveDirac(), k_max=1.0, n=(40, 16))

    def scalar(x):
        model = MassiveDirac(m=x[0], tilt=x[1:])
        kw = dict(mu=0.3, temperature=0.05, tau=2.0)
        chi = nonlinear_hall_conductivity(model, mesh, **kw) + nonlinear_hall_conductivity(
            model, mesh, mechanism="drude", **kw
        )
        return chi[0, 0, 0] + chi[1, 0, 1] - 0.5 * chi[0, 1, 1]

    _check_grad(scalar, jnp.array([0.1, 0.2, -0.07]))


# --- validation ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    model = tr_model()
    return model, monkhorst_pack(model, (4, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mechanism="berry_curvature_dipole"), "needs the relaxation time tau"),
        (dict(mechanism="drude", tau=0.0), "tau must be finite and > 0"),
        (dict(tau=-1.0), "tau must be finite and > 0"),
        (dict(tau=np.inf), "tau must be finite and > 0"),
        (dict(mechanism="intrinsic", tau=1.0), "does not depend on the relaxation time"),
        (dict(mechanism="shift_current", tau=1.0), "unknown mechanism"),
        (dict(tau=1.0, route="fermi_lake"), "unknown route"),
        (dict(tau=1.0, temperature=0.0), "needs temperature > 0"),
        (dict(tau=1.0, temperature=-0.1), "temperature must be finite and >= 0"),
    ],
)
def test_validation(small, kwargs, match):
    model, mesh = small
    kw = dict(mu=0.5, temperature=TEMP) | kwargs
    with pytest.raises(ValueError, match=match):
        nonlinear_hall_conductivity(model, mesh, **kw)


def test_validation_dipoles(small):
    model, mesh = small
    with pytest.raises(ValueError, match="unknown route"):
        berry_curvature_dipole(model, mesh, mu=0.5, temperature=TEMP, route="sea")
    with pytest.raises(ValueError, match="needs temperature > 0"):
        quantum_metric_dipole(model, mesh, mu=0.5)
    with pytest.raises(ValueError, match="continuum model"):
        berry_curvature_dipole(
            MassiveDirac(), monkhorst_pack(tr_model(), (1, 1)), mu=0.3, temperature=TEMP
        )
    # T = 0 is fine for the Fermi sea
    out = quantum_metric_dipole(model, mesh, mu=0.5, route="fermi_sea")
    assert out.shape == (3, 3, 3)


def test_shapes_broadcast(small):
    model, mesh = small
    mu = jnp.linspace(0.2, 0.8, 3)[:, None]
    temperature = jnp.array([0.05, 0.1])[None, :]
    d = berry_curvature_dipole(model, mesh, mu=mu, temperature=temperature)
    chi = nonlinear_hall_conductivity(
        model, mesh, mu=mu, temperature=temperature, tau=jnp.array([1.0, 3.0])
    )
    assert d.shape == (3, 2, 3, 3) and chi.shape == (3, 2, 3, 3, 3)
    one = berry_curvature_dipole(model, mesh, mu=0.5, temperature=0.1)
    assert_close(d[1, 1], one, rtol=1e-12, atol=1e-16)


def test_si_factor():
    """e³ L^{3−d}/(ħ E): for Å and eV in 2D this is (e²/ħ) Å / V."""
    e2_hbar = units.ELEMENTARY_CHARGE**2 / units.HBAR
    assert_close(si_factor(2), e2_hbar * 1e-10, rtol=1e-12)
    assert_close(si_factor(3), e2_hbar, rtol=1e-12)
    assert_close(
        si_factor(2, length_m=1e-9, energy_j=1e-3 * units.ELEMENTARY_CHARGE),
        e2_hbar * 1e-9 * 1e3,
        rtol=1e-12,
    )
    with pytest.raises(ValueError):
        si_factor(4)
