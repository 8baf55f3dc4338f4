"""Wannier90 readers/writers, hopping-table conversion and peer converters (qgeo_jax.io)."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._chern import chern_number
from qgeo_jax._geometry import band_geometry
from qgeo_jax.io import (
    from_pythtb,
    read_centres_xyz,
    read_hr,
    read_tb,
    real_space_hamiltonian,
    spinor_spin_operators,
    tight_binding_from_real_space,
    to_tight_binding,
    write_centres_xyz,
    write_hr,
    write_tb,
)
from qgeo_jax.models import Haldane, QiWuZhang, TightBinding
from qgeo_jax.models._materials import tmd_three_band

SQ3 = np.sqrt(3.0)
HONEY = np.array([[SQ3, 0.0], [SQ3 / 2, 1.5]])


def haldane_tb(t1=-1.0, t2=0.15, phi=0.7, delta=0.2):
    """Haldane's model written as a hopping table by hand (A at 0, B at (1/3, 1/3) reduced)."""
    hops = [(t1, 0, 1, (0, 0)), (t1, 0, 1, (-1, 0)), (t1, 0, 1, (0, -1))]
    for R in [(1, 0), (-1, 1), (0, -1)]:  # b1 = a1, b2 = a2 − a1, b3 = −a2
        hops += [(t2 * np.exp(1j * phi), 0, 0, R), (t2 * np.exp(-1j * phi), 1, 1, R)]
    return TightBinding(HONEY, [[0, 0], [1 / 3, 1 / 3]], [delta, -delta], hops)


def random_3d(rng, n=4):
    """Random complex 3D model: oblique cell, off-centre orbitals, R = 0 and i = j bonds."""
    lat = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    hops = []
    for R in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, -1, 0), (1, 1, -1)]:
        for i in range(n):
            for j in range(n):
                if R == (0, 0, 0) and j <= i:
                    continue
                hops.append((complex(rng.normal(), rng.normal()), i, j, R))
    return TightBinding(lat, rng.uniform(size=(n, 3)), rng.normal(size=n), hops)


batched_h = eqx.filter_jit(lambda m, ks: jax.vmap(m.hamiltonian)(ks))
geometry = eqx.filter_jit(band_geometry)


def max_h_diff(m1, m2, ks):
    ks = jnp.asarray(ks, dtype=jnp.float64)
    return float(np.abs(np.asarray(batched_h(m1, ks)) - np.asarray(batched_h(m2, ks))).max())


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------
def test_haldane_hopping_table_matches_builtin_model(rng):
    # Two independent writings of Haldane's model (closed form vs hopping table) agree exactly.
    ks = rng.normal(size=(6, 2)) * 2
    assert max_h_diff(haldane_tb(), Haldane(t1=-1.0, t2=0.15, phi=0.7, delta=0.2), ks) < 1e-14


@pytest.mark.parametrize("which", ["haldane", "random3d"])
def test_round_trip_hr_and_tb_exact(tmp_path, rng, which):
    model = haldane_tb() if which == "haldane" else random_3d(rng)
    ks = rng.normal(size=(8, model.dim)) * 3
    write_hr(model, tmp_path / "x_hr.dat")
    write_tb(model, tmp_path / "x_tb.dat")
    from_hr = read_hr(
        tmp_path / "x_hr.dat",
        lattice=np.asarray(model.lattice),
        positions=np.asarray(model.positions()),
    )
    from_tb = read_tb(tmp_path / "x_tb.dat")
    for back in (from_hr, from_tb):
        assert back.dim == model.dim
        assert back.convention == "positions"
        scale = float(np.abs(np.asarray(batched_h(model, jnp.asarray(ks)))).max())
        assert max_h_diff(back, model, ks) < 1e-12 * scale
        assert_close(back.positions(), model.positions(), atol=1e-13)
    # Geometry follows H(k) and the centres: Berry curvature identical through the tb file.
    k = jnp.asarray(ks[0])
    assert_close(
        geometry(from_tb, k).berry_curvature,
        geometry(model, k).berry_curvature,
        rtol=1e-9,
        atol=1e-12,
    )


def test_real_space_set_is_hermitian_and_complete(rng):
    model = random_3d(rng)
    R, H = real_space_hamiltonian(model)
    index = {tuple(r): i for i, r in enumerate(R.tolist())}
    for i, r in enumerate(R.tolist()):
        j = index[tuple(-x for x in r)]
        assert_close(H[j], H[i].conj().T, atol=0)
    # Second route for H(k): the cell-convention Fourier sum, then the position phases.
    k = rng.normal(size=3)
    lat, tau = np.asarray(model.lattice), np.asarray(model.positions())
    hk = np.einsum("r,rij->ij", np.exp(1j * (R @ lat) @ k), H)
    d = np.exp(1j * tau @ k)
    assert_close(
        np.conj(d)[:, None] * hk * d[None, :], model.hamiltonian(jnp.asarray(k)), atol=1e-12
    )


