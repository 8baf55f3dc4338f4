"""TBmodels converters (qgeo_jax.io._tbmodels): checked against TBmodels' own numbers.

TBmodels (Gresch et al., PRMaterials 2, 103805 (2018)) is an optional peer; the tests that need it
skip when it is not installed (run them in a venv with ``pip install tbmodels``).
"""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._chern import chern_number
from qgeo_jax._geometry import band_geometry
from qgeo_jax.io._tbmodels import from_tbmodels, to_tbmodels
from qgeo_jax.io._wannier90 import read_hr, write_hr
from qgeo_jax.models import Haldane, TightBinding

SQ3 = np.sqrt(3.0)
HONEY = np.array([[SQ3, 0.0], [SQ3 / 2, 1.5]])

batched_h = eqx.filter_jit(lambda m, ks: jax.vmap(m.hamiltonian)(ks))
geometry = eqx.filter_jit(jax.vmap(band_geometry, in_axes=(None, 0)))


def tbm_haldane(tbmodels, t1=-1.0, t2=0.15, phi=0.7, delta=0.2):
    """Haldane's model built with TBmodels' own API (A at 0, B at (1/3, 1/3) reduced)."""
    m = tbmodels.Model(on_site=[delta, -delta], pos=[[0.0, 0.0], [1 / 3, 1 / 3]], uc=HONEY, occ=1)
    for R in [(0, 0), (-1, 0), (0, -1)]:
        m.add_hop(t1, 0, 1, R)
    for R in [(1, 0), (-1, 1), (0, -1)]:
        m.add_hop(t2 * np.exp(1j * phi), 0, 0, R)
        m.add_hop(t2 * np.exp(-1j * phi), 1, 1, R)
    return m


def tbm_random(tbmodels, rng, n=3):
    """Random complex 3-orbital 2D model: oblique cell, off-centre orbitals (one outside the home
    cell, which TBmodels maps back and re-labels the R's of), R = 0 and i = j bonds."""
    lat = rng.normal(size=(2, 2)) + 2.5 * np.eye(2)
    pos = rng.uniform(size=(n, 2))
    pos[2] += (1.0, -1.0)
    m = tbmodels.Model(on_site=rng.normal(size=n), pos=pos, uc=lat, occ=1)
    for R in [(0, 0), (1, 0), (0, 1), (1, -1), (2, 1)]:
        for i in range(n):
            for j in range(n):
                if R == (0, 0) and j <= i:
                    continue
                m.add_hop(complex(rng.normal(), rng.normal()), i, j, R)
    return m


def cartesian(model, k_red):
    return np.asarray(k_red) @ np.asarray(model.reciprocal())


def numpy_berry_curvature(tbm, k_red, lattice, h=1e-5):
    """Independent route: Ω_n^xy = −2 Im Σ_m v^x_nm v^y_mn / (E_n − E_m)² with v = ∂H/∂k_cart from
    central differences of TBmodels' H(k) (convention 1 = positions), numpy eigh only."""
    lattice = np.asarray(lattice)

    def ham(kc):
        return tbm.hamilton(lattice @ kc / (2 * np.pi), convention=1)

    kc = np.asarray(k_red) @ (2 * np.pi * np.linalg.inv(lattice).T)
    e, u = np.linalg.eigh(ham(kc))
    vs = []
    for a in range(2):
        dk = np.zeros(2)
        dk[a] = h
        dh = (ham(kc + dk) - ham(kc - dk)) / (2 * h)
        vs.append(u.conj().T @ dh @ u)
    de = e[:, None] - e[None, :]
    np.fill_diagonal(de, np.inf)
    return -2 * np.imag(np.sum(vs[0] * vs[1].T / de**2, axis=1))


