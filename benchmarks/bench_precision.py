"""float32 (mixed precision) against float64: accuracy of every response and the speed ratio.

For each model (Haldane, spinful Rashba lattice, 8-band spinful random tight-binding) and each
response — M^O, AHC, Kubo Chern (lower band), M^S, and the four kinetic responses (Edelstein =
spin/extrinsic, spin/intrinsic, orbital/extrinsic, orbital/intrinsic) — the same mesh is integrated
with ``cast_precision(·, "float64")`` and ``cast_precision(·, "float32")``; the table gives the
relative error max|x32 − x64| / max|x64| and the steady-state time ratio t32/t64 measured in the
same process. A second table shows the failure mode: a Haldane model next to its transition
(Δ = 3√3 t2 + δ: gap 2δ at one valley, K on the mesh) as gap/bandwidth → 0.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_precision.py [--quick] [--json out.json]

The GPU path runs the same script (JAX picks the GPU when there is one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402
from qgeo_jax._kinetic import kinetic_magnetization  # noqa: E402
from qgeo_jax._precision import cast_precision  # noqa: E402
from qgeo_jax._responses import (  # noqa: E402
    anomalous_hall_conductivity,
    chern_number_kubo,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax._validate import band_edges  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _models import random_tight_binding  # noqa: E402

MU = np.linspace(-1.0, 1.0, 21)
T = 0.05


def responses(spinful):
    out = {
        "M^O": lambda m, me: orbital_magnetization(m, me, mu=MU, temperature=T),
        "AHC": lambda m, me: anomalous_hall_conductivity(m, me, mu=MU, temperature=T),
        "Chern (Kubo, band 0)": lambda m, me: chern_number_kubo(m, me, [0]),
    }
    if spinful:
        out["M^S"] = lambda m, me: spin_magnetization(m, me, mu=MU, temperature=T)
    parts = [("spin", "extrinsic"), ("spin", "intrinsic")] if spinful else []
    parts += [("orbital", "extrinsic"), ("orbital", "intrinsic")]
    names = {("spin", "extrinsic"): "Edelstein (spin, extr.)", ("spin", "intrinsic"): "spin, intr.",
             ("orbital", "extrinsic"): "orbital, extr.", ("orbital", "intrinsic"): "orbital, intr."}
    for part, mech in parts:
        extra = dict(tau=1.0) if mech == "extrinsic" else {}
        out[names[(part, mech)]] = (
            lambda m, me, part=part, mech=mech, extra=extra:
            kinetic_magnetization(m, me, mu=MU, temperature=T, part=part, mechanism=mech, **extra)
        )
    return out


def timed(fn, repeat):
    res = jax.block_until_ready(fn())  # compile + first call
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        best_wall, best_cpu = min(best_wall, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return np.asarray(res), best_wall, best_cpu


def rel_err(a, b):
    """max|a − b| / max|b|; ``None`` when b vanishes (by symmetry: |b| < 1e-12), no scale then."""
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 1e-12 else None


def fmt(e):
    return "zero by symmetry" if e is None else f"{e:.1e}"


def run_model(name, model, shape, repeat):
    mesh = qg.monkhorst_pack(model, shape)
    m64, me64 = cast_precision(model, "float64"), cast_precision(mesh, "float64")
    m32, me32 = cast_precision(model, "float32"), cast_precision(mesh, "float32")
    rows = []
    for qname, fn in responses(model.spin_operators() is not None).items():
        x64, w64, c64 = timed(lambda fn=fn: fn(m64, me64), repeat)
        x32, w32, c32 = timed(lambda fn=fn: fn(m32, me32), repeat)
        rows.append(dict(model=name, norb=model.norb, kpoints=mesh.size, quantity=qname,
                         scale=float(np.max(np.abs(x64))), rel_err=rel_err(x32, x64),
                         wall64=w64, wall32=w32, cpu64=c64, cpu32=c32, ratio_cpu=c32 / c64, ratio_wall=w32 / w64))
        r = rows[-1]
        print(f"| {name} | {r['norb']} | {r['kpoints']} | {qname} | {r['scale']:.3g} | {fmt(r['rel_err'])} | "
              f"{r['ratio_cpu']:.2f} | {r['ratio_wall']:.2f} |", flush=True)
    return rows


def run_degenerate(shape, deltas):
    rows = []
    for delta in deltas:
        # Near the Haldane transition Δ0 = 3√3 t2 (φ = π/2): the gap at one valley is 2δ, the other
        # valley stays gapped, so M^O and the AHC are finite (no valley cancellation).
        model = qg.models.Haldane(t1=-1.0, t2=0.15, delta=3 * np.sqrt(3) * 0.15 + delta)
        mesh = qg.monkhorst_pack(model, shape)  # shape divisible by 3: K is a mesh point
        out = {}
        for p in ("float64", "float32"):
            m, me = cast_precision(model, p), cast_precision(mesh, p)
            out[p] = (np.asarray(orbital_magnetization(m, me, mu=[0.0, 0.5], temperature=0.01)),
                      np.asarray(anomalous_hall_conductivity(m, me, mu=[0.0, 0.5], temperature=0.01)))
        width = float(np.ptp(band_edges(model, mesh)))
        rows.append(dict(delta=delta, gap_over_bandwidth=2 * delta / width,
                         rel_err_MO=rel_err(out["float32"][0], out["float64"][0]),
                         rel_err_AHC=rel_err(out["float32"][1], out["float64"][1])))
        r = rows[-1]
        print(f"| {delta:g} | {r['gap_over_bandwidth']:.1e} | {fmt(r['rel_err_MO'])} | {fmt(r['rel_err_AHC'])} |", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small meshes (smoke run, ~1 min)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    n2, n8 = (48, 16) if a.quick else (192, 48)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(MU)} μ, T = {T}\n")
    print("| model | N | k-points | quantity | max abs (f64) | rel. error f32 | CPU t32/t64 | wall t32/t64 |")
    print("|---|---|---|---|---|---|---|---|")
    rows = run_model("Haldane", qg.models.Haldane(), (n2, n2), a.repeat)
    rows += run_model("Rashba lattice", qg.models.RashbaLattice(alpha=0.5, exchange=(0.2, 0.1, 0.3)), (n2, n2), a.repeat)
    rows += run_model("random TB (spinful)", random_tight_binding(8, spin=True), (n8, n8), a.repeat)
    print("\nNear-degenerate Haldane (Δ = 3√3 t2 + δ, gap 2δ at K on the mesh), μ = 0 and 0.5, T = 0.01:\n")
    print("| δ | gap / bandwidth | rel. error M^O | rel. error AHC |")
    print("|---|---|---|---|")
    deg = run_degenerate((48, 48) if a.quick else (96, 96), [1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
    if a.json:
        rec = dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(),
                   quick=a.quick, rows=rows, degenerate=deg)
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