def test_cell_convention_without_centres_changes_geometry_not_topology(tmp_path):
    # hr.dat has no centres: read without them, H differs by the gauge diag(e^{ik·τ}) only, so the
    # bands and the Chern number agree, but the local Berry curvature does not (position terms).
    model = haldane_tb(t2=0.2, phi=np.pi / 2, delta=0.1)
    write_hr(model, tmp_path / "h_hr.dat")
    bare = read_hr(tmp_path / "h_hr.dat", lattice=HONEY)
    k = jnp.array([0.3, -0.4])
    assert_close(
        np.linalg.eigvalsh(bare.hamiltonian(k)),
        np.linalg.eigvalsh(model.hamiltonian(k)),
        atol=1e-13,
    )
    om_bare = geometry(bare, k).berry_curvature[0, 2]
    om_true = geometry(model, k).berry_curvature[0, 2]
    assert abs(om_bare - om_true) > 1e-3
    mesh = monkhorst_pack(model, (24, 24))
    c_true = chern_number(model, mesh, [0], method="plaquette")
    c_bare = chern_number(bare, mesh, [0], method="plaquette")
    assert_close(c_true, c_bare, atol=1e-10)
    assert abs(abs(float(c_true)) - 1) < 1e-10


def test_hand_written_wannier90_file_with_degeneracy_weights(tmp_path):
    # A chain along x as Wannier90 writes it for mp_grid = 2 1 1: the Wigner–Seitz points R = ±1 lie
    # on the boundary (N_R = 2 each), F12.6 numbers, m fastest. H(k) = ε + (t/2)(e^{ika} + e^{−ika})
    # = ε + t cos(ka) after dividing by N_R; all R along y, z vanish → a 1D model.
    eps, t, a = 0.25, -1.5, 2.0
    lines = [
        " written on 24Nov2026 at 12:00:00 ",
        "           1",
        "           3",
        "    2    1    2",
    ]
    lines += [
        f"   -1    0    0    1    1 {t:12.6f} {0.0:12.6f}",
        f"    0    0    0    1    1 {eps:12.6f} {0.0:12.6f}",
        f"    1    0    0    1    1 {t:12.6f} {0.0:12.6f}",
    ]
    (tmp_path / "chain_hr.dat").write_text("\n".join(lines) + "\n")
    model = read_hr(tmp_path / "chain_hr.dat", lattice=np.diag([a, 5.0, 5.0]))
    assert model.dim == 1
    ks = np.linspace(-np.pi / a, np.pi / a, 7)
    assert_close(
        np.asarray(batched_h(model, jnp.asarray(ks[:, None])))[:, 0, 0],
        eps + t * np.cos(ks * a),
        atol=1e-12,
    )
    # dim can be forced: the same file as a 3D model with no dispersion along y, z.
    m3 = read_hr(tmp_path / "chain_hr.dat", lattice=np.diag([a, 5.0, 5.0]), dim=3)
    assert m3.dim == 3
    assert_close(
        np.linalg.eigvalsh(m3.hamiltonian(jnp.array([0.3, 0.7, -0.2]))),
        [eps + t * np.cos(0.3 * a)],
        atol=1e-12,
    )


def test_to_tight_binding_is_exact_and_detects_long_range(rng):
    hal = Haldane(t1=-1.0, t2=0.1, phi=0.4, delta=0.3)
    tb = to_tight_binding(hal, max_range=1)
    assert max_h_diff(tb, hal, rng.normal(size=(5, 2)) * 2) < 1e-13
    assert tb.hopping.shape[0] == 9  # 3 NN + 2 × 3 NNN bonds, each once
    qwz = to_tight_binding(QiWuZhang(u=1.2))
    assert max_h_diff(qwz, QiWuZhang(u=1.2), rng.normal(size=(5, 2))) < 1e-13
    with pytest.raises(ValueError, match="beyond max_range=1"):
        to_tight_binding(tmd_three_band("MoS2", soc=False), max_range=1)  # third neighbours at 2a


# ------------------------------------------------------------------------------------------------
# spin
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ordering", ["interleaved", "blocks"])
def test_spinor_spin_operators_algebra(ordering):
    s = spinor_spin_operators(6, ordering)
    # su(2): [S_x, S_y] = i S_z (cyclic), S² = s(s+1) = 3/4.
    for a, b, c in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        assert_close(s[a] @ s[b] - s[b] @ s[a], 1j * s[c], atol=1e-15)
    assert_close(sum(x @ x for x in s), 0.75 * np.eye(6), atol=1e-15)
    up = np.diag(s[2]).real > 0
    expected = [True, False] * 3 if ordering == "interleaved" else [True] * 3 + [False] * 3
    assert up.tolist() == expected


