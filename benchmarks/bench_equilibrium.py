"""Throughput of the equilibrium pipeline against the bare batched-eigh floor, in one run.

For each model: (a) the floor — build H(k) and run eigh on every k of the mesh (same chunking);
(b) the pipeline — orbital magnetization (Ω and m for all bands, f0 and the ln(1 − f0) term) for
101 chemical potentials in one pass; (c) AHC alone. Prints k-points/s and the ratio pipeline / floor
measured in the same process, and writes a JSON record.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_equilibrium.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# --host-devices N must act before JAX is imported: it splits the CPU into N XLA devices, and the
# k reduction is then dealt out over them (qgeo_jax._bz.integrate).
for _i, _a in enumerate(sys.argv):
    if _a == "--host-devices" and _i + 1 < len(sys.argv):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={int(sys.argv[_i + 1])}"
        )

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import qgeo_jax as qg  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _models import random_tight_binding  # noqa: E402


def best_time(fn, repeat=5):
    jax.block_until_ready(fn())  # compile + warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


@eqx.filter_jit
def eigh_floor(model, mesh, chunk_size):
    def per_k(k):
        w, v = jnp.linalg.eigh(model.hamiltonian(k))
        return jnp.sum(w) + jnp.real(v[0, 0])

    return qg.integrate(per_k, mesh, chunk_size=chunk_size)


def run_case(name, model, shape, mus, chunk_size, repeat):
    mesh = qg.monkhorst_pack(model, shape)
    nk = mesh.size
    t0 = time.perf_counter()
    jax.block_until_ready(qg.orbital_magnetization(model, mesh, mu=mus, temperature=0.01, chunk_size=chunk_size))
    compile_s = time.perf_counter() - t0
    floor = best_time(lambda: eigh_floor(model, mesh, chunk_size), repeat)
    pipe = best_time(
        lambda: qg.orbital_magnetization(model, mesh, mu=mus, temperature=0.01, chunk_size=chunk_size), repeat
    )
    ahc = best_time(
        lambda: qg.anomalous_hall_conductivity(model, mesh, mu=mus, temperature=0.01, chunk_size=chunk_size),
        repeat,
    )
    rec = {
        "model": name, "norb": model.norb, "nk": nk, "n_mu": int(mus.size), "chunk": chunk_size,
        "compile_plus_first_run_s": compile_s,
        "eigh_floor_kps": nk / floor, "orbital_magnetization_kps": nk / pipe, "ahc_kps": nk / ahc,
        "ratio_orbital_magnetization_over_eigh": pipe / floor, "ratio_ahc_over_eigh": ahc / floor,
    }
    print(
        f"{name:>14s} N={model.norb:<3d} nk={nk:<7d} floor {nk / floor:10.3e} k/s | M^O(101 μ) {nk / pipe:10.3e} k/s"
        f" ratio {pipe / floor:5.2f} | AHC ratio {ahc / floor:5.2f} | compile+1st {compile_s:5.2f} s"
    )
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small meshes (smoke run)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--host-devices", type=int, default=1, help="split the CPU into N XLA devices (set before JAX loads)")
    args = p.parse_args(argv)
    mus = jnp.linspace(-1.0, 1.0, 101)
    n2 = 64 if args.quick else 256
    cases = [
        ("Haldane", qg.models.Haldane(t2=0.15, phi=np.pi / 2, delta=0.2), (n2, n2)),
        ("random-TB-8", random_tight_binding(8, dim=2, seed=1), (n2 // 2, n2 // 2)),
        ("random-TB-32", random_tight_binding(32, dim=2, seed=2), (n2 // 8, n2 // 8)),
    ]
    records = [run_case(name, m, shape, mus, args.chunk, args.repeat) for name, m, shape in cases]
    print(f"devices: {jax.devices()}")
    meta = {"jax": jax.__version__, "python": platform.python_version(), "devices": str(jax.devices()),
            "cpu_count": os.cpu_count()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "records": records}, fh, indent=2)
    return records


if __name__ == "__main__":
    main()
