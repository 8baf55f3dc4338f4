"""Compile times of the full response set, no-recompilation check, and peak memory vs mesh size.

1. Compile: for N = 2, 8, 32 bands (spinful random tight-binding, ``_models.random_tight_binding``)
   the first call (trace + lower + XLA compile + run) and the steady-state call of each of M^O, M^S,
   AHC, Kubo Chern and the four kinetic responses, on a small mesh; "compile" = first − steady.
   Then the whole set is called again with new values of μ, T, τ, g and of every model parameter,
   and the XLA compilations and jaxpr traces during those calls are counted (jax.monitoring events;
   expected: 0).
2. Memory: Haldane M^O at 101 μ on meshes of 10^5, 10^6, 10^7 k-points, each in a fresh
   subprocess, peak resident set size from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``; a
   "baseline" row runs a 10^3-point mesh (import + compile). Flat RSS = memory bounded by the chunk.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_compile_memory.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402
from qgeo_jax._kinetic import kinetic_magnetization  # noqa: E402
from qgeo_jax._responses import (  # noqa: E402
    anomalous_hall_conductivity,
    chern_number_kubo,
    orbital_magnetization,
    spin_magnetization,
)

sys.path.insert(0, os.path.dirname(__file__))
from _models import random_tight_binding  # noqa: E402

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"


def response_set(mu, temperature, tau, g):
    sets = {
        "M^O": lambda m, me: orbital_magnetization(m, me, mu=mu, temperature=temperature),
        "M^S": lambda m, me: spin_magnetization(m, me, mu=mu, temperature=temperature, g_factor=g),
        "AHC": lambda m, me: anomalous_hall_conductivity(m, me, mu=mu, temperature=temperature),
        "Chern": lambda m, me: chern_number_kubo(m, me, [0]),
    }
    for part in ("spin", "orbital"):
        for mech in ("extrinsic", "intrinsic"):
            extra = dict(tau=tau) if mech == "extrinsic" else {}
            if part == "spin":
                extra["g_factor"] = g
            sets[f"{part}/{mech}"] = (
                lambda m, me, part=part, mech=mech, extra=extra:
                kinetic_magnetization(m, me, mu=mu, temperature=temperature, part=part, mechanism=mech, **extra)
            )
    return sets


class CompileCounter:
    """Counts XLA compilations and jaxpr traces (eval_shape shape inference excluded)."""

    def __init__(self):
        self.counts = {_COMPILE: 0, _TRACE: 0}

    def __call__(self, event, duration, **kwargs):
        if event in self.counts and not any(f.name == "eval_shape" for f in traceback.extract_stack()):
            self.counts[event] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def compile_case(norb, shape, chunk):
    model = random_tight_binding(norb, spin=True, seed=1)
    mesh = qg.monkhorst_pack(model, shape)
    mu = np.linspace(-1, 1, 11)
    rows, total_first, total_steady, cpu_compile = [], 0.0, 0.0, 0.0
    for name, fn in response_set(mu, 0.05, 1.0, 2.0).items():
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(model, mesh))
        first, cfirst = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(model, mesh))
        steady, csteady = time.perf_counter() - t0, time.process_time() - c0
        rows.append(dict(quantity=name, first=first, steady=steady, compile=first - steady, cpu_compile=cfirst - csteady))
        total_first += first
        total_steady += steady
        cpu_compile += cfirst - csteady
    # New values of μ, T, τ, g and of all model parameters (same shapes): must not recompile.
    other = random_tight_binding(norb, spin=True, seed=2)
    with CompileCounter() as counter:
        for fn in response_set(mu + 0.2, 0.03, 2.5, 2.1).values():
            jax.block_until_ready(fn(other, mesh))
    return dict(norb=norb, kpoints=mesh.size, first_total=total_first, steady_total=total_steady,
                compile_total=total_first - total_steady, cpu_compile_total=cpu_compile, new_compiles=counter.counts[_COMPILE],
                new_traces=counter.counts[_TRACE], per_response=rows)


def rss_child(n_side, chunk):
    """Run in a fresh process: Haldane M^O at 101 μ on an n_side² mesh; print peak RSS (MiB) JSON."""
    model = qg.models.Haldane()
    mesh = qg.monkhorst_pack(model, (n_side, n_side))
    t0 = time.perf_counter()
    out = jax.block_until_ready(orbital_magnetization(model, mesh, mu=np.linspace(-1.5, 1.5, 101), temperature=0.01, chunk_size=chunk))
    wall = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(dict(kpoints=n_side * n_side, wall=wall, peak_rss_mib=rss_mib, check=float(np.asarray(out)[50, 2]))))


def rss_case(n_side, chunk):
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", str(n_side), "--chunk", str(chunk)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller meshes (smoke run, ~1 min)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    a = p.parse_args(argv)
    if a.rss_child is not None:
        rss_child(a.rss_child, a.chunk)
        return
    rec = dict(jax=jax.__version__, backend=jax.default_backend(), machine=platform.machine(), quick=a.quick)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}\n")
    if not a.skip_compile:
        print("Compile (trace + lower + compile; first call − steady call), full response set of 8, 11 μ:\n")
        print("| N | k-points | compile, all 8: wall (s) | CPU (s) | first calls (s) | steady calls (s) | slowest (compile s) | recompiles / traces on new values |")
        print("|---|---|---|---|---|---|---|---|")
        rec["compile"] = []
        for norb in (2, 8, 32):
            r = compile_case(norb, (8, 8), a.chunk)
            rec["compile"].append(r)
            slow = max(r["per_response"], key=lambda x: x["compile"])
            print(f"| {norb} | {r['kpoints']} | {r['compile_total']:.1f} | {r['cpu_compile_total']:.1f} | {r['first_total']:.1f} | {r['steady_total']:.2f} | "
                  f"{slow['quantity']} ({slow['compile']:.1f}) | {r['new_compiles']} / {r['new_traces']} |", flush=True)
    if not a.skip_memory:
        sides = (32, 100, 316, 1000) if a.quick else (32, 316, 1000, 3163)
        print(f"\nPeak RSS, Haldane M^O at 101 μ, chunk {a.chunk}, fresh process per mesh:\n")
        print("| k-points | wall (s) | k-points/s | peak RSS (MiB) |")
        print("|---|---|---|---|")
        rec["memory"] = []
        for n in sides:
            r = rss_case(n, a.chunk)
            rec["memory"].append(r)
            print(f"| {r['kpoints']:.2e} | {r['wall']:.1f} | {r['kpoints'] / r['wall']:.2e} | {r['peak_rss_mib']:.0f} |", flush=True)
        rss = [r["peak_rss_mib"] for r in rec["memory"]]
        print(f"\nRSS growth from {rec['memory'][0]['kpoints']:.0e} to {rec['memory'][-1]['kpoints']:.0e} points: "
              f"{rss[-1] - rss[0]:+.0f} MiB ({rss[-1] / rss[0]:.2f}×)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=1)


if __name__ == "__main__":
    main()