def test_spin_ordering_round_trip_through_tb_file(tmp_path):
    # The 6-band MoS2 model is in "blocks" order. Read back with the right ordering, the spin
    # texture is restored (spin–valley locking ±½ at K); with the wrong one it is not.
    model = tmd_three_band("MoS2", soc=True)
    write_tb(model, tmp_path / "mos2_tb.dat")
    right = read_tb(tmp_path / "mos2_tb.dat", spin_ordering="blocks")
    wrong = read_tb(tmp_path / "mos2_tb.dat", spin_ordering="interleaved")
    K = model.valley(1)
    ref = geometry(model, K).spin
    assert_close(geometry(right, K).spin, ref, atol=1e-12)
    assert_close(abs(float(ref[1, 2])), 0.5, atol=1e-12)
    assert np.abs(np.asarray(geometry(wrong, K).spin) - np.asarray(ref)).max() > 0.1
    with pytest.raises(ValueError, match="either spin= .* or spin_ordering"):
        read_tb(tmp_path / "mos2_tb.dat", spin_ordering="blocks", spin=np.zeros((3, 6, 6)))
    with pytest.raises(ValueError, match="spin_ordering must be"):
        read_tb(tmp_path / "mos2_tb.dat", spin_ordering="alternating")


# ------------------------------------------------------------------------------------------------
# centres
# ------------------------------------------------------------------------------------------------
def test_centres_xyz(tmp_path, rng):
    pos = rng.normal(size=(3, 3))
    write_centres_xyz(pos, tmp_path / "w_centres.xyz")
    assert_close(read_centres_xyz(tmp_path / "w_centres.xyz"), pos, atol=0)
    text = "   4\n comment line\nX 0.1 0.2 0.3\nX 1.0 2.0 3.0\nMo 0.0 0.0 0.0\nS 1.5 0.8 1.6\n"
    (tmp_path / "a_centres.xyz").write_text(text)
    assert_close(
        read_centres_xyz(tmp_path / "a_centres.xyz"), [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], atol=0
    )
    (tmp_path / "b_centres.xyz").write_text("   3\n c\nX 0 0 0\nX 1 1\nMo 0 0 0\n")
    with pytest.raises(
        ValueError, match=r"b_centres.xyz line 4: expected 'Symbol x y z' \(4 fields\), got 3"
    ):
        read_centres_xyz(tmp_path / "b_centres.xyz")


# ------------------------------------------------------------------------------------------------
# strict parsing
# ------------------------------------------------------------------------------------------------
def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def hr_file(tmp_path):
    path = tmp_path / "foo_hr.dat"
    write_hr(haldane_tb(), path)
    return path


def test_hr_errors_name_file_line_and_problem(hr_file):
    lines = _lines(hr_file)  # header, num_wann = 2, nrpts = 7, one weights line, then 28 lines
    lat = HONEY

    def expect(new_lines, pattern):
        _write(hr_file, new_lines)
        with pytest.raises(ValueError, match=pattern):
            read_hr(hr_file, lattice=lat)

    bad = list(lines)
    bad[6] = " ".join(bad[6].split()[:5])
    expect(bad, r"foo_hr.dat line 7: expected 7 numbers \(R1 R2 R3 m n Re Im\), got 5")
    expect(lines[:-1], r"foo_hr.dat line 32: file ends early; expected 28 lines")
    bad = list(lines)
    bad[1] = "  2.5"
    expect(bad, r"foo_hr.dat line 2: '2.5' is not an integer \(num_wann\)")
    bad = list(lines)
    bad[3] = "    1    1    1"
    expect(bad, r"foo_hr.dat line 4: expected 7 numbers \(degeneracy weights")
    bad = list(lines)
    f = bad[10].split()
    f[5] = "abc"
    bad[10] = " ".join(f)
    expect(bad, r"foo_hr.dat line 11: 'abc' is not a number")
    bad = list(lines)
    f = bad[10].split()
    f[6] = "nan"
    bad[10] = " ".join(f)
    expect(bad, r"foo_hr.dat line 11: non-finite number")
    bad = list(lines)
    f = bad[10].split()
    f[3] = "3"
    bad[10] = " ".join(f)
    expect(bad, r"foo_hr.dat line 11: orbital indices \(3, \d\) outside 1..num_wann = 2")
    bad = list(lines)
    bad[10] = bad[11]
    expect(bad, r"appears 2 times \(lines 11, 12\)")
    bad = list(lines)
    f = bad[10].split()
    f[5] = str(float(f[5]) + 0.5)
    bad[10] = " ".join(f)
    expect(bad, r"foo_hr.dat line 11 \(partner line \d+\): H is not Hermitian")
    expect(
        lines + ["    9    9    9    1    1 0 0"], r"foo_hr.dat line 33: unexpected extra content"
    )


