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
