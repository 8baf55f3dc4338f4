r"""qgeo_jax side by side with WannierBerri and PythTB: same model, same mesh, same numbers.

Every case builds one model, hands it to the peer (WannierBerri through a Wannier90 ``_tb.dat`` file
written by :func:`qgeo_jax.io.write_tb`, PythTB through its own hopping table), computes the same
quantities on the same k-mesh with both codes in one process, and prints

* the agreement of the numbers, after converting units (max |ours − peer| / max |peer|), and
* the throughput of each code in k-points per CPU-second (``time.process_time`` summed over every
  thread, and for Ray over the whole process tree) and per wall-second, minimum over repeats, and
  the ratio ours / peer measured in the same run.

WannierBerri (Tsirkin, npj Comput. Mater. 7, 33 (2021), doi:10.1038/s41524-021-00498-5), 101 Fermi
levels at T = 0, on the mesh NK = N per periodic axis (its ``Grid(NKdiv, NKFFT)``, NKFFT tuned):

* Haldane model (2 bands, 2D): ``AHC`` and ``Morb`` vs :func:`qgeo_jax.anomalous_hall_conductivity`
  and :func:`qgeo_jax.orbital_magnetization` at T = 0. Same mesh (Γ-centred, k = i/N) and the same
  step occupation, so the two agree to round-off. σ is compared in e²/h per layer, M in μ_B per
  cell.
* 8-orbital random 3D model (``_models.random_tight_binding(8, dim=3, spin=True)`` with each spin
  pair moved onto one site, because WannierBerri's ``set_spin_pairs`` spin operator σ is
  site-local): ``AHC``, ``Morb`` and the two gyrotropic (GME) tensors, vs ours with
  ``kinetic_magnetization(mechanism="extrinsic", part="orbital"/"spin", tau=1)`` (τ = 1 ħ/eV).
  WannierBerri is timed with its cheapest calculators for them, ``GME_orb_FermiSurf`` and
  ``GME_spin_FermiSurf`` (7× and 2× cheaper than the ``FermiSea`` ones on this model).

  Its GME tensors are T = 0 sums while ours contain f0' and need T > 0 (``--gme-temperature``,
  0.3 eV), so the check runs WannierBerri once more, untimed, on a fine Fermi-level grid
  (dE = T/200) and smooths its result with the same kernel −f0'(E − μ):

  - Fermi-surface route: K_surf(E) = dR/dE of the cumulative sum R(E) = Σ_{E_k<E} v m, so
    ∫dE (−f0'(E − μ)) K_surf(E) = Σ_k v m (−f0'(E_k − μ)), our sum term by term. The residual is
    O(dE) (WannierBerri bins each state onto the grid and evaluates m with the bin's E_F): it fell
    3.5–3.9× when dE was divided by 4.
  - Fermi-sea route (``GME_*_FermiSea``, −Σ_k ∂_α m f at T = 0): equal to ours after an
    integration by parts that is exact in the continuum, so the residual is the mesh error; it
    falls as the mesh is refined (8³ → 12³: 3e-2 → 4e-3).

  Conventions, derived from both sources and confirmed by the numbers (a wrong factor would show
  as an O(1) ratio): K^{WB}_{αμ}[A] = −α^{μα}(τ = 1 ħ/eV) × c with c_spin = μ_B/Å² and
  c_orb = e·(1 eV)/ħ. WannierBerri's index order is (field, magnetization), and its prefactor
  (``factors.factor_gme_spin`` = −μ_B/Å²) multiplies Σ v s δ(E − E_F), whereas our
  α = −g τ Σ ⟨S⟩ v f0' = +τ Σ ⟨σ⟩ v δ(E − E_F) in μ_B units: same magnitude, opposite sign.

PythTB 2.x (Python ≥ 3.12): the occupied-band Berry curvature Ω^{xy}(k) on the whole mesh
(``TBModel.berry_curvature``, Kubo formula), and the Chern number by the Kubo sum
(``TBModel.chern_number``) and by Fukui–Hatsugai–Suzuki plaquettes (``WFArray.chern_number``), vs
:func:`qgeo_jax.berry_curvature_tensor` and :func:`qgeo_jax.chern_number` (``kubo``/``plaquette``).

The peers are optional (``benchmarks/requirements-peers.txt``); a missing one is skipped.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_peers.py [--quick] [--json out.json]
        [--peers wannierberri,pythtb] [--ray N] [--repeat R] [--wb-repeat R]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from importlib import metadata

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402
from qgeo_jax import units  # noqa: E402

try:
    from qgeo_jax import kinetic_magnetization  # public name once exported
except ImportError:  # pragma: no cover - until the lead exports it
    from qgeo_jax._kinetic import kinetic_magnetization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _models import random_tight_binding  # noqa: E402

PADDING = 10.0  # Å: length of the extra lattice vector write_tb adds to a 2D model (WB is 3D)
N_MU = 101
# Unit conversions (CODATA values of qgeo_jax.units; WannierBerri uses scipy.constants, whose
# electron mass differs in the 9th digit, hence ~1e-9 relative floors on μ_B quantities).
E2_OVER_H = units.ELEMENTARY_CHARGE**2 / units.PLANCK  # S
AHC_3D_SI = units.ELEMENTARY_CHARGE**2 / units.HBAR / 1e-10  # e²/(ħ Å) in S/m
GME_SPIN_SI = units.BOHR_MAGNETON / 1e-20  # μ_B/Å² in A
GME_ORB_SI = units.ELEMENTARY_CHARGE * units.ELEMENTARY_CHARGE / units.HBAR  # e·(1 eV)/ħ in A


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------
def _tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live descendants (Linux ``/proc``).

    Ray's workers and daemons are descendants of the driver, so this counts everything Ray spends.
    Falls back to ``time.process_time`` where ``/proc`` is missing.
    """
    if not os.path.isdir("/proc"):
        return time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(name)
        parent[pid] = int(fields[1])
        # utime, stime, and the times of waited-for children (cutime, cstime)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / tick
    children = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, stack = 0.0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def measure(fn, repeat: int, *, tree: bool = False, warm: bool = True):
    """Run ``fn`` (warm-up first if ``warm``); return (min CPU s, min wall s, first-call s, result).

    CPU time is ``time.process_time`` (all threads of this process), or the whole process tree
    when ``tree`` (Ray). The minimum over repeats is the least disturbed run on a shared machine.
    """
    clock = _tree_cpu_seconds if tree else time.process_time
    first = None
    if warm:
        t0 = time.perf_counter()
        result = jax.block_until_ready(fn())
        first = time.perf_counter() - t0
    cpus, walls = [], []
    for _ in range(repeat):
        c0, w0 = clock(), time.perf_counter()
        result = jax.block_until_ready(fn())
        walls.append(time.perf_counter() - w0)
        cpus.append(clock() - c0)
    return min(cpus), min(walls), first, result