def test_tb_errors(tmp_path):
    path = tmp_path / "bar_tb.dat"
    write_tb(haldane_tb(), path)
    lines = _lines(path)
    bad = list(lines)
    bad[2] = "1.0 2.0"
    _write(path, bad)
    with pytest.raises(
        ValueError, match=r"bar_tb.dat line 3: expected 3 numbers \(lattice vector a2"
    ):
        read_tb(path)
    # Truncated inside the position blocks.
    _write(path, lines[:-3])
    with pytest.raises(
        ValueError,
        match=r"bar_tb.dat line \d+: file ends early; expected 4 lines of m n Re Im of x, y, z",
    ):
        read_tb(path)
    # A position block for an R that is not in the Hamiltonian blocks.
    bad = list(lines)
    first_pos_r = len(lines) - 7 * 6 + 1  # 7 position blocks of (blank, R, 4 rows)
    assert bad[first_pos_r].split() == ["-1", "0", "0"]
    bad[first_pos_r] = "    5    5    0"
    _write(path, bad)
    with pytest.raises(ValueError, match="different lattice vectors R"):
        read_tb(path)


def test_missing_partner_and_not_text(tmp_path):
    R = np.array([[0, 0, 0], [1, 0, 0]])
    H = np.array([[[1.0]], [[0.5]]], dtype=complex)
    with pytest.raises(ValueError, match=r"R = \(1, 0, 0\) is present but −R is not"):
        tight_binding_from_real_space(R, H, np.eye(3))
    (tmp_path / "bin_hr.dat").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="bin_hr.dat: not a text file"):
        read_hr(tmp_path / "bin_hr.dat", lattice=np.eye(3))


def test_readers_never_execute_content(tmp_path):
    marker = tmp_path / "executed"
    payload = f"__import__('os').system('touch {marker}')"
    (tmp_path / "evil_hr.dat").write_text(f"header\n{payload}\n1\n1\n")
    with pytest.raises(ValueError, match="evil_hr.dat line 2: expected 1 number"):
        read_hr(tmp_path / "evil_hr.dat", lattice=np.eye(3))
    (tmp_path / "evil_tb.dat").write_text(f"header\n{payload}\n")
    with pytest.raises(ValueError, match="evil_tb.dat line 2"):
        read_tb(tmp_path / "evil_tb.dat")
    assert not os.path.exists(marker)


# ------------------------------------------------------------------------------------------------
# peers
# ------------------------------------------------------------------------------------------------
def test_from_pythtb_haldane_and_spinful(rng):
    pythtb = pytest.importorskip("pythtb")
    lat = [[1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]]
    ptb = pythtb.tb_model(2, 2, lat, [[1 / 3, 1 / 3], [2 / 3, 2 / 3]])
    ptb.set_onsite([0.2, -0.2])
    for R in ([0, 0], [-1, 0], [0, -1]):
        ptb.set_hop(-1.0, 0, 1, R)
    for R in ([1, 0], [-1, 1], [0, -1]):
        ptb.set_hop(0.15j, 0, 0, R)
        ptb.set_hop(-0.15j, 1, 1, R)
    ours = from_pythtb(ptb)
    recip = np.asarray(ours.reciprocal())
    kreds = rng.uniform(-1, 1, size=(4, 2))
    hk = batched_h(ours, jnp.asarray(kreds @ recip))
    for kred, h in zip(kreds, hk, strict=True):
        assert_close(h, ptb._gen_ham(kred), atol=1e-13)
    # Spinful: 2×2 on-site and hopping blocks, interleaved (orbital, spin) order.
    spt = pythtb.tb_model(2, 2, [[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.5, 0.5]], nspin=2)
    spt.set_onsite([[0.1, 0.0, 0.0, 0.3], [-0.1, 0.2, 0.0, 0.0]])
    spt.set_hop([0.0, 0.1, 0.2, 0.05], 0, 1, [0, 0])
    spt.set_hop([-1.0, 0.0, 0.0, 0.3j], 0, 0, [1, 0])
    ours = from_pythtb(spt)
    recip = np.asarray(ours.reciprocal())
    kreds = rng.uniform(-1, 1, size=(3, 2))
    hk = batched_h(ours, jnp.asarray(kreds @ recip))
    for kred, h in zip(kreds, hk, strict=True):
        assert_close(h, spt._gen_ham(kred).reshape(4, 4), atol=1e-13)
    assert_close(ours.spin_operators(), spinor_spin_operators(4, "interleaved"), atol=0)
