"""Bad inputs end in a clear message, never in a traceback from inside JAX or a silent NaN; Chern
numbers say when they are not quantized; convergence estimates are honest; files are never executed.

Closed forms used:

* Qi–Wu–Zhang H = sin kx σx + sin ky σy + (u + cos kx + cos ky) σz (X.-L. Qi, Y.-S. Wu, S.-C. Zhang,
  PRB 74, 085308 (2006), doi:10.1103/PhysRevB.74.085308): E = ±|d(k)|, so the direct gap is 2|d(k)|;
  at u = 2 it closes at k = (π, π), and |C| = 1 for 0 < |u| < 2 with C = −sign(u) in this package's
  convention (C = (1/2π)∫Ω^xy, README "Conventions").
* Haldane's model (PRL 61, 2015 (1988)) closes its gap at a K point when Δ = 3√3 t2 sin φ.
* In a gap, σ_xy = −C/(2π) (e = ħ = 1; Xiao, Chang, Niu, RMP 82, 1959 (2010)), exact for a Chern
  insulator: the reference for the convergence estimate.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax as qg
from qgeo_jax import cli
from qgeo_jax._chern import chern_number
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._resume import PartialResultsError, load_npz
from qgeo_jax._validate import (
    ChernResult,
    QgeoWarning,
    check_inputs,
    check_model,
    converged,
    direct_gap,
    safe_child,
)
from qgeo_jax.io import read_hr
from qgeo_jax.models import (
    AbstractModel,
    Haldane,
    MassiveDirac,
    QiWuZhang,
    RashbaLattice,
    TightBinding,
    from_function,
)

ROOT = Path(__file__).resolve().parents[1]


class _NonHermitian(AbstractModel):
    """H(k) with an upper-triangular k-dependent part: not Hermitian."""

    @property
    def dim(self):
        return 2

    @property
    def lattice(self):
        return jnp.eye(2)

    def hamiltonian(self, k):
        return jnp.array([[1.0, jnp.sin(k[0])], [0.0, -1.0]], dtype=jnp.complex128)


class _WrongSpin(AbstractModel):
    """A 2×2 Hamiltonian with 4×4 spin operators."""

    @property
    def dim(self):
        return 2

    @property
    def lattice(self):
        return jnp.eye(2)

    def spin_operators(self):
        return jnp.zeros((3, 4, 4), dtype=jnp.complex128)

    def hamiltonian(self, k):
        return jnp.array([[1.0, jnp.sin(k[0])], [jnp.sin(k[0]), -1.0]], dtype=jnp.complex128)


HAL = Haldane()
MESH = qg.monkhorst_pack(HAL, (8, 8))
RASHBA = RashbaLattice(alpha=0.5, exchange=(0.0, 0.0, 0.2))
RMESH = qg.monkhorst_pack(RASHBA, (8, 8))
CUBIC = TightBinding(np.eye(3), [[0, 0, 0]], [0.0], [(1.0, 0, 0, (1, 0, 0))])
SQUARE = TightBinding(2 * np.eye(2), [[0, 0]], [0.0], [(1.0, 0, 0, (1, 0))])


def _hr_file(tmp_path, text):
    path = tmp_path / "x_hr.dat"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return lambda: read_hr(path, lattice=np.eye(3))


def _om(model, mesh, **kw):
    return lambda: qg.orbital_magnetization(model, mesh, **({"mu": 0.0} | kw))


# (id, thunk or factory(tmp_path), expected message fragment)
BAD_INPUTS = [
    ("non-Hermitian H(k) at response time", lambda: _om(_NonHermitian(), MESH), "is not Hermitian"),
    (
        "non-Hermitian from_function",
        lambda: (
            lambda: from_function(
                lambda k: jnp.array([[0, 1], [0, 0]]) * jnp.cos(k[0]), dim=2, lattice=np.eye(2)
            )
        ),
        "is not Hermitian",
    ),
    (
        "complex on-site energy",
        lambda: lambda: TightBinding(np.eye(2), [[0, 0]], [1 + 1j], [(1.0, 0, 0, (1, 0))]),
        "onsite energies must be real",
    ),
    (
        "wrong k dimension",
        lambda: lambda: qg.spectrum(HAL, jnp.zeros(3)),
        "is a 2D model but k has shape (3,)",
    ),
    (
        "mesh of another dimension",
        lambda: _om(HAL, qg.monkhorst_pack(CUBIC, (3, 3, 3))),
        "the mesh is 3D but Haldane is 2D",
    ),
    (
        "mesh of another lattice",
        lambda: _om(HAL, qg.monkhorst_pack(SQUARE, (6, 6))),
        "built for a different lattice",
    ),
    (
        "lattice mesh for a continuum model",
        lambda: lambda: qg.monkhorst_pack(MassiveDirac(), (6, 6)),
        "is a continuum model; use qgeo_jax.continuum_mesh",
    ),
    (
        "spin operators of the wrong shape",
        lambda: lambda: qg.spin_magnetization(_WrongSpin(), MESH, mu=0.0),
        "spin_operators() has shape (3, 4, 4) but H(k) is 2×2",
    ),
    (
        "TightBinding spin of the wrong shape",
        lambda: (
            lambda: TightBinding(
                np.eye(2), [[0, 0]], [0.0], [(1.0, 0, 0, (1, 0))], spin=np.zeros((3, 2, 2))
            )
        ),
        "spin operators must have shape (3, 1, 1)",
    ),
    ("NaN parameter", lambda: _om(Haldane(t2=np.nan), MESH), "Haldane.t2 contains nan"),
    ("inf parameter", lambda: _om(QiWuZhang(u=np.inf), MESH), "QiWuZhang.u contains inf"),
    (
        "NaN on-site energy",
        lambda: lambda: TightBinding(np.eye(2), [[0, 0]], [np.nan], [(1.0, 0, 0, (1, 0))]),
        "onsite energies must be finite",
    ),
    (
        "NaN in from_function params",
        lambda: (
            lambda: from_function(
                lambda k, p: p["m"] * jnp.diag(jnp.array([1.0, -1.0]) * jnp.cos(k[0])),
                {"m": np.nan},
                dim=2,
                lattice=np.eye(2),
            )
        ),
        "NaN or inf",
    ),
    (
        "negative temperature",
        lambda: _om(HAL, MESH, temperature=-0.1),
        "temperature must be finite and >= 0",
    ),
    (
        "NaN temperature",
        lambda: _om(HAL, MESH, temperature=np.nan),
        "temperature must be finite and >= 0",
    ),
    (
        "T = 0 for a Fermi-surface quantity",
        lambda: (
            lambda: kinetic_magnetization(
                RASHBA, RMESH, mu=0.0, temperature=0.0, part="spin", mechanism="extrinsic", tau=1.0
            )
        ),
        "needs temperature > 0",
    ),
    (
        "NaN chemical potential",
        lambda: _om(HAL, MESH, mu=np.nan, temperature=0.1),
        "mu must be finite",
    ),
    ("chemical potential as text", lambda: _om(HAL, MESH, mu="0.1"), "mu must be numeric"),
    (
        "μ and T that do not broadcast",
        lambda: _om(HAL, MESH, mu=np.zeros(3), temperature=np.full(2, 0.1)),
        "must broadcast against each other",
    ),
    (
        "negative relaxation time",
        lambda: (
            lambda: kinetic_magnetization(
                RASHBA, RMESH, mu=0.0, temperature=0.1, part="spin", mechanism="extrinsic", tau=-1.0
            )
        ),
        "tau must be finite and > 0",
    ),
    (
        "missing relaxation time",
        lambda: (
            lambda: kinetic_magnetization(
                RASHBA, RMESH, mu=0.0, temperature=0.1, part="spin", mechanism="extrinsic"
            )
        ),
        "needs the relaxation time tau > 0",
    ),
    (
        "Chern number on a 2×2 mesh",
        lambda: lambda: chern_number(HAL, qg.monkhorst_pack(HAL, (2, 2)), [0]),
        "is meaningless: use at least 4 points per axis",
    ),
    (
        "plaquettes on a shifted mesh",
        lambda: (
            lambda: chern_number(
                HAL, qg.monkhorst_pack(HAL, (6, 6), shift=0.5), [0], method="plaquette"
            )
        ),
        "needs an unshifted mesh",
    ),
    (
        "empty continuum mesh",
        lambda: lambda: qg.continuum_mesh(MassiveDirac(), n=(0, 4)),
        "n = (n_radial, n_angle) must be positive, got (0, 4)",
    ),
    (
        "empty lattice mesh",
        lambda: lambda: qg.monkhorst_pack(HAL, (0, 3)),
        "must be positive integers",
    ),
    ("zero chunk size", lambda: _om(HAL, MESH, chunk_size=0), "chunk_size must be >= 1"),
    (
        "spin quantity of a spinless model",
        lambda: lambda: qg.spin_magnetization(HAL, MESH, mu=0.0),
        "needs spin operators",
    ),
    (
        "kinetic spin response of a spinless model",
        lambda: (
            lambda: kinetic_magnetization(
                HAL, MESH, mu=0.0, temperature=0.1, part="spin", mechanism="intrinsic"
            )
        ),
        "needs spin operators",
    ),
    (
        "band index out of range",
        lambda: lambda: chern_number(HAL, MESH, [5]),
        "must be a non-empty list of band indices",
    ),
    ("not a model", lambda: lambda: check_model(lambda k: np.eye(2)), "expected a qgeo_jax model"),
]
FILE_INPUTS = [
    ("truncated Wannier90 file", "header\n2\n1\n1\n0 0 0 1 1 0.5 0.0\n", "line 6: file ends early"),
    (
        "malformed number in a Wannier90 file",
        "header\n1\n1\n1\n0 0 0 1 1 abc 0.0\n",
        "'abc' is not a number",
    ),
    ("binary file as Wannier90 file", b"\x00\xff\xfe binary", "not a text file"),
]


@pytest.mark.parametrize(("label", "make", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_problem_and_fix(label, make, message):
    with pytest.raises(Exception) as info:
        out = make()()
        jax.block_until_ready(out)
    err = info.value
    assert message in str(err), f"{label}: {err!r}"
    # Concrete inputs are rejected in Python, before JAX runs: a plain ValueError / TypeError.
    # (The relaxation time is checked by qgeo_jax._kinetic with equinox.error_if, which raises an
    # EquinoxRuntimeError carrying the same message.)
    allowed = (ValueError, TypeError) + ((RuntimeError,) if "relaxation" in label else ())
    assert isinstance(err, allowed), f"{label}: {type(err).__name__}"


@pytest.mark.parametrize(("label", "text", "message"), FILE_INPUTS, ids=[f[0] for f in FILE_INPUTS])
def test_bad_file_names_line_and_problem(tmp_path, label, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _hr_file(tmp_path, text)()


def test_value_dependent_checks_fire_under_jit():
    """Traced values cannot be checked in Python: equinox.error_if fails at run time (same text)."""
    om = eqx.filter_jit(lambda m, t, mu: qg.orbital_magnetization(m, MESH, mu=mu, temperature=t))
    assert np.all(
        np.isfinite(om(HAL, jnp.asarray(0.1), jnp.asarray(0.0)))
    )  # the compiled program itself is fine
    for args, message in [
        (
            (Haldane(t2=jnp.nan), jnp.asarray(0.1), jnp.asarray(0.0)),
            "a model parameter is NaN or inf",
        ),
        ((HAL, jnp.asarray(-0.1), jnp.asarray(0.0)), "temperature must be finite and >= 0"),
        ((HAL, jnp.asarray(0.1), jnp.asarray(jnp.nan)), "mu must be finite"),
    ]:
        with pytest.raises(Exception, match=re.escape(message)):
            jax.block_until_ready(om(*args))
    # Gradients pass through the checks unchanged.
    g = jax.grad(lambda m: qg.orbital_magnetization(m, MESH, mu=0.1, temperature=0.05)[2])(HAL)
    assert np.isfinite(float(g.t2)) and float(g.t2) != 0.0


def test_model_checks_are_cached_per_object():
    model = Haldane(t2=0.1)
    check_model(model)
    from qgeo_jax import _validate

    assert _validate._checked[id(model)]() is model
    check_model(model)  # second call: a dictionary lookup (no recompilation, no probe)


def test_mu_outside_all_bands_warns():
    hal = Haldane()
    with pytest.warns(QgeoWarning, match="lies above every band"):
        report = check_inputs(hal, MESH, mu=[0.0, 10.0])
    assert report.band_edges.shape == (2, 2)
    # Independent route to the band edges: eigenvalues of H(k) at every mesh point, in NumPy.
    ks, _ = MESH.all_points()
    e = np.array([np.linalg.eigvalsh(np.asarray(hal.hamiltonian(k))) for k in np.asarray(ks)])
    assert_close(report.band_edges, np.stack([e.min(0), e.max(0)], -1), rtol=1e-12)
    with pytest.warns(QgeoWarning, match="lies below every band"):
        check_inputs(hal, MESH, mu=-10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_inputs(hal, MESH, mu=0.0).warnings == ()


CLI_BAD = [
    ("[options]\nblock_sise = 2\n", [], "did you mean 'options.block_size'?"),
    ('[output]\nprefix = "../escape"\n', [], "must be a plain file name"),
    ('[output]\nprefix = "/tmp/absolute"\n', [], "must be a plain file name"),
    ("", ["--prefix", "sub/name"], "must be a plain file name"),
    ("[options]\nblock_size = 0\n", [], "options.block_size must be an integer >= 1"),
    ("mu = [1, 2\n", [], "invalid TOML"),
    ('quantities = ["chern"]\n[mesh]\nshape = [2, 2]\n', [], "at least 4 k-points per axis"),
    ('quantities = ["spin_magnetization"]\n', [], "needs a spinful model"),
]


@pytest.mark.parametrize(("config", "flags", "message"), CLI_BAD)
def test_cli_bad_input_is_one_line(tmp_path, capsys, config, flags, message):
    path = tmp_path / "c.toml"
    path.write_text(
        config + f'\n[output]\ndir = "{tmp_path}"\n' if "[output]" not in config else config
    )
    code = cli.main(["run", str(path), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("qgeo: error: ") and message in err, err
    assert not list(tmp_path.parent.glob("escape*")), "nothing written outside the output dir"


def test_cli_resume_needs_an_output_directory(capsys):
    assert cli.main(["--resume", "--mesh", "6x6"]) == 2
    assert "--resume needs an output directory" in capsys.readouterr().err


def test_cli_warns_for_mu_outside_bands(tmp_path, capsys):
    code = cli.main(["--mu", "0,9", "--mesh", "8x8", "--quantities", "ahc", "--repeats", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "qgeo: warning: mu = 9 lies above every band" in err and "Traceback" not in err


# --- numerical honesty: Chern numbers -------------------------------------------------------------
def _qwz_gap(u, n):
    """Closed form: the direct gap of QWZ at the mesh points is 2|d(k)|."""
    k = 2 * np.pi * np.arange(n) / n
    kx, ky = np.meshgrid(k, k, indexing="ij")
    d = np.sqrt(np.sin(kx) ** 2 + np.sin(ky) ** 2 + (u + np.cos(kx) + np.cos(ky)) ** 2)
    return 2 * d.min()


@pytest.mark.parametrize("n", [20, 21])
def test_chern_at_gap_closing_is_flagged_not_rounded(n):
    model = QiWuZhang(
        u=2.0
    )  # gap closes at (π, π): on the even mesh exactly, between points on the odd
    mesh = qg.monkhorst_pack(model, (n, n))
    plain = chern_number(model, mesh, [0], method="plaquette")
    assert abs(float(plain) - round(float(plain))) < 1e-9  # plaquettes alone look like an integer
    r = chern_number(model, mesh, [0], report=True)
    assert isinstance(r, ChernResult) and not r.is_quantized
    assert r.deviation > 0.3 and "NOT quantized" in str(r)
    assert_close(r.min_gap, _qwz_gap(2.0, n), rtol=1e-9, atol=1e-13, what="min direct gap")
    if n % 2 == 0:  # k = (π, π) is a mesh point: the bands touch there
        assert r.near_degenerate_points == 1 and r.min_gap < 1e-12
        assert_close(r.min_gap_k, [np.pi, np.pi], rtol=1e-12)
        assert "touches another band" in r.reason
    else:
        assert r.near_degenerate_points == 0 and "too coarse" in r.reason


def test_chern_haldane_critical_point_is_flagged():
    t2, phi = 0.15, np.pi / 2
    model = Haldane(t2=t2, phi=phi, delta=3 * np.sqrt(3) * t2 * np.sin(phi))
    r = chern_number(model, qg.monkhorst_pack(model, (30, 30)), [0], report=True)
    assert not r.is_quantized and r.near_degenerate_points >= 1 and r.min_gap < 1e-9


@pytest.mark.parametrize(("u", "expected"), [(1.0, -1), (-1.0, 1), (3.0, 0)])
def test_chern_report_in_a_gap_is_quantized(u, expected):
    model = QiWuZhang(u=u)
    mesh = qg.monkhorst_pack(model, (24, 24))
    r = chern_number(model, mesh, [0], report=True)
    assert r.is_quantized and r.nearest == expected and r.deviation < 1e-3
    assert r.near_degenerate_points == 0 and int(round(r.plaquette)) == expected
    assert_close(r.min_gap, _qwz_gap(u, 24), rtol=1e-10)
    assert_close(
        float(r), float(chern_number(model, mesh, [0])), rtol=1e-14
    )  # same value, report or not
    g, _, _ = direct_gap(model, mesh, [0, 1])  # every band: no complement, no gap to close
    assert g == np.inf


# --- convergence estimates ------------------------------------------------------------------------
def test_converged_estimate_is_honest():
    """σ_xy in the gap is exactly −C/2π; |Δ| between n and 2n must be the coarse mesh's error."""
    model = Haldane(t2=0.15, phi=1.0, delta=0.3)
    c_int = round(
        float(chern_number(model, qg.monkhorst_pack(model, (60, 60)), [0], method="plaquette"))
    )
    assert abs(c_int) == 1
    exact = -c_int / (2 * np.pi)
    conv = converged(qg.anomalous_hall_conductivity, model, (9, 9), mu=0.0)
    assert conv.shapes == ((9, 9), (18, 18))
    err_coarse = abs(float(conv.coarse[2]) - exact)
    err_fine = abs(float(conv.value[2]) - exact)
    assert err_coarse > 1e-6, "the test needs a coarse mesh that is visibly off"
    assert err_fine < 0.05 * err_coarse  # spectral convergence: the refined value is far better
    assert_close(conv.max_delta, err_coarse, rtol=0.05, what="|Δ| estimates the coarse error")
    assert conv.max_delta >= err_fine and not conv.is_converged(rtol=1e-8)
    assert converged(qg.anomalous_hall_conductivity, model, (30, 30), mu=0.0).is_converged(
        rtol=1e-5
    )


