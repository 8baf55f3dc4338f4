"""qgeo_jax.plotting: figures are produced (Agg), carry the right data, matplotlib stays lazy."""

import subprocess
import sys

import equinox as eqx
import numpy as np
import pytest
from conftest import assert_close

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.collections import LineCollection, QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from qgeo_jax._geometry import band_geometry  # noqa: E402
from qgeo_jax.models import Haldane, MassiveDirac  # noqa: E402
from qgeo_jax.models._materials import tmd_three_band  # noqa: E402
from qgeo_jax.plotting import k_path, plot_bands, plot_bz_map, plot_vs_mu  # noqa: E402

geometry = eqx.filter_jit(band_geometry)


def _saved(fig, path):
    fig.savefig(path, dpi=60)
    return path.stat().st_size


def test_k_path_hexagonal_corners():
    m = tmd_three_band("MoS2", soc=False)
    path = k_path(m, ["Γ", "K", "M", "Γ"], n=90)
    a = float(m.a)
    # |ΓK| = 4π/3a, |KM| = 2π/3a, |MΓ| = 2π/(√3 a) (hexagonal BZ).
    assert_close(
        np.diff(path.ticks),
        [4 * np.pi / (3 * a), 2 * np.pi / (3 * a), 2 * np.pi / (np.sqrt(3) * a)],
        rtol=1e-12,
    )
    i_k = np.argmin(np.abs(path.distance - path.ticks[1]))
    assert_close(path.points[i_k], m.valley(1), atol=1e-12)
    assert path.labels == ("Γ", "K", "M", "Γ")
    assert np.all(np.diff(path.distance) > 0)
    with pytest.raises(ValueError, match="unknown point"):
        k_path(m, ["Γ", "Q"])


@pytest.mark.parametrize("color_by", [None, "berry_curvature", "spin"])
def test_plot_bands_writes_a_figure_with_the_right_colours(tmp_path, color_by):
    m = tmd_three_band("MoS2", soc=color_by == "spin")
    path = k_path(m, ["Γ", "K", "M", "Γ"], n=60)
    fig = plot_bands(m, path, color_by=color_by, energy_unit="eV")
    assert isinstance(fig, Figure)
    assert _saved(fig, tmp_path / "bands.png") > 1000
    ax = fig.axes[0]
    if color_by is None:
        assert len(ax.lines) == 3 + 2  # three bands, two vertical separators
        return
    collections = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(collections) == m.norb
    # Second route to the colours: band_geometry at the two ends of one segment near K.
    seg = int(np.argmin(np.abs(path.distance - path.ticks[1]))) - 3
    g0, g1 = geometry(m, path.points[seg]), geometry(m, path.points[seg + 1])
    attr = "berry_curvature" if color_by == "berry_curvature" else "spin"
    expected = 0.5 * (np.asarray(getattr(g0, attr))[:, 2] + np.asarray(getattr(g1, attr))[:, 2])
    got = [np.asarray(c.get_array())[seg] for c in collections]
    assert_close(got, expected, rtol=1e-8, atol=1e-12)


def test_plot_bz_map_integrates_to_the_chern_number(tmp_path):
    # The map's data are Ω on midpoints of the reciprocal cell: Σ Ω ΔA / 2π is the Chern number.
    m = Haldane(t1=-1.0, t2=0.2, phi=np.pi / 2, delta=0.1)
    fig = plot_bz_map(m, "berry_curvature", 0, (48, 48))
    assert _saved(fig, tmp_path / "map.png") > 1000
    mesh = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)][0]
    omega = np.asarray(mesh.get_array())
    area = abs(np.linalg.det(np.asarray(m.reciprocal()))) / omega.size
    assert_close(abs(omega.sum() * area / (2 * np.pi)), 1.0, atol=2e-3)
    # Summing both bands gives zero curvature everywhere.
    fig2 = plot_bz_map(m, "berry_curvature", [0, 1], (12, 12))
    both = [c for c in fig2.axes[0].collections if isinstance(c, QuadMesh)][0]
    assert_close(np.asarray(both.get_array()), 0.0, atol=1e-9)


def test_plot_bz_map_continuum_and_metric(tmp_path):
    m = MassiveDirac(v=1.0, m=0.3, cutoff=2.0)
    fig = plot_bz_map(m, "quantum_metric", 1, (25, 25))
    assert _saved(fig, tmp_path / "metric.png") > 1000
    data = np.asarray(
        [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)][0].get_array()
    ).reshape(25, 25)
    # tr g of the massive Dirac model: (v²/4d²)(1 + m²/d²), d² = v²k² + m²; centre pixel is k = 0.
    assert_close(data[12, 12], 2 * 0.25 / 0.3**2, rtol=1e-10)
    with pytest.raises(ValueError, match="out of range"):
        plot_bz_map(m, "berry_curvature", 5, (4, 4))
    with pytest.raises(ValueError, match="unknown quantity"):
        plot_bz_map(m, "chirality", 0, (4, 4))