def fukui_chern(tbm, band, n=24):
    """Fukui–Hatsugai–Suzuki lattice Chern number (JPSJ 74, 1674 (2005)) of one band from
    TBmodels' eigenvectors on an n×n reduced mesh (gauge invariant, integer for any n)."""
    ks = np.stack(np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij"), -1).reshape(-1, 2)
    # convention 2 is periodic in reduced k, so the plaquettes close across the zone boundary.
    u = np.array([np.linalg.eigh(h)[1][:, band] for h in tbm.hamilton(ks, convention=2)])
    u = u.reshape(n, n, -1)
    link = lambda a, b: np.sum(a.conj() * b, axis=-1)  # noqa: E731
    u10, u01 = np.roll(u, -1, 0), np.roll(u, -1, 1)
    u11 = np.roll(u10, -1, 1)
    # Berry phase of the counter-clockwise plaquette: γ = ∮A·dk = −arg Π⟨u_i|u_i+1⟩ for
    # A = i⟨u|∇u⟩ (the package's sign, Ω = ∇×A); C = Σ γ / 2π.
    f = np.angle(link(u, u10) * link(u10, u11) * link(u11, u01) * link(u01, u))
    return -f.sum() / (2 * np.pi)


# ------------------------------------------------------------------------------------------------
# Hamiltonians and bands against TBmodels
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["haldane", "random"])
def test_hamiltonian_and_bands_match_tbmodels(rng, which):
    tbmodels = pytest.importorskip("tbmodels")
    tbm = tbm_haldane(tbmodels) if which == "haldane" else tbm_random(tbmodels, rng)
    k_red = rng.uniform(-1, 1, size=(10, 2))
    for conv, ours in [(1, "positions"), (2, "cell")]:
        model = from_tbmodels(tbm, convention=ours)
        h_ours = np.asarray(batched_h(model, jnp.asarray(cartesian(model, k_red))))
        assert_close(h_ours, tbm.hamilton(k_red, convention=conv), rtol=0, atol=1e-12, what=ours)
    e_ours = np.linalg.eigvalsh(h_ours)
    assert_close(e_ours, np.array(tbm.eigenval(k_red)), rtol=0, atol=1e-12, what="eigenval")


def test_haldane_from_tbmodels_equals_builtin_haldane(rng):
    # Third writing of the same model: the package's closed-form Haldane class.
    tbmodels = pytest.importorskip("tbmodels")
    model = from_tbmodels(tbm_haldane(tbmodels))
    ks = jnp.asarray(rng.normal(size=(6, 2)) * 2)
    builtin = Haldane(t1=-1.0, t2=0.15, phi=0.7, delta=0.2)
    h1, h2 = np.asarray(batched_h(model, ks)), np.asarray(batched_h(builtin, ks))
    assert_close(np.linalg.eigvalsh(h1), np.linalg.eigvalsh(h2), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# Berry curvature and Chern number against routes built on TBmodels' H(k)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["haldane", "random"])
def test_berry_curvature_matches_finite_difference_kubo_on_tbmodels(rng, which):
    tbmodels = pytest.importorskip("tbmodels")
    tbm = tbm_haldane(tbmodels) if which == "haldane" else tbm_random(tbmodels, rng)
    model = from_tbmodels(tbm)
    k_red = rng.uniform(-0.5, 0.5, size=(5, 2))
    ours = np.asarray(geometry(model, jnp.asarray(cartesian(model, k_red))).berry_curvature[..., 2])
    ref = np.array([numpy_berry_curvature(tbm, k, tbm.uc) for k in k_red])
    # central differences with h = 1e-5: error O(h²·|∂³H|) ≈ 1e-9 relative
    assert_close(ours, ref, rtol=1e-6, atol=1e-8)


def test_chern_number_matches_fukui_on_tbmodels_eigenvectors():
    # Haldane in the topological phase (|δ| < 3√3 t2 sin φ): C = ±1 for the lower band.
    tbmodels = pytest.importorskip("tbmodels")
    tbm = tbm_haldane(tbmodels, t2=0.15, phi=np.pi / 2, delta=0.1)
    fukui = fukui_chern(tbm, band=0, n=24)
    assert abs(abs(fukui) - 1) < 1e-10
    model = from_tbmodels(tbm)
    kubo = float(chern_number(model, monkhorst_pack(model, (48, 48)), [0]))
    assert abs(kubo - fukui) < 2e-3, (kubo, fukui)


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["haldane", "random"])
def test_round_trip_to_tbmodels_and_back(rng, which):
    tbmodels = pytest.importorskip("tbmodels")
    tbm = tbm_haldane(tbmodels) if which == "haldane" else tbm_random(tbmodels, rng)
    model = from_tbmodels(tbm)
    back = to_tbmodels(model, occ=1)
    k_red = rng.uniform(-1, 1, size=(8, 2))
    for conv in (1, 2):
        assert_close(
            back.hamilton(k_red, convention=conv),
            tbm.hamilton(k_red, convention=conv),
            rtol=0,
            atol=1e-13,
        )
    again = from_tbmodels(back)
    ks = jnp.asarray(cartesian(model, k_red))
    assert_close(
        np.asarray(batched_h(again, ks)), np.asarray(batched_h(model, ks)), rtol=0, atol=1e-13
    )


