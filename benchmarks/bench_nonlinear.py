"""Second-order responses against the bare eigh floor, in one run.

For each model: the floor (build H(k), batched eigh, same mesh and chunks) and every second-order
response of the package — nonlinear Hall (Berry-curvature dipole, quantum-metric dipole, Drude) and
the second-order kinetic magnetization (spin and orbital; τ², τ¹, τ⁰) — each as its own public call
at one chemical potential inside the largest gap (the τ⁰ orbital term is an insulator result).
Prints k-points per CPU-second and the CPU-time ratio to the floor (minimum over repeats, steady
state, compile excluded); ``--json`` writes the records.

Every second-order response differentiates band quantities in k by forward-mode autodiff
(``jax.jacfwd``): one derivative for the Fermi-surface forms, two for the τ⁰ spin term and the
Fermi-sea Drude form, and three nested levels of eigenvector derivatives for the τ⁰ orbital term,
whose cost therefore grows fastest with the number of bands.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nonlinear.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _models import random_tight_binding  # noqa: E402
from bench_floor import best_times, eigh_floor  # noqa: E402

TEMPERATURE = 0.05
TAU = 1.0


def mid_gap(model, mesh):
    """μ in the middle of the largest gap between consecutive bands over the mesh, and its size."""
    k, _ = mesh.all_points()
    e = np.asarray(jax.vmap(lambda q: jnp.linalg.eigvalsh(model.hamiltonian(q)))(k))
    lo, hi = e.max(axis=0)[:-1], e.min(axis=0)[1:]
    n = int(np.argmax(hi - lo))
    return 0.5 * (lo[n] + hi[n]), float(hi[n] - lo[n])


def responses(model, mesh, mu, spin):
    kw = dict(mu=mu, temperature=TEMPERATURE)
    calls = {
        "BCD (surface)": lambda: qg.berry_curvature_dipole(model, mesh, **kw),
        "QMD (sea)": lambda: qg.quantum_metric_dipole(model, mesh, route="fermi_sea", **kw),
        "Drude (surface)": lambda: qg.nonlinear_hall_conductivity(
            model, mesh, mechanism="drude", tau=TAU, **kw
        ),
    }
    parts = ("spin", "orbital") if spin else ("orbital",)
    for part in parts:
        for mech in ("extrinsic", "tau_linear", "intrinsic"):
            extra = {} if mech == "intrinsic" else dict(tau=TAU)
            local = dict(kw, temperature=0.0) if (part, mech) == ("orbital", "intrinsic") else kw
            calls[f"chi {part} {mech}"] = lambda part=part, mech=mech, extra=extra, local=local: (
                qg.nonlinear_kinetic_magnetization(
                    model, mesh, part=part, mechanism=mech, **extra, **local
                )
            )
    return calls


def run_case(name, model, shape, chunk, repeat, spin):
    mesh = qg.monkhorst_pack(model, shape)
    mu, gap = mid_gap(model, mesh)
    floor_cpu, _ = best_times(lambda: eigh_floor(model, mesh, chunk), repeat)
    rows = []
    print(f"\n{name}: N = {model.norb}, {mesh.size} k-points, μ = {mu:+.3f} (gap {gap:.3f})")
    print(f"  {'eigh floor':24s} {mesh.size / floor_cpu:10.3g} k/CPU-s   ratio 1")
    for label, fn in responses(model, mesh, mu, spin).items():
        cpu, _ = best_times(fn, repeat)
        ratio = cpu / floor_cpu
        rows.append(dict(model=name, norb=model.norb, nk=mesh.size, response=label, ratio=ratio))
        print(f"  {label:24s} {mesh.size / cpu:10.3g} k/CPU-s   ratio {ratio:7.1f}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller meshes, fewer repeats")
    ap.add_argument("--json", help="write the records to this file")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else 5
    side = 24 if args.quick else 96
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or 'cpu'}")
    rows = []
    rows += run_case(
        "Haldane (trivial)",
        qg.models.Haldane(t2=0.25, phi=1.0, delta=2.0),
        (side, side),
        256,
        repeat,
        spin=False,
    )
    for norb in (4, 8):
        model = random_tight_binding(norb, seed=1, spin=True, on_site_spin=True, split=4.0)
        rows += run_case(
            f"random spinful TB {norb}", model, (side // 2, side // 2), 128, repeat, True
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