def test_plot_vs_mu(tmp_path):
    mus = np.linspace(-1, 1, 41)
    vals = np.stack([np.zeros_like(mus), 0.5 * mus, np.tanh(mus)], -1)
    fig = plot_vs_mu(mus, vals, "M^O", "μ_B/Å²", mu_unit="eV")
    assert _saved(fig, tmp_path / "mu.png") > 1000
    lines = fig.axes[0].lines
    assert [ln.get_label() for ln in lines[:2]] == [
        "M^O y",
        "M^O z",
    ]  # the zero x component is skipped
    assert_close(lines[1].get_ydata(), np.tanh(mus), atol=0)
    fig = plot_vs_mu(mus, np.tanh(mus), "σ_xy")
    assert_close(fig.axes[0].lines[0].get_ydata(), np.tanh(mus), atol=0)
    with pytest.raises(ValueError, match="rows for"):
        plot_vs_mu(mus[:3], vals)


def test_matplotlib_is_imported_lazily():
    code = "import sys, qgeo_jax, qgeo_jax.io, qgeo_jax.models; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _tb(dim):
    """Nearest-neighbour s-band on the (hyper)cubic lattice with a = 1 (one orbital)."""
    from qgeo_jax.models import TightBinding

    hops = [(-1.0, 0, 0, tuple(int(i == d) for i in range(dim))) for d in range(dim)]
    return TightBinding(np.eye(dim), np.zeros((1, dim)), [0.0], hops)


def test_high_symmetry_paths_have_the_textbook_lengths():
    from qgeo_jax.models import QiWuZhang
    from qgeo_jax.plotting import high_symmetry_path

    pi = np.pi
    path = high_symmetry_path(tmd_three_band("MoS2", soc=False))
    assert path.labels == ("Γ", "K", "M", "Γ")
    path = high_symmetry_path(QiWuZhang())  # square, a = 1: ΓX = π, XM = π, MΓ = π√2, ΓY = π
    assert path.labels == ("Γ", "X", "M", "Γ", "Y")
    assert_close(np.diff(path.ticks), [pi, pi, pi * np.sqrt(2), pi], rtol=1e-12)
    path = high_symmetry_path(_tb(1))
    assert path.labels == ("−X", "Γ", "X")
    assert_close(path.ticks[-1], 2 * pi, rtol=1e-12)
    path = high_symmetry_path(_tb(3))  # cubic: Γ–X–M–Γ–R = π, π, π√2, π√3
    assert_close(np.diff(path.ticks), [pi, pi, pi * np.sqrt(2), pi * np.sqrt(3)], rtol=1e-12)
    dirac = MassiveDirac(v=1.0, m=0.3, cutoff=2.0)
    path = high_symmetry_path(dirac)  # a line cut through Γ along k_x
    assert_close(path.points[[0, -1], 0], [-2.0, 2.0], rtol=1e-12)
    assert_close(path.points[:, 1], 0.0, atol=0)
    assert path.labels[1] == "Γ"
    assert_close(high_symmetry_path(dirac, extent=0.5).points[-1, 0], 0.5, rtol=1e-12)


def test_plot_vs_mu_tensor_components_and_gap_shading():
    mus = np.linspace(-1, 1, 11)
    vals = np.zeros((11, 3, 3))
    vals[:, 2, 0], vals[:, 2, 1] = mus, mus**2  # α^zx, α^zy
    fig = plot_vs_mu(mus, vals, "α", "μ_B/cell per V/Å", gaps=[(-0.5, 0.25), (0.9, 5.0)])
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines[:2]] == ["α zx", "α zy"]
    assert_close(ax.lines[1].get_ydata(), mus**2, atol=0)
    spans = [p for p in ax.patches]
    assert len(spans) == 2 and spans[0].get_label() == "band gap"
    assert_close([spans[0].get_x(), spans[0].get_x() + spans[0].get_width()], [-0.5, 0.25])
    assert spans[1].get_x() + spans[1].get_width() <= 1.0 + 0.05  # clipped to the μ axis
    with pytest.raises(ValueError, match="unknown component"):
        plot_vs_mu(mus, vals, components=["zq"])


def test_plot_bands_clip_percentile_sets_the_colour_limit():
    m = Haldane(t1=-1.0, t2=0.2, phi=np.pi / 2, delta=0.1)
    path = k_path(m, ["Γ", "K", "M", "Γ"], n=60)
    fig = plot_bands(m, path, color_by="berry_curvature", clip_percentile=90)
    cols = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    mids = np.concatenate([np.asarray(c.get_array()) for c in cols])
    assert_close(cols[0].norm.vmax, np.percentile(np.abs(mids), 90), rtol=1e-12)
