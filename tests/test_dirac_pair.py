"""Tilted-Dirac-pair (bilayer WTe₂ band-anticrossing) model, qgeo_jax.models._dirac_pair.

Model source: Du, Wang, Lu, Xie, PRL 121, 266601 (2018), doi:10.1103/PhysRevLett.121.266601 — the
published parameter values could NOT be verified in the available corpus, so the parameter set
below is illustrative only (it is the one of a third-party transcription, see the module warning)
and the tests check closed forms, symmetries and two independent routes to the Berry curvature
dipole, not the paper's numbers.

The Berry curvature dipole (BCD) is computed here with a private Fermi-surface sum
D_x = −Σ_n ∫ d²k/(2π)² v_n^x Ω_n^z f0'(E_n) (Sodemann & Fu, PRL 115, 216806 (2015), eq. (3));
the lead will switch it to the library BCD function.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import continuum_mesh, integrate
from qgeo_jax._geometry import band_geometry
from qgeo_jax._occupation import fermi_dirac, fermi_dirac_derivative
from qgeo_jax.models._dirac_pair import TiltedDiracPair

# Illustrative (unverified) parameters, eV and Å.
PARAMS = dict(energy=(0.02, -0.08), tilt=1.5, velocity=2.0, mass=0.1, gamma=0.05)
geometry = eqx.filter_jit(jax.vmap(band_geometry, in_axes=(None, 0)))
T = 0.005
MUS = jnp.linspace(-0.15, 0.08, 7)


def bcd_fermi_surface(model, mesh):
    """Route 1: D_x(μ) = −Σ_n ∫ v_n^x Ω_n^z ∂f0/∂E."""

    def fn(k):
        g = band_geometry(model, k)
        df = fermi_dirac_derivative(g.energies[None, :], MUS[:, None], T)
        return -jnp.sum(g.velocity[None, :, 0] * g.berry_curvature[None, :, 2] * df, axis=1)

    return np.asarray(integrate(fn, mesh))


def bcd_fermi_sea(model, mesh):
    """Route 2: D_x(μ) = Σ_n ∫ (f0(E_n) − θ_n) ∂_x Ω_n^z, ∂_x Ω by forward-mode autodiff of the
    Kubo formula. θ_n = 1 for the two lower bands: they are full at the edge of the disk, and
    Σ_n Ω_n = 0 makes subtracting a full band exact while removing the boundary term ∮ Ω n_x."""
    full = jnp.array([1.0, 1.0, 0.0, 0.0])

    def fn(k):
        e = band_geometry(model, k).energies
        d_omega = jax.jacfwd(lambda q: band_geometry(model, q).berry_curvature[:, 2])(k)[:, 0]
        occ = fermi_dirac(e[None, :], MUS[:, None], T) - full[None, :]
        return jnp.sum(occ * d_omega[None, :], axis=1)

    return np.asarray(integrate(fn, mesh))


def test_closed_form_bands_and_berry_curvature_without_coupling(rng):
    # γ = 0: E_{i,±} = E_i + t_i q_x ± d_i, Ω_{i,±} = ±η_i m v_i² / (4 d_i³),
    # d_i = (v_i²q² + m²/4)^½, q = k − K_i.
    params = dict(energy=(0.03, -0.05), tilt=(0.7, -0.4), velocity=(1.3, 2.1), mass=0.12, gamma=0.0)
    centers = np.array([[0.02, -0.01], [-0.03, 0.015]])
    model = TiltedDiracPair(**params, centers=centers, chirality=(-1, 1))
    ks = rng.normal(size=(8, 2)) * 0.1
    g = geometry(model, jnp.asarray(ks))
    expected_e, expected_omega = [], []
    for i, eta in enumerate((-1, 1)):
        v, t, e0, m = params["velocity"][i], params["tilt"][i], params["energy"][i], params["mass"]
        q = ks - centers[i]
        d = np.sqrt(v**2 * np.sum(q**2, axis=1) + m**2 / 4)
        for s in (-1, 1):
            expected_e.append(e0 + t * q[:, 0] + s * d)
            expected_omega.append(s * eta * m * v**2 / (4 * d**3))
    expected_e, expected_omega = np.stack(expected_e, 1), np.stack(expected_omega, 1)
    order = np.argsort(expected_e, axis=1)
    assert_close(g.energies, np.take_along_axis(expected_e, order, 1), rtol=0, atol=1e-14)
    assert_close(
        g.berry_curvature[..., 2], np.take_along_axis(expected_omega, order, 1), rtol=1e-10
    )


def test_time_reversed_partner_pointwise(rng):
    # H_−(k) = H_+(−k)*: E_−(k) = E_+(−k), Ω_−(k) = −Ω_+(−k), v_−(k) = −v_+(−k).
    model = TiltedDiracPair(**PARAMS, centers=((0.05, 0.0), (-0.02, 0.01)))
    ks = jnp.asarray(rng.normal(size=(6, 2)) * 0.1)
    plus, minus = geometry(model, -ks), geometry(model.partner(), ks)
    assert_close(minus.energies, plus.energies, rtol=0, atol=1e-14)
    assert_close(minus.berry_curvature[..., 2], -plus.berry_curvature[..., 2], rtol=1e-10)
    assert_close(minus.velocity[..., :2], -plus.velocity[..., :2], rtol=1e-10, atol=1e-14)


def test_untilted_cones_have_no_dipole():
    # t = 0, γ = 0: E and Ω depend on |k| only, v_x is odd in k_x, so D_x = 0 (Sodemann & Fu:
    # a tilt is needed for a dipole of an isotropic cone).
    model = TiltedDiracPair(energy=(0.02, -0.08), tilt=0.0, velocity=2.0, mass=0.1, gamma=0.0)
    mesh = continuum_mesh(model, k_max=0.3, n=(120, 64))
    assert np.abs(bcd_fermi_surface(model, mesh)).max() < 1e-12


@pytest.fixture(scope="module")
def dipoles():
    model = TiltedDiracPair(**PARAMS)
    mesh = continuum_mesh(model, k_max=0.5, n=(300, 96))
    return (
        bcd_fermi_surface(model, mesh),
        bcd_fermi_sea(model, mesh),
        bcd_fermi_surface(model.partner(), mesh),
    )


def test_dipole_fermi_surface_equals_fermi_sea(dipoles):
    # Two routes (integration by parts of ∫ f0 ∂_x Ω) on the same mesh: the tilted anticrossing
    # model has a large dipole (|D| ~ 0.5 in these units) in the anticrossing window.
    surface, sea, _ = dipoles
    assert np.abs(surface).max() > 0.1
    assert_close(surface, sea, rtol=0, atol=2e-3 * np.abs(surface).max())


def test_time_reversed_partner_has_the_same_dipole(dipoles):
    # Time reversal keeps v_x Ω at −k equal, so D_x(valley −) = D_x(valley +): a TR-invariant
    # system has 2 × the single-valley dipole (Sodemann & Fu 2015).
    surface, _, partner = dipoles
    assert_close(partner, surface, rtol=1e-10, atol=1e-14)


def test_parameters_are_differentiable():
    # Every parameter is a field: dD_x/dγ exists and matches a central difference.
    model = TiltedDiracPair(**PARAMS)
    mesh = continuum_mesh(model, k_max=0.3, n=(80, 48))
    mu = jnp.asarray(-0.03)

    def dipole(gamma):
        m = eqx.tree_at(lambda x: x.gamma, model, gamma)

        def fn(k):
            g = band_geometry(m, k)
            df = fermi_dirac_derivative(g.energies, mu, 0.02)
            return -jnp.sum(g.velocity[:, 0] * g.berry_curvature[:, 2] * df)

        return integrate(fn, mesh)

    grad = float(jax.grad(dipole)(jnp.asarray(0.05)))
    h = 1e-5
    fd = float((dipole(jnp.asarray(0.05 + h)) - dipole(jnp.asarray(0.05 - h))) / (2 * h))
    assert abs(grad - fd) < 1e-6 * max(1.0, abs(fd)), (grad, fd)


def test_validation():
    with pytest.raises(ValueError, match="chirality"):
        TiltedDiracPair(**PARAMS, chirality=(1, 2))
    with pytest.raises(ValueError, match="valley"):
        TiltedDiracPair(**PARAMS, valley=0)
    with pytest.raises(ValueError, match="pair"):
        TiltedDiracPair(**{**PARAMS, "tilt": (1.0, 2.0, 3.0)})
    with pytest.raises(ValueError, match="centers"):
        TiltedDiracPair(**PARAMS, centers=(0.0, 1.0))


def test_library_dipole_equals_the_test_sum(dipoles):
    # qgeo_jax.berry_curvature_dipole (D_{ab}, here D_{xz}) against this file's own Fermi-surface sum.
    from qgeo_jax import berry_curvature_dipole

    model = TiltedDiracPair(**PARAMS)
    mesh = continuum_mesh(model, k_max=0.5, n=(300, 96))
    d = berry_curvature_dipole(model, mesh, mu=MUS, temperature=T)
    assert_close(d[:, 0, 2], dipoles[0], rtol=1e-10, atol=1e-12 * np.abs(dipoles[0]).max())
