"""k-points needed for 1e-3 relative accuracy of the Edelstein response: uniform vs refined mesh.

Model: spinful Rashba square lattice (``models.RashbaLattice(t=1, alpha=0.5)``), μ = −2 t, Edelstein
response α = kinetic_magnetization(part="spin", mechanism="extrinsic", τ = 1), temperatures
T = 0.01 and 0.002 (units of t). For each T:

* reference: a refined mesh far finer than any tested one (coarse 200², m = 32 at T = 0.002,
  16 at 0.01; window 14 T); at T = 0.01 it is checked against a uniform 2400² mesh;
* uniform Monkhorst–Pack meshes n² (n growing by √2): the smallest n from which every tested
  mesh is within 1e-3 of the reference;
* refined meshes (``refine_fermi_surface``: coarse n_c², cells near the Fermi surface subdivided
  m × m): the configuration with the fewest points within 1e-3.

Error = max|α − α_ref| / max|α_ref|. Wall times: steady-state evaluation (after the compile for that
mesh size) and, for refined meshes, the construction (two eigenvalue passes on the coarse mesh and
the numpy selection; also after its one-off compile). Uniform errors oscillate with n (the mesh
aliases against the Fermi surface), hence "every larger tested mesh" in the criterion.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_fermi_surface.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402
from qgeo_jax._kinetic import kinetic_magnetization  # noqa: E402
from qgeo_jax._refine import refine_fermi_surface  # noqa: E402

MU = -2.0
TARGET = 1e-3
CHUNK = 2048


def edelstein(model, mesh, temperature):
    return kinetic_magnetization(model, mesh, mu=MU, temperature=temperature, part="spin",
                                 mechanism="extrinsic", tau=1.0, chunk_size=CHUNK)


def timed(model, mesh, temperature):
    t0 = time.perf_counter()
    out = np.asarray(jax.block_until_ready(edelstein(model, mesh, temperature)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(edelstein(model, mesh, temperature))
    return out, first, time.perf_counter() - t0


def err(x, ref):
    return float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))


def refined(model, n, m, temperature, window=10.0):
    """The refined mesh and its construction wall time (second build: the first compiles the
    eigenvalue pass for this coarse shape, a one-off like the compile of the evaluation)."""
    build = lambda: refine_fermi_surface(model, qg.monkhorst_pack(model, (n, n)), mu=MU,
                                         temperature=temperature, subdivisions=m, window=window)
    build()
    t0 = time.perf_counter()
    mesh = build()
    return mesh, time.perf_counter() - t0


def run_temperature(model, temperature, uniform_ns, refined_cfgs, ref_cfg, check_uniform):
    rec = dict(temperature=temperature)
    ref_mesh, t_build = refined(model, *ref_cfg, temperature, window=14.0)
    reference, _, t_ref = timed(model, ref_mesh, temperature)
    rec["reference"] = dict(coarse=ref_cfg[0], m=ref_cfg[1], points=ref_mesh.size, value=reference.tolist(), wall=t_ref + t_build)
    print(f"\nT = {temperature}: reference α_xy = {reference[0, 1]:.10g} ({ref_mesh.size:.3g} points, refined {ref_cfg[0]}², m = {ref_cfg[1]})")
    if check_uniform:
        x, _, t = timed(model, qg.monkhorst_pack(model, (check_uniform, check_uniform)), temperature)
        rec["reference_check"] = dict(n=check_uniform, rel_diff=err(x, reference))
        print(f"  check: uniform {check_uniform}² differs from the reference by {err(x, reference):.1e}")
    print("\n| mesh | k-points | rel. error | eval wall (s) | build wall (s) |\n|---|---|---|---|---|")
    rows = []
    for n in uniform_ns:
        x, _, t = timed(model, qg.monkhorst_pack(model, (n, n)), temperature)
        rows.append(dict(kind="uniform", n=n, m=1, points=n * n, err=err(x, reference), wall=t, build=0.0))
        print(f"| uniform {n}² | {n * n:.3g} | {rows[-1]['err']:.1e} | {t:.2f} | – |", flush=True)
    for n, m in refined_cfgs:
        mesh, tb = refined(model, n, m, temperature)
        x, _, t = timed(model, mesh, temperature)
        rows.append(dict(kind="refined", n=n, m=m, points=mesh.size, err=err(x, reference), wall=t, build=tb))
        print(f"| refined {n}², m = {m} | {mesh.size:.3g} | {rows[-1]['err']:.1e} | {t:.2f} | {tb:.2f} |", flush=True)
    rec["rows"] = rows
    uni = [r for r in rows if r["kind"] == "uniform"]
    ok = [i for i in range(len(uni)) if all(r["err"] < TARGET for r in uni[i:])]
    best_uni = uni[ok[0]] if ok else None
    ref_ok = [r for r in rows if r["kind"] == "refined" and r["err"] < TARGET]
    best_ref = min(ref_ok, key=lambda r: r["points"]) if ref_ok else None
    rec["best_uniform"], rec["best_refined"] = best_uni, best_ref
    if best_uni and best_ref:
        rec["points_ratio"] = best_uni["points"] / best_ref["points"]
        rec["time_ratio"] = best_uni["wall"] / (best_ref["wall"] + best_ref["build"])
        print(f"\n  {TARGET:g} accuracy: uniform {best_uni['points']:.3g} points ({best_uni['wall']:.2f} s), "
              f"refined {best_ref['points']:.3g} points ({best_ref['wall']:.2f} s + build {best_ref['build']:.2f} s): "
              f"{rec['points_ratio']:.1f}× fewer points, {rec['time_ratio']:.1f}× less wall time")
    else:
        print(f"\n  {TARGET:g} not reached by {'uniform' if not best_uni else 'refined'} meshes in the tested range")
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="T = 0.01 only, fewer meshes (~1-2 min)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    a = p.parse_args(argv)
    model = qg.models.RashbaLattice(t=1.0, alpha=0.5)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}; Rashba lattice t = 1, α = 0.5, μ = {MU}, target {TARGET:g}")
    recs = []
    recs.append(run_temperature(
        model, 0.01,
        uniform_ns=[200, 283, 400, 566, 800] if not a.quick else [200, 283, 400, 566],
        refined_cfgs=[(50, 4), (50, 6), (50, 8), (100, 4)] if not a.quick else [(50, 4), (50, 8)],
        ref_cfg=(200, 16) if not a.quick else (100, 16),
        check_uniform=None if a.quick else 2400,
    ))
    if not a.quick:
        recs.append(run_temperature(
            model, 0.002,
            uniform_ns=[1000, 1414, 2000, 2828, 4000],
            refined_cfgs=[(100, 8), (100, 12), (100, 16), (200, 8), (200, 12), (200, 16)],
            ref_cfg=(200, 32),
            check_uniform=None,  # the uniform 4000² row is the check (its error vs the reference)
        ))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(),
                           quick=a.quick, results=recs), f, indent=1)


if __name__ == "__main__":
    main()
