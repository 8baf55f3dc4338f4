"""The `qgeo` command: default job, `qgeo run config.toml`, flags, errors, README/CI consistency.

Physics the printed and written numbers must satisfy (closed forms, not outputs of the code):

* Haldane (PRL 61, 2015 (1988)) with |Δ| < 3√3|t2 sin φ| is a Chern insulator, |C| = 1; the Kubo and
  plaquette routes must agree, σ_xy = −C e²/h on the gap plateau, and the Středa relation
  dM^O/dμ = C e/h (= C/2π with e = ħ = 1) holds between the μ values inside the gap.
* The μ_B-per-cell column is M^O · A_cell · (e·eV·Å²/ħ)/μ_B, and (e·eV·Å²/ħ)/μ_B = 2m_e·eV·Å²/ħ² =
  1/(Ry·a0²) in eV·Å², from CODATA 2018 Ry = 13.605693122994 eV and a0 = 0.529177210903 Å — an
  independent route to the conversion in qgeo_jax.units (which goes through e, ħ, m_e).
* k_B·300 K = 0.025852 eV (k_B = 8.617333262e-5 eV/K, CODATA 2018, exact).
* RashbaLattice with t = α = 0 is a flat two-level system E = ∓J, ⟨S_J⟩ = ∓½: at μ = 0,
  M^S = −g μ_B Σ⟨S⟩f0 = tanh(J/2T) μ_B per cell along J (g = 2).
* The TightBinding path of a config is checked against the built-in QiWuZhang model (same H(k)
  written as a hopping table): two independent constructions, identical responses.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax import cli

ROOT = Path(__file__).resolve().parents[1]
RY_EV, A0_ANGSTROM = 13.605693122994, 0.529177210903  # CODATA 2018
MODEL_MOMENT_IN_BOHR = 1.0 / (RY_EV * A0_ANGSTROM**2)  # (e·eV·Å²/ħ) / μ_B
HALDANE_CELL = 3 * np.sqrt(3) / 2  # honeycomb with nearest-neighbour distance 1


def run_main(args, capsys):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> np.ndarray:
    """Rows of the μ table: μ, in-gap flag (1/0), then the numeric columns."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s+([+-]\d+\.\d{4})\s+(yes|no)\s+(.*)$", line)
        if m:
            rows.append([float(m[1]), 1.0 if m[2] == "yes" else 0.0, *map(float, m[3].split())])
    return np.array(rows)


# --- the default job ------------------------------------------------------------------------------
def test_default_job_prints_table(capsys):
    code, out, err = run_main([], capsys)
    assert code == 0, err
    assert err == ""
    for text in (
        "Haldane",
        "t1=-1",
        "t2=0.15",
        "60 × 60 = 3600 k-points",
        "energies in eV, lengths in Å",
        "M^O_z (model)",
        "M^O_z (μ_B/cell)",
        "σ_xy (e²/h)",
        "first call",
        "steady state",
    ):
        assert text in out, f"missing {text!r} in:\n{out}"

    chern = re.search(r"Kubo ([+-]\d\.\d+)\s+plaquette ([+-]\d\.\d+)", out)
    c_kubo, c_plaq = float(chern[1]), float(chern[2])
    assert abs(abs(c_plaq) - 1) < 1e-6 and abs(c_kubo - c_plaq) < 1e-5, out
    c = round(c_plaq)

    rows = table_rows(out)
    assert_close(rows[:, 0], cli.DEFAULT_MU, rtol=0, atol=1e-12)
    gap, m_model, m_bohr, sigma = rows[:, 1] == 1, rows[:, 2], rows[:, 3], rows[:, 4]
    # The default μ list straddles the gap (≈ ±0.58 for these parameters): both kinds of rows.
    assert gap.sum() >= 3 and (~gap).sum() >= 2
    assert_close(sigma[gap], -c, rtol=0, atol=2e-6, what="σ_xy = −C e²/h in the gap")
    assert np.all(np.abs(sigma[~gap]) < 1 - 1e-3), "outside the gap the Hall plateau is left"
    slope = np.polyfit(rows[gap, 0], m_model[gap], 1)[0]
    assert_close(slope, c / (2 * np.pi), rtol=1e-5, what="Středa dM/dμ = C/2π")
    assert_close(
        m_bohr,
        m_model * HALDANE_CELL * MODEL_MOMENT_IN_BOHR,
        rtol=2e-5,
        atol=2e-6,
        what="μ_B per cell conversion",
    )
    streda = re.search(r"dM\^O_z/dμ = ([+-]\d\.\d+)\s+C/2π = ([+-]\d\.\d+)", out)
    assert abs(float(streda[1]) - float(streda[2])) < 1e-5