def test_converged_continuum_mesh():
    """Massive Dirac (ξ = +1, m > 0), lower band filled on the disk |k| < Λ, Ω_− = +m v²/(2d³) (seed
    eq. 4): σ_xy = −∫ d²k/(2π)² Ω_− = −(1/4π)(1 − m/√(v²Λ² + m²)). Polar meshes are refined too."""
    model = MassiveDirac(v=1.0, m=0.5, cutoff=4.0)
    c1 = converged(qg.anomalous_hall_conductivity, model, (8, 8), mu=0.0)
    c2 = converged(qg.anomalous_hall_conductivity, model, (16, 16), mu=0.0)
    exact = -(1 - 0.5 / np.sqrt(16.0 + 0.25)) / (4 * np.pi)
    assert_close(c2.value[2], exact, rtol=1e-9)
    assert c2.max_delta < c1.max_delta and abs(float(c1.value[2]) - exact) <= c1.max_delta


# --- file safety ----------------------------------------------------------------------------------
def test_package_never_unpickles_or_evaluates_files():
    """Static scan: every np.load passes allow_pickle=False; no pickle, eval, exec or yaml.load."""
    offenders = []
    for path in sorted((ROOT / "qgeo_jax").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"\b(?:np|numpy)\.load\(", text):
            call = text[m.start() : text.find(")", m.end()) + 1]
            if "allow_pickle=False" not in call:
                offenders.append(f"{path.name}: {call}")
        code = "\n".join(line.split("#")[0] for line in text.splitlines())
        # parallel.run_parallel hands (fn, args) to its own worker processes through a file the
        # same call writes into a fresh private (0700) temporary directory; no user-supplied or
        # result file is ever unpickled. That one module is exempt from the pickle patterns.
        pickle_patterns = () if path.name == "parallel.py" else (
            r"^\s*import pickle",
            r"\bpickle\.loads?\(",
        )
        for pattern in (
            *pickle_patterns,
            r"(?<![\w.])eval\(",
            r"(?<![\w.])exec\(",
            r"yaml\.load\(",
        ):
            if re.search(pattern, code, flags=re.M):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))  # an object array: pickled inside the zip
    with pytest.raises(PartialResultsError, match="pickled Python objects"):
        load_npz(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PartialResultsError, match="unreadable or corrupted"):
        load_npz(path)


@pytest.mark.parametrize(
    "name", ["../x", "/abs/x", "a/b", "..", ".", "", "-rf", "c:evil", "a\\b", ".hidden"]
)
def test_output_names_cannot_escape(tmp_path, name):
    with pytest.raises(ValueError, match="must be a plain file name"):
        safe_child(tmp_path, name)


def test_output_name_inside_directory(tmp_path):
    assert safe_child(tmp_path, "results.npz") == tmp_path / "results.npz"
    os.symlink(tmp_path.parent, tmp_path / "link")  # a symlink leading out is caught on resolve
    with pytest.raises(ValueError, match="outside the output directory"):
        safe_child(tmp_path, "link")