def test_to_tbmodels_from_hand_written_table(rng):
    # A table written in this package (positions outside the home cell) reproduced by TBmodels.
    pytest.importorskip("tbmodels")
    hops = [
        (0.7, 0, 1, (0, 0)),
        (0.2 - 0.1j, 0, 1, (1, 0)),
        (0.05j, 1, 1, (0, 1)),
        (-0.3, 1, 0, (1, 1)),
    ]
    tb = TightBinding(HONEY, [[0.1, -0.2], [1.3, 0.4]], [0.3, -0.1], hops)
    tbm = to_tbmodels(tb)
    k_red = rng.uniform(-1, 1, size=(6, 2))
    h = np.asarray(batched_h(tb, jnp.asarray(cartesian(tb, k_red))))
    assert_close(h, tbm.hamilton(k_red, convention=1), rtol=0, atol=1e-13)


# TBmodels' reader builds its own sparse matrix type, which numpy ≥ 2 warns about (peer's issue).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_round_trip_through_wannier90_hr_file(tmp_path, rng):
    # We write _hr.dat, TBmodels reads it (cell convention: the hr format stores no positions).
    # (TBmodels 1.4.3's own to_hr writes 3D models only, so the other direction is covered by
    # tests/test_io.py's read_hr tests.)
    tbmodels = pytest.importorskip("tbmodels")
    tbm = tbm_random(tbmodels, rng)
    model = from_tbmodels(tbm, convention="cell")
    write_hr(model, tmp_path / "ours_hr.dat")
    peer = tbmodels.Model.from_wannier_files(hr_file=str(tmp_path / "ours_hr.dat"))
    k_red = rng.uniform(-1, 1, size=(6, 2))
    k3 = np.concatenate([k_red, rng.uniform(-1, 1, size=(6, 1))], axis=1)  # 2D embedded in 3D
    assert_close(
        peer.hamilton(k3, convention=2), tbm.hamilton(k_red, convention=2), rtol=0, atol=1e-12
    )
    back = read_hr(
        tmp_path / "ours_hr.dat", lattice=tbm.uc, positions=model.positions(), convention="cell"
    )
    ks = jnp.asarray(cartesian(model, k_red))
    assert_close(
        np.asarray(batched_h(back, ks)), tbm.hamilton(k_red, convention=2), rtol=0, atol=1e-12
    )


# ------------------------------------------------------------------------------------------------
# errors (no TBmodels needed)
# ------------------------------------------------------------------------------------------------
def test_from_tbmodels_rejects_other_objects():
    with pytest.raises(ValueError, match="tbmodels.Model"):
        from_tbmodels(object())

    class NoCell:
        dim, size, hop, pos, uc = 2, 1, {}, np.zeros((1, 2)), None

    with pytest.raises(ValueError, match="unit cell"):
        from_tbmodels(NoCell())


def test_to_tbmodels_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tbmodels", None)  # makes `import tbmodels` raise ImportError
    tb = TightBinding([[1.0]], [[0.0]], [0.0], [(1.0, 0, 0, (1,))])
    with pytest.raises(ImportError, match="pip install tbmodels"):
        to_tbmodels(tb)