def _rel(a, b) -> float:
    """max |a − b| / max |b| (the agreement measure used throughout)."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


@contextlib.contextmanager
def _quiet():
    """Silence the peers' progress prints (their logging is lowered to WARNING separately)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _band_range(model, mesh):
    k, _ = mesh.all_points()
    energies = jax.jit(jax.vmap(lambda kk: jnp.linalg.eigvalsh(model.hamiltonian(kk))))(k)
    return float(energies.min()), float(energies.max())


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
def haldane():
    return qg.io.to_tight_binding(qg.models.Haldane(t2=0.15, phi=np.pi / 2, delta=0.2))


def spinful_3d(seed: int = 3):
    """8-orbital random 3D model (4 sites × spin ½), each spin pair (2i, 2i+1) on one site."""
    model = random_tight_binding(8, dim=3, seed=seed, spin=True)
    pos = np.array(model.reduced_positions)
    pos[1::2] = pos[0::2]
    return eqx.tree_at(lambda m: m.reduced_positions, model, jnp.asarray(pos))


# --------------------------------------------------------------------------------------------------
# WannierBerri
# --------------------------------------------------------------------------------------------------
def _wb_system(model, workdir, spin_pairs: bool):
    import wannierberri as wberri

    path = os.path.join(workdir, "model_tb.dat")
    qg.io.write_tb(model, path, padding=PADDING)
    periodic = [True] * model.dim + [False] * (3 - model.dim)
    with _quiet():
        system = wberri.system.System_R.from_tb_dat(path, berry=True, periodic=periodic)
    nr, n = system.rvec.nRvec, system.num_wann
    # The tight-binding position operator is diagonal at the orbital centres, so in WannierBerri's
    # phase convention I (the centres inside the Bloch phase, our "positions" convention) the
    # external terms A, B = ⟨0|H(r − R − τ)|R⟩ and C vanish: AA is zero after read-in, BB/CC are set
    # to zero explicitly (Morb and GME_orb ask for them).
    system.set_R_mat("BB", np.zeros((nr, n, n, 3), complex))
    system.set_R_mat("CC", np.zeros((nr, n, n, 3), complex))
    if spin_pairs:
        # σ on each (↑, ↓) pair at R = 0: our S = σ/2 of random_tight_binding(spin=True).
        system.set_spin_pairs([(2 * i, 2 * i + 1) for i in range(n // 2)])
    return system


def _wb_run(system, n_k, div, calculators, parallel):
    import wannierberri as wberri

    dim = sum(system.periodic)
    nkdiv = [div] * dim + [1] * (3 - dim)
    nkfft = [n_k // div] * dim + [1] * (3 - dim)
    grid = wberri.Grid(system, NKdiv=nkdiv, NKFFT=nkfft)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        result = wberri.run(
            system,
            grid=grid,
            calculators=calculators(),
            parallel=parallel,
            fout_name=os.path.join(tmp, "wb"),
            file_Klist_path=os.path.join(tmp, "klist"),
        )
    return {key: np.asarray(value.data) for key, value in result.results.items()}


def _wb_calculators(efermi, gme: bool, fine: bool = False):
    """WannierBerri calculators. Timed set: its fastest calculator per quantity (the Fermi-surface
    GME calculators cost 1/7 (orbital) and 1/2 (spin) of the Fermi-sea ones on the 8-orbital model).
    ``fine``: the accuracy run, both GME variants on a fine Fermi-level grid."""
    from wannierberri import calculators as calc

    def make():
        if fine:
            return {
                "gme_orb_surf": calc.static.GME_orb_FermiSurf(Efermi=efermi),
                "gme_spin_surf": calc.static.GME_spin_FermiSurf(Efermi=efermi),
                "gme_orb_sea": calc.static.GME_orb_FermiSea(Efermi=efermi),
                "gme_spin_sea": calc.static.GME_spin_FermiSea(Efermi=efermi),
            }
        cs = {"ahc": calc.static.AHC(Efermi=efermi), "morb": calc.static.Morb(Efermi=efermi)}
        if gme:
            cs["gme_orb"] = calc.static.GME_orb_FermiSurf(Efermi=efermi)
            cs["gme_spin"] = calc.static.GME_spin_FermiSurf(Efermi=efermi)
        return cs

    return make


def _smooth(efermi_fine, values, mus, temperature):
    """∫ dE (−∂f0/∂E)(E − μ) values(E), trapezoid rule on the fine grid (values: T = 0 sums)."""
    de = efermi_fine[1] - efermi_fine[0]
    x = np.abs(efermi_fine[None, :] - mus[:, None]) / temperature
    kernel = np.exp(-x) / (temperature * (1 + np.exp(-x)) ** 2) * de
    return np.einsum("me,e...->m...", kernel, values)


def wannierberri_case(name, model, n_k, *, gme, args):
    import wannierberri as wberri

    logging.getLogger("wannierberri").setLevel(logging.WARNING)
    mesh = qg.monkhorst_pack(model, (n_k,) * model.dim)
    e_min, e_max = _band_range(model, mesh)
    mus = np.linspace(e_min - 0.1, e_max + 0.1, N_MU)
    t_gme = args.gme_temperature
    chunk = args.chunk

    def ours():
        out = {
            "ahc": qg.anomalous_hall_conductivity(
                model, mesh, mu=mus, temperature=0.0, chunk_size=chunk
            ),
            "morb": qg.orbital_magnetization(
                model, mesh, mu=mus, temperature=0.0, chunk_size=chunk
            ),
        }
        if gme:
            for key, part in (("gme_orb", "orbital"), ("gme_spin", "spin")):
                out[key] = kinetic_magnetization(
                    model,
                    mesh,
                    mu=mus,
                    temperature=t_gme,
                    part=part,
                    mechanism="extrinsic",
                    tau=1.0,
                    chunk_size=chunk,
                )
        return out

    ours_cpu, ours_wall, ours_first, ours_out = measure(ours, args.repeat)
    ours_out = {k: np.asarray(v) for k, v in ours_out.items()}

    parallel = args.ray > 0
    with tempfile.TemporaryDirectory() as workdir:
        system = _wb_system(model, workdir, spin_pairs=gme)
        # NKFFT barely matters serially (the cost is WannierBerri's Python loop over k and bands),
        # so the 3D model is tuned only on request; Ray needs several K-points (NKdiv > 1).
        divs = [1, 2, 4] if args.wb_tune or parallel or model.dim == 2 else [1]
        divs = [d for d in divs if n_k % d == 0 and n_k // d >= 4]
        tuning = {}
        for div in divs:
            cpu, wall, _, wb_out = measure(
                lambda div=div: _wb_run(system, n_k, div, _wb_calculators(mus, gme), parallel),
                args.wb_repeat,
                tree=parallel,
                warm=False,
            )
            tuning[n_k // div] = {"cpu_s": cpu, "wall_s": wall}
        # Its best settings: the fastest NKFFT, chosen separately for CPU time and wall time.
        nkfft_cpu = min(tuning, key=lambda f: tuning[f]["cpu_s"])
        nkfft_wall = min(tuning, key=lambda f: tuning[f]["wall_s"])
        wb_cpu, wb_wall = tuning[nkfft_cpu]["cpu_s"], tuning[nkfft_wall]["wall_s"]
        fine = None
        if gme:
            de = t_gme / 200
            fine = np.arange(e_min - 15 * t_gme, e_max + 15 * t_gme + de, de)
            wb_fine = _wb_run(system, n_k, 1, _wb_calculators(fine, gme, fine=True), parallel)

    # --- agreement, in the peer's units --------------------------------------------------------
    agree = {}
    if model.dim == 2:
        wb_ahc = wb_out["ahc"][:, 2] * PADDING * 1e-10 / E2_OVER_H  # S/m of the padded cell → e²/h
        ours_ahc = units.hall_conductivity(ours_out["ahc"][:, 2], dim=2, to="e2_over_h")
        ahc_unit = "e^2/h per layer"
    else:
        wb_ahc, ours_ahc, ahc_unit = wb_out["ahc"], ours_out["ahc"] * AHC_3D_SI, "S/m"
    agree["ahc"] = _rel(ours_ahc, wb_ahc)
    ours_morb = units.orbital_magnetization(
        ours_out["morb"],
        dim=model.dim,
        to="bohr_magneton_per_cell",
        cell_volume=float(model.cell_volume()),
    )
    agree["morb"] = _rel(ours_morb, wb_out["morb"])
    if gme:
        for key, factor in (("gme_orb", GME_ORB_SI), ("gme_spin", GME_SPIN_SI)):
            ours_k = -np.swapaxes(ours_out[key], -1, -2) * factor
            for route in ("surf", "sea"):
                agree[f"{key}_{route}"] = _rel(
                    ours_k, _smooth(fine, wb_fine[f"{key}_{route}"], mus, t_gme)
                )
    nk = mesh.size
    rec = {
        "peer": "wannierberri",
        "peer_version": wberri.__version__,
        "model": name,
        "norb": int(model.norb),
        "dim": model.dim,
        "mesh": [n_k] * model.dim,
        "nk": nk,
        "quantities": ["AHC", "Morb"] + (["GME_orb", "GME_spin"] if gme else []),
        "n_mu": N_MU,
        "mu_range_eV": [float(mus[0]), float(mus[-1])],
        "gme_temperature_eV": t_gme if gme else None,
        "peer_mode": f"ray({args.ray})" if parallel else "serial",
        "peer_nkfft_best_cpu": nkfft_cpu,
        "peer_nkfft_best_wall": nkfft_wall,
        "peer_tuning": {f"NKFFT={f}": t for f, t in tuning.items()},
        "peer_cpu_s": wb_cpu,
        "peer_wall_s": wb_wall,
        "ours_cpu_s": ours_cpu,
        "ours_wall_s": ours_wall,
        "ours_compile_plus_first_s": ours_first,
        "peer_k_per_cpu_s": nk / wb_cpu,
        "ours_k_per_cpu_s": nk / ours_cpu,
        "peer_k_per_wall_s": nk / wb_wall,
        "ours_k_per_wall_s": nk / ours_wall,
        "ratio_cpu": wb_cpu / ours_cpu,
        "ratio_wall": wb_wall / ours_wall,
        "ahc_unit": ahc_unit,
        "agreement_rel": agree,
        "ahc_example": {
            "mu": float(mus[N_MU // 2]),
            "ours": float(np.ravel(ours_ahc[N_MU // 2])[-1]),
            "peer": float(np.ravel(wb_ahc[N_MU // 2])[-1]),
        },
    }
    _print_record(rec)
    return rec


# --------------------------------------------------------------------------------------------------
# PythTB
# --------------------------------------------------------------------------------------------------
def _pythtb_model(tb):
    from pythtb import Lattice, TBModel

    lat = Lattice(
        np.asarray(tb.lattice_vectors),
        np.asarray(tb.reduced_positions),
        periodic_dirs=list(range(tb.dim)),
    )
    model = TBModel(lat)
    model.set_onsite(np.asarray(tb.onsite))
    # PythTB's set_hop(t, i, j, R) is ⟨i0|H|jR⟩ = t with the conjugate implied, and its Bloch phase
    # e^{2πi k·(R + τ_j − τ_i)} is our "positions" convention: the table maps one to one.
    for t, i, j, r in zip(
        np.asarray(tb.hopping),
        np.asarray(tb.hop_i),
        np.asarray(tb.hop_j),
        np.asarray(tb.hop_R),
        strict=True,
    ):
        model.set_hop(complex(t), int(i), int(j), [int(x) for x in r])
    return model


@eqx.filter_jit
def _occupied_berry_map(model, k, occupied):
    """Σ_{n∈occ} Ω_n^{xy}(k) on every k (chunks of 1024 bound the memory)."""

    def one(kk):
        omega = qg.berry_curvature_tensor(qg.spectrum(model, kk))
        return occupied @ omega[:, 0, 1]

    return jax.lax.map(one, k, batch_size=1024)


def pythtb_case(name, tb, n_k, occupied, *, args):
    from pythtb import Mesh, WFArray

    pm = _pythtb_model(tb)
    mesh = qg.monkhorst_pack(tb, (n_k, n_k))
    kcart, _ = mesh.all_points()
    kred = np.stack(np.meshgrid(np.arange(n_k) / n_k, np.arange(n_k) / n_k, indexing="ij"), -1)
    kred = kred.reshape(-1, 2)  # the same points in reduced coordinates (mesh order i1 slowest)
    assert np.allclose(kred @ np.asarray(tb.reciprocal()), np.asarray(kcart), atol=1e-12)
    occ_mask = jnp.asarray(np.isin(np.arange(tb.norb), occupied), dtype=jnp.float64)
    occ = list(occupied)

    def peer_plaquette():
        grid = Mesh(["k", "k"])
        grid.build_grid((n_k, n_k))
        wfa = WFArray(pm.lattice, grid)
        wfa.solve_model(pm)
        return wfa.chern_number((0, 1), state_idx=occ)

    timings, values = {}, {}
    for label, ours_fn, peer_fn in (
        (
            "berry_map",
            lambda: _occupied_berry_map(tb, kcart, occ_mask),
            lambda: pm.berry_curvature(kred, occ_idxs=occ, plane=(0, 1), cartesian=True),
        ),
        (
            "chern_kubo",
            lambda: qg.chern_number(tb, mesh, bands=occ, method="kubo", chunk_size=args.chunk),
            lambda: pm.chern_number((0, 1), (n_k, n_k), occ_idxs=occ),
        ),
        (
            "chern_plaquette",
            lambda: qg.chern_number(tb, mesh, bands=occ, method="plaquette", chunk_size=args.chunk),
            peer_plaquette,
        ),
    ):
        o_cpu, o_wall, o_first, o_val = measure(ours_fn, args.repeat)
        p_cpu, p_wall, _, p_val = measure(peer_fn, args.repeat, warm=False)
        timings[label] = {
            "ours_cpu_s": o_cpu,
            "ours_wall_s": o_wall,
            "ours_compile_plus_first_s": o_first,
            "peer_cpu_s": p_cpu,
            "peer_wall_s": p_wall,
            "ours_k_per_cpu_s": mesh.size / o_cpu,
            "peer_k_per_cpu_s": mesh.size / p_cpu,
            "ratio_cpu": p_cpu / o_cpu,
            "ratio_wall": p_wall / o_wall,
        }
        values[label] = (np.asarray(o_val), np.asarray(p_val))
    o_map, p_map = values["berry_map"]
    rec = {
        "peer": "pythtb",
        "peer_version": metadata.version("pythtb"),
        "model": name,
        "norb": int(tb.norb),
        "dim": 2,
        "mesh": [n_k, n_k],
        "nk": mesh.size,
        "occupied": occ,
        "timings": timings,
        "agreement": {
            "berry_map_rel": _rel(o_map, p_map),
            "chern_kubo": {
                "ours": float(values["chern_kubo"][0]),
                "peer": float(values["chern_kubo"][1]),
            },
            "chern_plaquette": {
                "ours": float(values["chern_plaquette"][0]),
                "peer": float(values["chern_plaquette"][1]),
            },
        },
    }
    _print_record(rec)
    return rec


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def _print_record(rec):
    mesh = "x".join(str(n) for n in rec["mesh"])
    if rec["peer"] == "wannierberri":
        agree = " ".join(f"{k}={v:.1e}" for k, v in rec["agreement_rel"].items())
        print(
            f"WB {rec['peer_mode']:>7s} | {rec['model']:<12s} N={rec['norb']:<2d} mesh {mesh:<9s}"
            f" {'+'.join(rec['quantities']):<25s} | WB {rec['peer_k_per_cpu_s']:9.3g} k/CPU-s"
            f" (NKFFT={rec['peer_nkfft_best_cpu']}) | ours {rec['ours_k_per_cpu_s']:9.3g} k/CPU-s"
            f" | ratio CPU {rec['ratio_cpu']:7.0f}x wall {rec['ratio_wall']:7.0f}x"
            f" | rel. diff {agree}",
            flush=True,
        )
        return
    for label, t in rec["timings"].items():
        print(
            f"PythTB  | {rec['model']:<12s} N={rec['norb']:<2d} mesh {mesh:<9s} {label:<25s}"
            f" | PythTB {t['peer_k_per_cpu_s']:9.3g} k/CPU-s"
            f" | ours {t['ours_k_per_cpu_s']:9.3g} k/CPU-s"
            f" | ratio CPU {t['ratio_cpu']:6.2f}x wall {t['ratio_wall']:6.2f}x",
            flush=True,
        )
    a = rec["agreement"]
    print(
        f"PythTB  | {rec['model']:<12s} agreement: Ω map rel {a['berry_map_rel']:.1e};"
        f" C kubo ours {a['chern_kubo']['ours']:.12f} PythTB {a['chern_kubo']['peer']:.12f};"
        f" C plaquette ours {a['chern_plaquette']['ours']:.12f}"
        f" PythTB {a['chern_plaquette']['peer']:.12f}",
        flush=True,
    )


def _available(name):
    try:
        if name == "pythtb":
            return int(metadata.version("pythtb").split(".")[0]) >= 2
        __import__(name)
        return True
    except (ImportError, metadata.PackageNotFoundError):
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small meshes (smoke run, under a minute)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--peers", default="wannierberri,pythtb", help="comma-separated subset to run")
    p.add_argument("--repeat", type=int, default=5, help="repeats of each qgeo_jax / PythTB timing")
    p.add_argument(
        "--wb-repeat", type=int, default=1, help="repeats of each WannierBerri run (slow)"
    )
    p.add_argument("--wb-tune", action="store_true", help="also tune NKFFT for the 3D model")
    p.add_argument("--ray", type=int, default=0, help="run WannierBerri on Ray with this many CPUs")
    p.add_argument("--gme-temperature", type=float, default=0.3, help="T (eV) of the GME check")
    p.add_argument("--chunk", type=int, default=256)
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.peers.split(",") if s.strip()]
    records = []
    if "wannierberri" in wanted:
        if not _available("wannierberri"):
            print(
                "wannierberri is not installed: skipping"
                " (pip install -r benchmarks/requirements-peers.txt)"
            )
        else:
            if args.ray:
                import ray

                with warnings.catch_warnings():
                    # Ray starts its daemons with fork+exec, which is safe next to JAX's threads.
                    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                    ray.init(num_cpus=args.ray, include_dashboard=False, log_to_driver=False)
            try:
                n2, n3 = (48, 8) if args.quick else (96, 12)
                records.append(wannierberri_case("Haldane", haldane(), n2, gme=False, args=args))
                records.append(
                    wannierberri_case("random-3D-8", spinful_3d(), n3, gme=True, args=args)
                )
            finally:
                if args.ray:
                    ray.shutdown()
    if "pythtb" in wanted:
        if not _available("pythtb"):
            print("pythtb >= 2 is not installed (it needs Python >= 3.12): skipping")
        else:
            n_h, n_r = (48, 24) if args.quick else (128, 64)
            records.append(pythtb_case("Haldane", haldane(), n_h, [0], args=args))
            records.append(
                pythtb_case(
                    "random-2D-8",
                    random_tight_binding(8, dim=2, seed=1),
                    n_r,
                    [0, 1, 2, 3],
                    args=args,
                )
            )
    versions = {}
    for pkg in ("jax", "jaxlib", "numpy", "wannierberri", "pythtb", "ray", "pyfftw", "numba"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    meta = {
        "python": platform.python_version(),
        "versions": versions,
        "devices": str(jax.devices()),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "argv": sys.argv[1:],
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "records": records}, fh, indent=2)
    return records


if __name__ == "__main__":
    main()
