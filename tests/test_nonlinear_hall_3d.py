"""Three-dimensional check of the second-order current: the full Berry-curvature vector enters the
ε-contraction, so a 3D model with neither time reversal nor inversion tests every index of
χ_BCD and χ_Drude against the brute-force relaxation-time route (exact RTA distribution
f = ∫ds/τ e^{−s/τ} f0(E(k + E s)), anomalous velocity E × Ω, Hessian of j(E) by autodiff), and the
Fermi-sea vs Fermi-surface routes of all three mechanisms on a periodic mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._geometry import band_geometry
from qgeo_jax._nonlinear_hall import nonlinear_hall_conductivity
from qgeo_jax._occupation import fermi_dirac
from qgeo_jax.models import from_function

pytestmark = pytest.mark.slow  # 14 s; the 2D route/brute-force checks stay in the default run

MU, TEMP = 0.8, 0.2
_XG, _WG = np.polynomial.laguerre.laggauss(4)


def _model(seed=3):
    rng = np.random.default_rng(seed)
    mats = rng.normal(size=(6, 2, 2)) + 1j * rng.normal(size=(6, 2, 2))
    mats = jnp.asarray(mats + np.conj(np.swapaxes(mats, -1, -2))) * 0.1

    def h(k, p):
        s, c = jnp.sin(k), jnp.cos(k)
        return (
            p["gap"] * jnp.diag(jnp.array([1.0, -1.0]))
            + (s[0] + 0.4 * c[1]) * mats[0]
            + (s[1] + 0.2 * c[2]) * mats[1]
            + (s[2] + 0.3 * c[0]) * mats[2]
            + jnp.sin(k[0] + k[1]) * mats[3]
            + jnp.cos(k[1] - k[2]) * mats[4]
            + p["w"] * jnp.sin(k[2] - 2 * k[0]) * mats[5]
        )

    return from_function(h, dict(gap=0.8, w=0.5), dim=3, lattice=np.eye(3))


@jax.jit
def _rta_hessian(model, k, w, taus):
    def current(field, k, tau):
        def occ(q):
            return fermi_dirac(jnp.linalg.eigvalsh(model.hamiltonian(q)), MU, TEMP)

        f = sum(wg * occ(k + field * tau * x) for x, wg in zip(_XG, _WG, strict=True))
        geo = band_geometry(model, k)
        rdot = geo.velocity + jnp.cross(field[None, :], geo.berry_curvature)
        return -jnp.einsum("n,na->a", f, rdot)

    hess = jax.jacfwd(jax.jacfwd(current))
    per_k = jax.vmap(lambda kk: jax.vmap(lambda t: hess(jnp.zeros(3), kk, t))(taus))
    return jnp.einsum("k,ktabc->tabc", w, per_k(k))


def test_3d_brute_force_and_routes():
    model = _model()
    mesh = monkhorst_pack(model, (16, 16, 16), shift=0.5)
    kw = dict(mu=MU, temperature=TEMP)
    out = {}
    for route in ("fermi_surface", "fermi_sea"):
        out[route] = {
            mech: np.asarray(
                nonlinear_hall_conductivity(model, mesh, mechanism=mech, route=route, **kw, **extra)
            )
            for mech, extra in (
                ("berry_curvature_dipole", {"tau": 1.0}),
                ("drude", {"tau": 1.0}),
                ("intrinsic", {}),
            )
        }
    for mech in out["fermi_sea"]:
        a, b = out["fermi_sea"][mech], out["fermi_surface"][mech]
        assert np.max(np.abs(b)) > 1e-4, mech  # all three mechanisms present, all 3D indices used
        assert np.max(np.abs(a - b)) < 1e-3 * np.max(np.abs(b)), mech
    # brute(τ) = τ B + τ² R: separate the orders from τ = 1, 3. The τ-linear (BCD) part is the
    # same sum pointwise, so it must agree to round-off; the Drude part differs from ours by one
    # integration by parts, i.e. to mesh accuracy (2.4e-3 at 16³; its two routes differ by 3.7e-4).
    k, w = mesh.all_points()
    h1, h3 = 0.5 * np.asarray(_rta_hessian(model, k, w, jnp.array([1.0, 3.0])))
    linear, quadratic = (9 * h1 - h3) / 6, (h3 - 3 * h1) / 6
    bcd, drude = out["fermi_surface"]["berry_curvature_dipole"], out["fermi_surface"]["drude"]
    assert_close(linear, bcd, rtol=0, atol=1e-12 * np.max(np.abs(bcd)), what="τ¹ (BCD)")
    assert_close(quadratic, drude, rtol=0, atol=5e-3 * np.max(np.abs(drude)), what="τ² (Drude)")