def test_console_script_subprocess():
    """One real call of the installed console script (the README's first command ends with it)."""
    exe = Path(sys.executable).with_name("qgeo")
    if not exe.exists():
        exe = shutil.which("qgeo")
        if exe is None:
            pytest.skip("the qgeo console script is not installed in this environment")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [str(exe)], capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr
    assert "Chern number of band(s) [0]" in proc.stdout and "Středa check" in proc.stdout
    assert len(table_rows(proc.stdout)) == len(cli.DEFAULT_MU)
    bad = subprocess.run(
        [str(exe), "--mesh", "0x0"], capture_output=True, text=True, timeout=300, env=env
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_help_documents_everything(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in cli._QUANTITIES:
        assert name in out
    for name in ("Haldane", "QiWuZhang", "MassiveDirac", "Rashba", "RashbaLattice", "TightBinding"):
        assert name in out
    for key, sub in cli._SCHEMA.items():
        assert key in out, f"config key {key!r} not in --help"
        for subkey in sub if isinstance(sub, dict) else ():
            assert subkey in out, f"config key {key}.{subkey} not in --help"
    for flag in ("--model", "--param", "--mesh", "--mu", "--temperature", "--out", "--quantities"):
        assert flag in out
    assert "exit codes" in out and "eV" in out and "Å" in out
    code, out, _ = run_main(["models"], capsys)
    assert code == 0 and "QiWuZhang" in out and "t2=0.15" in out
    # Every concrete model the package exports is reachable by name (directly or via its factory).
    import inspect

    from qgeo_jax import models

    for name in dir(models):
        obj = getattr(models, name)
        if inspect.isclass(obj) and issubclass(obj, models.AbstractModel):
            if not inspect.isabstract(obj) and obj is not models.FunctionModel:
                assert cli._resolve_model(name)[0] in out, name


# --- qgeo run config.toml -------------------------------------------------------------------------
def test_example_config_runs_and_writes_files(tmp_path, capsys):
    code, example, _ = run_main(["example-config"], capsys)
    assert code == 0 and example == cli.EXAMPLE_CONFIG
    config = tomllib.loads(example)
    text = example.replace("shape = [60, 60]", "shape = [24, 24]").replace(
        'dir = "qgeo_out"', f'dir = "{tmp_path}"'
    )
    path = tmp_path / "run.toml"
    path.write_text(text)
    code, out, err = run_main(["run", str(path)], capsys)
    assert code == 0, err
    npz_path, json_path = tmp_path / "haldane.npz", tmp_path / "haldane.json"
    assert f"wrote {npz_path}  {json_path}" in out

    doc = json.loads(json_path.read_text(encoding="utf-8"))
    data = np.load(npz_path)
    units = json.loads(str(data["units"]))
    mu = np.linspace(config["mu"]["start"], config["mu"]["stop"], config["mu"]["num"])
    assert_close(data["mu"], mu)
    assert set(doc["results"]) == set(units) - {"mu", "temperature", "band_ranges"}
    for key, entry in doc["results"].items():
        assert entry["unit"] and entry["unit"] == units[key]
        assert_close(np.asarray(entry["value"]), data[key], what=key)
    assert doc["results"]["orbital_magnetization"]["unit"] == "e·eV·Å²/ħ per Å²"
    assert doc["results"]["ahc_e2_over_h"]["unit"] == "e²/h"
    assert doc["mu"]["unit"] == "eV" and doc["temperature"]["value"] == config["temperature"]

    prov = doc["provenance"]
    import equinox
    import jax

    import qgeo_jax

    assert prov["versions"]["qgeo_jax"] == qgeo_jax.__version__
    assert (
        prov["versions"]["jax"] == jax.__version__
        and prov["versions"]["equinox"] == equinox.__version__
    )
    assert (
        prov["model"]["name"] == "Haldane" and prov["model"]["class"] == "qgeo_jax.models.Haldane"
    )
    for key in ("t1", "t2", "phi", "delta"):
        assert_close(prov["model"]["parameters"][key], config["model"][key], what=key)
    assert prov["mesh"]["shape"] == [24, 24] and prov["mesh"]["points"] == 576
    assert prov["config"]["model"]["name"] == "Haldane" and prov["x64"] is True
    assert prov["units"]["energy"] == "eV" and prov["units"]["length"] == "angstrom"

    # Physics in the files: the same closed forms as the printed table. The plaquette route is
    # integer to round-off; Kubo sums converge exponentially with the mesh (≈ 5e-8 off at 24 × 24).
    c = float(data["chern_plaquette"])
    assert abs(abs(c) - 1) < 1e-9 and abs(float(data["chern_kubo"]) - c) < 1e-6
    gap = (mu > data["band_ranges"][0, 1] + 0.1) & (mu < data["band_ranges"][1, 0] - 0.1)
    assert gap.sum() >= 3
    assert_close(data["ahc_e2_over_h"][gap, 2], -c, rtol=0, atol=1e-6)
    assert_close(data["ahc"][gap, 2] * 2 * np.pi, data["ahc_e2_over_h"][gap, 2], rtol=1e-14)
    slope = np.polyfit(mu[gap], data["orbital_magnetization"][gap, 2], 1)[0]
    assert_close(slope, c / (2 * np.pi), rtol=1e-6)
    assert_close(
        data["orbital_magnetization_bohr_magneton_per_cell"],
        data["orbital_magnetization"] * HALDANE_CELL * MODEL_MOMENT_IN_BOHR,
        rtol=1e-8,
    )
    assert_close(data["orbital_magnetization"][:, :2], 0.0, atol=1e-15, what="2D: only M^z")


QWZ_TB = """
quantities = ["chern", "ahc", "orbital_magnetization"]
mu = [-0.3, 0.0, 0.3, 2.0]
temperature = 0.02
[model]        # Qi-Wu-Zhang, u = -1.2, t = 1, as a hopping table (both orbitals at the origin)
name = "TightBinding"
lattice = [[1.0, 0.0], [0.0, 1.0]]
positions = [[0.0, 0.0], [0.0, 0.0]]
onsite = [-1.2, 1.2]
hoppings = [[0.5, 0, 0, [1, 0]], [-0.5, 1, 1, [1, 0]], [0.5, 0, 0, [0, 1]], [-0.5, 1, 1, [0, 1]],
            [[0.0, -0.5], 0, 1, [1, 0]], [[0.0, 0.5], 0, 1, [-1, 0]],
            [-0.5, 0, 1, [0, 1]], [0.5, 0, 1, [0, -1]]]
[mesh]
shape = [24, 24]
[output]
prefix = "tb"
"""


def test_tight_binding_config_matches_builtin_model(tmp_path, capsys):
    """H = sin kx σx + sin ky σy + (u + cos kx + cos ky) σz as hoppings ≡ QiWuZhang(u=-1.2)."""
    path = tmp_path / "tb.toml"
    path.write_text(QWZ_TB)
    code, _, err = run_main(["run", str(path), "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_main(
        [
            "--model",
            "qwz",
            "--param",
            "u=-1.2",
            "--mesh",
            "24",
            "--mu",
            "-0.3,0,0.3,2",
            "--temperature",
            "0.02",
            "--out",
            str(tmp_path / "b"),
            "--prefix",
            "tb",
            "--repeats",
            "0",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    a, b = np.load(tmp_path / "a" / "tb.npz"), np.load(tmp_path / "b" / "tb.npz")
    for key in ("chern_kubo", "chern_plaquette", "ahc", "orbital_magnetization"):
        assert_close(a[key], b[key], rtol=1e-10, atol=1e-14, what=key)
    assert abs(abs(float(a["chern_plaquette"])) - 1) < 1e-9  # 0 < |u/t| < 2 (Qi, Wu, Zhang 2006)
    assert_close(a["ahc_e2_over_h"][:3, 2], -float(a["chern_plaquette"]), rtol=0, atol=1e-6)


def test_spin_magnetization_closed_form(tmp_path, capsys):
    """Flat two-level RashbaLattice (t = α = 0): M^S = tanh(J/2T) μ_B per cell along J at μ = 0."""
    j, temp = 0.3, 0.1
    code, out, err = run_main(
        [
            "--model",
            "RashbaLattice",
            "--param",
            "t=0",
            "--param",
            "alpha=0",
            "--param",
            f"exchange=[{j}, 0, 0]",
            "--quantities",
            "spin_magnetization",
            "--mesh",
            "4",
            "--mu",
            "0",
            "--temperature",
            str(temp),
            "--repeats",
            "0",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    data = np.load(tmp_path / "qgeo_results.npz")
    assert_close(
        data["spin_magnetization_bohr_magneton_per_cell"][0],
        [np.tanh(j / (2 * temp)), 0, 0],
        rtol=1e-12,
        atol=1e-15,
    )
    assert "M^S_x (μ_B/cell)" in out


def test_flags_parse_negative_mu_kelvin_and_ranges(tmp_path, capsys):
    code, _, err = run_main(
        [
            "--mu",
            "-1,0,1",
            "--temperature",
            "300K",
            "--mesh",
            "12",
            "--quantities",
            "ahc",
            "--repeats",
            "0",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "qgeo_results.json").read_text(encoding="utf-8"))
    assert doc["mu"]["value"] == [-1.0, 0.0, 1.0]
    assert_close(
        doc["temperature"]["value"], 300 * 8.617333262e-5, rtol=1e-9, what="k_B · 300 K in eV"
    )
    assert doc["provenance"]["temperature_input"] == "300K"
    assert_close(cli._parse_mu("-0.5:0.5:11"), np.linspace(-0.5, 0.5, 11))
    assert_close(cli._parse_mu({"start": 0, "stop": 1, "num": 3}), [0, 0.5, 1])
    assert cli._parse_shape("60x60") == [60, 60] and cli._parse_shape(30) == [30]


# --- errors: one line, exit code 2, did-you-mean --------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('quantites = ["chern"]\n', "unknown config key 'quantites' (did you mean 'quantities'?)"),
        ("[mesh]\nshap = [3, 3]\n", "unknown config key 'mesh.shap' (did you mean 'mesh.shape'?)"),
        (
            '[model]\nname = "Haldane"\ndetla = 0.1\n',
            "unknown parameter model.detla for Haldane (did you mean 'model.delta'?)",
        ),
        ('[model]\nname = "Haldan"\n', "unknown model 'Haldan' (did you mean 'Haldane'?)"),
        ('[outptu]\ndir = "x"\n', "unknown config key 'outptu' (did you mean 'output'?)"),
        (
            "[options]\nchunksize = 3\n",
            "unknown config key 'options.chunksize' (did you mean 'options.chunk_size'?)",
        ),
        (
            'quantities = ["orbital_magnetisation"]\n',
            "unknown quantity 'orbital_magnetisation' (did you mean 'orbital_magnetization'?)",
        ),
        ("mu = {start = 0, stop = 1, nun = 3}\n", "did you mean 'num'?"),
        ('[units]\nenergy = "ev"\n', "unknown units.energy 'ev' (did you mean 'eV'?)"),
    ],
)
def test_config_errors_are_one_line_with_suggestion(tmp_path, capsys, config, message):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    code, out, err = run_main(["run", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("qgeo: error: "), err
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "dirac", "--quantities", "chern"], "needs a 2D lattice model"),
        (["--quantities", "spin_magnetization"], "needs a spinful model"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--mu", "a,b"], "cannot read mu"),
        (["--temperature", "-1"], "temperature must be finite and >= 0"),
        (["run", "/nonexistent/config.toml"], "not found"),
        (["--param", "t2"], "--param expects KEY=VALUE"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--workers", "2", "--resume", "--out", "x"], "--resume runs in one process"),
    ],
)
def test_flag_errors_are_one_line(capsys, args, message):
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_invalid_toml_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("mu = [1, 2\n")
    code, _, err = run_main(["run", str(path)], capsys)
    assert code == 2 and "invalid TOML" in err and err.count("\n") == 1


# --- README and CI say the same thing -------------------------------------------------------------
def test_readme_opens_with_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S)[1].strip().splitlines()
    assert readme.index("```bash") < readme.index("\n## "), "the two commands must open the README"
    assert first_block == ['python3 -m pip install ".[test]" && qgeo', "python3 -m pytest -q"], (
        first_block
    )
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_commands = [
        ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert first_block[0] in ci_commands and first_block[1] in ci_commands
    assert ci.splitlines()[0].startswith("#!") and "set -euo pipefail" in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK), ".ci/run must be executable"
    assert '"$status" -eq 5' in ci, "pytest's exit code 5 (no tests) must fail CI"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "not slow" in pyproject["tool"]["pytest"]["ini_options"]["addopts"]
    assert pyproject["project"]["scripts"]["qgeo"] == "qgeo_jax.cli:main"
    assert "\n## Validation\n" in readme and "\n## Performance\n" in readme
    assert "python3 -m pytest -q -m slow" in readme


def test_kinetic_quantity_matches_library_call(tmp_path, capsys):
    """`--quantities edelstein --tau τ` writes the α of a direct kinetic_magnetization call."""
    kinetic = pytest.importorskip("qgeo_jax._kinetic")
    import qgeo_jax as qg
    from qgeo_jax import models

    args = [
        "--model",
        "RashbaLattice",
        "--param",
        "exchange=[0, 0, 0.2]",
        "--quantities",
        "edelstein",
        "--tau",
        "5",
        "--mesh",
        "16",
        "--mu",
        "-2,-1",
        "--temperature",
        "0.05",
        "--repeats",
        "0",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    data = np.load(tmp_path / "qgeo_results.npz")
    units = json.loads(str(data["units"]))
    model = models.RashbaLattice(exchange=(0.0, 0.0, 0.2))
    direct = kinetic.kinetic_magnetization(
        model,
        qg.monkhorst_pack(model, (16, 16)),
        mu=np.array([-2.0, -1.0]),
        temperature=0.05,
        part="spin",
        mechanism="extrinsic",
        tau=5.0,
    )
    assert_close(data["kinetic_spin_extrinsic"], direct, rtol=1e-12, atol=1e-15)
    # Square cell of area 1 Å²: μ_B per cell per (V/Å) equals the model value (μ_B/Å² per eV/(e·Å)).
    assert_close(
        data["kinetic_spin_extrinsic_bohr_magneton_per_cell"], direct, rtol=1e-12, atol=1e-15
    )
    assert units["kinetic_spin_extrinsic_bohr_magneton_per_cell"] == "μ_B per cell per (V/Å)"
    assert (
        np.max(np.abs(direct)) > 1e-6
    )  # a metal with a Fermi surface: the Edelstein response is finite
    no_tau = [a for i, a in enumerate(args) if a != "--tau" and args[i - 1] != "--tau"]
    code, _, err = run_main(no_tau, capsys)
    assert code == 2 and "needs a relaxation time" in err


def test_continuum_default_job_drops_chern_and_matches_dirac_closed_form(tmp_path, capsys):
    """Massive Dirac on a disk |k| < k_c: σ_xy = −C_disk e²/h in the gap, dM^O/dμ = C_disk e/h, with
    C_disk = (1/2π)∫_disk Ω_− d²k = ½(1 − m/√(m² + v²k_c²)) (lower band Ω_− = +m v²/(2d³), ξ = +1;
    seed eq. 4 and the text below it). The default quantity list silently drops the Chern number,
    which a continuum model does not have; asking for it explicitly is an error."""
    v, m, kc = 1.0, 0.1, 10.0
    args = ["--model", "dirac", "--mesh", "200x8", "--mu", "-0.05,0,0.05", "--temperature", "0.001"]
    code, out, err = run_main([*args, "--repeats", "0", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    data = np.load(tmp_path / "qgeo_results.npz")
    assert "chern_kubo" not in data
    c_disk = 0.5 * (1 - m / np.sqrt(m**2 + v**2 * kc**2))
    assert_close(data["ahc_e2_over_h"][:, 2], -c_disk, rtol=1e-7)
    slope = np.polyfit(data["mu"], data["orbital_magnetization"][:, 2], 1)[0]
    assert_close(slope, c_disk / (2 * np.pi), rtol=1e-7)
    code, _, err = run_main([*args, "--quantities", "chern"], capsys)
    assert code == 2 and "needs a 2D lattice model" in err


# --- plots, progress, precision and device -------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ["--mesh", "12", "--mu", "-1:1:5", "--repeats", "0"]
HALDANE_GAP_EDGE = abs(3 * np.sqrt(3) * 0.15 - 0.2)  # |3√3 t2 sin φ − Δ|: band edges ±this at K


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


class _Spy:
    """Wraps a cli function and keeps what it returned (here: the figures before they are saved)."""

    def __init__(self, monkeypatch, name):
        self.inner, self.returned = getattr(cli, name), []
        monkeypatch.setattr(cli, name, self)

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.returned.append(out)
        return out


def test_plots_one_png_per_quantity_with_the_written_data(tmp_path, capsys, monkeypatch):
    """Default quantities on Haldane: PREFIX_<quantity>.png for M^O and σ, PREFIX_bands.png; the
    plotted curves are the written arrays; the shaded gap and the band edge at K are the closed
    form ±|3√3 t2 sin φ − Δ| (Haldane 1988; K lies on the 12 × 12 mesh)."""
    pytest.importorskip("matplotlib")
    mu_spy, bands_spy = _Spy(monkeypatch, "_mu_figures"), _Spy(monkeypatch, "_bands_figures")
    code, out, err = run_main([*SMALL, "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    names = ["orbital_magnetization", "ahc", "bands"]
    expected = {f"qgeo_results_{n}.png" for n in names}
    assert {p.name for p in tmp_path.glob("*.png")} == expected
    for name in expected:
        assert _is_png(tmp_path / name), name
        assert str(tmp_path / name) in out  # listed in the "wrote" line
    doc = json.loads((tmp_path / "qgeo_results.json").read_text(encoding="utf-8"))
    files = doc["provenance"]["files"]
    assert files["npz"] == "qgeo_results.npz" and files["json"] == "qgeo_results.json"
    assert sorted(files["plots"]) == sorted(expected)

    data = np.load(tmp_path / "qgeo_results.npz")
    figs = dict(mu_spy.returned[0])
    assert list(figs) == ["orbital_magnetization", "ahc"]
    m_line = figs["orbital_magnetization"].axes[0].lines[0]
    assert_close(m_line.get_xdata(), data["mu"], atol=0)
    assert_close(
        m_line.get_ydata(), data["orbital_magnetization_bohr_magneton_per_cell"][:, 2], atol=0
    )
    ax = figs["ahc"].axes[0]
    assert_close(ax.lines[0].get_ydata(), data["ahc_e2_over_h"][:, 2], atol=0)
    assert "e²/h" in ax.get_ylabel() and "eV" in ax.get_xlabel()
    (gap,) = [p for p in ax.patches if p.get_label() == "band gap"]
    x0, x1 = gap.get_x(), gap.get_x() + gap.get_width()
    assert_close([x0, x1], [-HALDANE_GAP_EDGE, HALDANE_GAP_EDGE], rtol=1e-9)

    ((name, fig),) = bands_spy.returned[0]
    ax = fig.axes[0]
    assert name == "bands" and [t.get_text() for t in ax.get_xticklabels()] == ["Γ", "K", "M", "Γ"]
    x_k = ax.get_xticks()[1]
    ys = np.concatenate(
        [
            np.asarray(s)[:, :, 1].ravel()
            for c in ax.collections
            if hasattr(c, "get_segments")
            for s in [c.get_segments()]
        ]
    )
    xs = np.concatenate(
        [
            np.asarray(s)[:, :, 0].ravel()
            for c in ax.collections
            if hasattr(c, "get_segments")
            for s in [c.get_segments()]
        ]
    )
    at_k = np.abs(xs - x_k) < 1e-12
    # At the two valleys the Haldane masses are Δ ∓ 3√3 t2 sin φ: band edges ±|Δ ∓ 3√3 t2|.
    edge = np.sort(np.abs(ys[at_k]))[0]
    valleys = [HALDANE_GAP_EDGE, 0.2 + 3 * np.sqrt(3) * 0.15]
    assert np.min(np.abs(edge - np.array(valleys))) < 1e-9 * edge, (edge, valleys)
    assert "Å²" in fig.axes[1].get_ylabel()  # colour bar: Berry curvature with its unit


def test_no_plots_flag_and_config_key(tmp_path, capsys):
    code, _, err = run_main(
        [*SMALL, "--quantities", "ahc", "--out", str(tmp_path / "a"), "--no-plots", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert not list((tmp_path / "a").glob("*.png"))
    doc = json.loads((tmp_path / "a" / "qgeo_results.json").read_text(encoding="utf-8"))
    assert doc["provenance"]["files"]["plots"] == []
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'quantities = ["ahc"]\n[mesh]\nshape = [8, 8]\n[output]\ndir = "{tmp_path / "b"}"\n'
        "plots = false\n"
    )
    code, _, err = run_main(["run", str(cfg), "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "b" / "qgeo_results.npz").exists()
    assert not list((tmp_path / "b").glob("*.png"))


def test_missing_matplotlib_is_one_line_and_the_data_are_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    code, out, err = run_main([*SMALL, "--quantities", "ahc", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "matplotlib is" in ln]
    assert len(lines) == 1 and "not installed" in lines[0] and "no plots" in lines[0], err
    assert (tmp_path / "qgeo_results.npz").exists() and not list(tmp_path.glob("*.png"))


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_forced_shown_on_tty_silent_otherwise(tmp_path, capsys, monkeypatch):
    args = [*SMALL, "--quantities", "ahc,orbital_magnetization", "--block-size", "3"]
    # Not a terminal (pytest captures stderr) and not forced: no bar at all.
    code, _, err = run_main(args, capsys)
    assert code == 0 and "steps" not in err and "ETA" not in err, err
    # Forced onto a pipe/file: one plain line per step (2 quantities × 2 μ blocks), then "done".
    code, _, err = run_main([*args, "--progress", "--device", "cpu"], capsys)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "steps" in ln]
    assert "\r" not in err and len(lines) == 5, err
    assert "0/4 steps  ahc, μ 1-3 of 5" in lines[0]
    assert "orbital_magnetization, μ 4-5 of 5" in lines[3] and "4/4 steps  done" in lines[4]
    assert all("elapsed" in ln and "ETA" in ln for ln in lines)
    # A terminal: one line redrawn in place ("\r"); --quiet suppresses it, --progress wins.
    fake = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    assert cli.main(args) == 0
    monkeypatch.undo()
    text = fake.getvalue()
    assert "\r" in text and "ETA" in text and "4/4 steps  done" in text, repr(text)
    capsys.readouterr()
    assert cli._make_progress(cli.Job(), quiet=True, stream=_FakeTTY()) is None
    assert cli._make_progress(cli.Job(), quiet=False, stream=io.StringIO()) is None
    forced = cli._make_progress(cli.Job(progress="on"), quiet=True, stream=_FakeTTY())
    assert forced is not None and forced.live


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('precision = "float31"\n', "unknown precision 'float31' (did you mean 'float32'?)"),
        ('device = "gpus"\n', "unknown device 'gpus' (did you mean 'gpu'?)"),
        ('[output]\nplots = "yes"\n', "output.plots must be true or false"),
        (
            "[output]\nplot = true\n",
            "unknown config key 'output.plot' (did you mean 'output.plots'?)",
        ),
    ],
)
def test_precision_device_plots_keys_bad_values(tmp_path, capsys, config, message):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    code, out, err = run_main(["run", str(path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "doubl"], "unknown precision 'doubl'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_precision_device_flags_bad_values(capsys, args, message):
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_gpu_requested_without_gpu_is_one_line(capsys):
    import jax

    try:
        if jax.devices("gpu"):
            pytest.skip("a GPU is visible: nothing to refuse")
    except RuntimeError:
        pass
    code, out, err = run_main(["--device", "gpu"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "no GPU visible to JAX; install jax[cuda12]" in err


def test_precision_and_device_in_provenance(tmp_path, capsys):
    import jax

    code, _, err = run_main(
        [
            *SMALL,
            "--quantities",
            "ahc",
            "--device",
            "cpu",
            "--no-plots",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    prov = json.loads((tmp_path / "qgeo_results.json").read_text(encoding="utf-8"))["provenance"]
    assert prov["precision"] == "float64"
    assert prov["device"] == {
        "requested": "cpu",
        "platform": "cpu",
        "used": [str(jax.devices("cpu")[0])],
    }
    cfg = tomllib.loads(cli.EXAMPLE_CONFIG)
    assert cfg["precision"] == "float64" and cfg["device"] == "auto" and cfg["output"]["plots"]


def test_float32_precision_agrees_with_float64(tmp_path, capsys, monkeypatch):
    """float32 per-k linear algebra, float64 accumulation: the same numbers to ~1e-5 (gapped)."""
    from qgeo_jax._precision import tree_precision

    cast = _Spy(monkeypatch, "_apply_precision")
    runs = {}
    for precision in ("float64", "float32"):
        out_dir = tmp_path / precision
        code, out, err = run_main(
            [
                *SMALL,
                "--precision",
                precision,
                "--no-plots",
                "--quantities",
                "chern,orbital_magnetization",
                "--out",
                str(out_dir),
            ],
            capsys,
        )
        assert code == 0, err
        runs[precision] = (np.load(out_dir / "qgeo_results.npz"), out, out_dir)
    (d64, _, _), (d32, out32, dir32) = runs["float64"], runs["float32"]
    assert "precision   warning: float32" in out32
    prov = json.loads((dir32 / "qgeo_results.json").read_text(encoding="utf-8"))["provenance"]
    assert prov["precision"] == "float32"
    for key in ("orbital_magnetization", "chern_kubo"):
        scale = np.max(np.abs(d64[key]))
        assert_close(d32[key], d64[key], rtol=0, atol=1e-4 * scale, what=key)
    assert round(float(d32["chern_plaquette"])) == round(float(d64["chern_plaquette"]))
    # The model that ran was really cast (float32 leaves), and only in the float32 run (the mesh
    # keeps float64 weights by design: the k-sum is accumulated in float64).
    assert [tree_precision(model) for model, _ in cast.returned] == ["float64", "float32"]


@pytest.mark.slow
def test_workers_split_the_mesh_over_processes_and_agree(tmp_path):
    """`qgeo --workers 2`: two processes joined by jax.distributed write the one-process numbers."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}"
        cmd = [sys.executable, "-m", "qgeo_jax.cli", "--workers", str(n), "--quiet", "--no-plots", "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
        outs[n] = np.load(out / "qgeo_results.npz")
    for key in ("orbital_magnetization", "ahc", "chern_kubo"):
        assert_close(outs[2][key], outs[1][key], rtol=1e-13, atol=1e-15)
