"""Intrinsic (τ⁰) second-order spin of an insulator: projector route vs Hellmann–Feynman."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_close
from test_nonlinear_kinetic import PARAMS, P, _h, altermagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import from_function
from qgeo_jax.models._base import PAULI


def test_intrinsic_equals_hellmann_feynman_in_insulator():
    r"""Insulator (μ in the gap, T = 0): δ⟨S_i⟩ = ∂_{h_i} E^{(2)}_gs with H → H + h·S and the
    second-order Stark energy E^{(2)} = ½ Σ_occ∫ G^{jk} E_jE_k (the electronic polarizability):
    χ = −g · ½ ∂_h Σ_occ∫G. Independent of the projector construction (only G and autodiff in h)."""
    from qgeo_jax._nonlinear_kinetic import berry_connection_polarizability

    m = altermagnet(t=0.15)
    mesh = monkhorst_pack(m, (24, 24))
    chi = nonlinear_kinetic_magnetization(
        m, mesh, mu=0.0, temperature=0.0, part="spin", mechanism="intrinsic"
    )

    def g_occupied(hvec):
        mz = from_function(
            lambda q, p: _h(q, p) + jnp.einsum("a,aij->ij", p["h"], P / 2),
            dict(PARAMS, t=0.15, h=hvec),
            dim=2,
            spin=PAULI / 2,
            lattice=np.eye(2),
            positions=np.zeros((2, 2)),
        )
        kk, w = mesh.all_points()
        g = jax.vmap(lambda q: berry_connection_polarizability(spectrum(mz, q))[0])(kk)
        return jnp.einsum("k,kab->ab", w, g)

    ref = -2.0 * 0.5 * jnp.moveaxis(jax.jacfwd(g_occupied)(jnp.zeros(3)), -1, 0)
    scale = np.abs(ref).max()
    assert scale > 1e-2
    assert_close(chi, ref, rtol=0, atol=1e-9 * scale)
