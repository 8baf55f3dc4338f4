"""One core vs two: the response set on (a) one pinned core, (b) two CPU devices, (c) two processes.

The work, per model (N = 2, 8, 32 orbitals, spinful 2D lattice models): orbital magnetization M^O,
anomalous Hall conductivity σ_xy and the Edelstein tensor (spin, extrinsic kinetic magnetization)
for 101 chemical potentials on one Monkhorst–Pack mesh. Three configurations, run one after the
other from this process (same machine state, same process tree):

(a) ``taskset -c 0``: one process pinned to one core (the reference);
(b) one process with two JAX CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
    what ``qgeo_jax.parallel.use_cpu_cores()`` and the ``qgeo`` command set up): the reduction is
    dealt out over both, eigh runs one matrix per LAPACK call (no deadlock);
(c) two processes joined by ``jax.distributed`` (``python -m qgeo_jax.parallel -n 2``), each
    reducing half of the k-mesh on its own CPU device (``qgeo_jax.parallel``).

For each: compile + first call, and the steady state (minimum wall time over ``--repeat`` calls),
plus the wall time of the whole subprocess (Python + JAX start-up included). Prints the speed-ups
(a)/(b) and (a)/(c) of the steady state, the start-up overhead of (c), and the mesh size from
which (c) beats (a) end to end (start-up included).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cores.py [--quick] [--json out.json]

Numbers are only meaningful on an otherwise idle machine: other processes steal the second core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MARK = "BENCH_CORES_JSON "


def _cases(quick: bool):
    """(name, norb, mesh shape): sizes are multiples of 2 × 256, so two workers get equal runs."""
    if quick:
        return [
            ("RashbaLattice", 2, (96, 96)),
            ("random-TB-8", 8, (32, 32)),
            ("random-TB-32", 32, (16, 32)),
        ]
    return [
        ("RashbaLattice", 2, (512, 512)),
        ("random-TB-8", 8, (160, 160)),
        ("random-TB-32", 32, (64, 64)),
    ]


def inner(quick: bool, repeat: int, chunk: int) -> None:
    """Run the cases in this process (or, under jax.distributed, in every process together)."""
    t_start = time.perf_counter()
    if "QGEO_COORDINATOR" in os.environ:
        from qgeo_jax.parallel import initialize

        initialize()
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import qgeo_jax as qg

    sys.path.insert(0, HERE)
    from _models import random_tight_binding

    t_ready = time.perf_counter()
    mus = jnp.linspace(-1.0, 1.0, 101)
    records = []
    for name, norb, shape in _cases(quick):
        if norb == 2:
            model = qg.models.RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3))
        else:
            model = random_tight_binding(norb, dim=2, seed=norb, spin=True)
        mesh = qg.monkhorst_pack(model, shape)

        def work(model=model, mesh=mesh):
            kw = dict(mu=mus, temperature=0.02, chunk_size=chunk)
            return (
                qg.orbital_magnetization(model, mesh, **kw),
                qg.anomalous_hall_conductivity(model, mesh, **kw),
                qg.kinetic_magnetization(
                    model, mesh, part="spin", mechanism="extrinsic", tau=1.0, **kw
                ),
            )

        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(work())
        first = time.perf_counter() - t0
        walls, cpus = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(work())
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        records.append(
            {
                "model": name,
                "norb": norb,
                "nk": mesh.size,
                "n_mu": 101,
                "chunk": chunk,
                "first_call_s": first,
                "steady_wall_s": min(walls),
                "steady_cpu_s_this_process": min(cpus),
                "checksum": float(sum(float(np.sum(np.abs(np.asarray(o)))) for o in out)),
            }
        )
    if jax.process_index() == 0:
        meta = {
            "startup_s": t_ready - t_start,
            "processes": jax.process_count(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
        }
        print(MARK + json.dumps({"meta": meta, "records": records}), flush=True)


def _run(label: str, cmd: list[str], timeout: float) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(MARK))
    res = json.loads(line[len(MARK) :])
    res["meta"]["process_tree_wall_s"] = total
    res["meta"]["command"] = " ".join(cmd)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small meshes (smoke run, ~1 min)")
    p.add_argument("--json", default=None, help="write the records to this JSON file")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--timeout", type=float, default=900, help="per configuration (s)")
    p.add_argument(
        "--pinned", action="store_true", help="also run (d): (c) with worker i bound to core i"
    )
    p.add_argument("--_inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common = [
        os.path.abspath(__file__),
        "--_inner",
        "--repeat",
        str(args.repeat),
        "--chunk",
        str(args.chunk),
    ]
    common += ["--quick"] if args.quick else []
    if args._inner:
        inner(args.quick, args.repeat, args.chunk)
        return None

    if shutil.which("taskset") is None:
        sys.exit("bench_cores needs `taskset` (util-linux) to pin configuration (a) to one core.")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit(f"bench_cores needs at least 2 cores, this process may use {cores}.")
    configs = {
        "a_one_core": ["taskset", "-c", str(cores[0]), sys.executable, *common],
        "b_two_devices": [
            "env",
            "XLA_FLAGS=--xla_force_host_platform_device_count=2",
            sys.executable,
            *common,
        ],
        "c_two_processes": [sys.executable, "-m", "qgeo_jax.parallel", "-n", "2", *common],
    }
    if args.pinned:
        configs["d_two_pinned"] = [
            sys.executable,
            "-m",
            "qgeo_jax.parallel",
            "-n",
            "2",
            "--pin",
            *common,
        ]
    runs = {}
    for label, cmd in configs.items():
        print(f"running {label}: {' '.join(cmd)}", flush=True)
        runs[label] = _run(label, cmd, args.timeout)

    a, b, c = (runs[k] for k in ("a_one_core", "b_two_devices", "c_two_processes"))
    print()
    print(
        f"{'model':>14s} {'N':>3s} {'k-points':>9s} | {'(a) 1 core s':>12s} {'(b) 2 devs':>11s} "
        f"{'(c) 2 procs':>11s} | {'(a)/(b)':>7s} {'(a)/(c)':>7s} | {'crossover nk':>12s}"
    )
    su_a = a["meta"]["process_tree_wall_s"] - sum(
        r["first_call_s"] + args.repeat * r["steady_wall_s"] for r in a["records"]
    )
    su_c = c["meta"]["process_tree_wall_s"] - sum(
        r["first_call_s"] + args.repeat * r["steady_wall_s"] for r in c["records"]
    )
    table = []
    for ra, rb, rc in zip(a["records"], b["records"], c["records"], strict=True):
        rel = abs(rc["checksum"] - ra["checksum"]) / abs(ra["checksum"])
        # End to end: start-up + compile + nk / rate. (c) wins from nk* on.
        extra = (su_c + rc["first_call_s"]) - (su_a + ra["first_call_s"])
        gain_per_k = ra["steady_wall_s"] / ra["nk"] - rc["steady_wall_s"] / rc["nk"]
        crossover = extra / gain_per_k if gain_per_k > 0 else float("inf")
        row = {
            "model": ra["model"],
            "norb": ra["norb"],
            "nk": ra["nk"],
            "a_s": ra["steady_wall_s"],
            "b_s": rb["steady_wall_s"],
            "c_s": rc["steady_wall_s"],
            "speedup_b": ra["steady_wall_s"] / rb["steady_wall_s"],
            "speedup_c": ra["steady_wall_s"] / rc["steady_wall_s"],
            "first_call_a_s": ra["first_call_s"],
            "first_call_c_s": rc["first_call_s"],
            "crossover_nk": crossover,
            # CPU seconds of the whole job on one core over those of worker 0 for its half: the
            # speed-up an idle machine would give, readable even on a loaded one.
            "cpu_ratio_a_over_c0": ra["steady_cpu_s_this_process"]
            / rc["steady_cpu_s_this_process"],
            "checksum_rel_diff_c_vs_a": rel,
        }
        if "d_two_pinned" in runs:
            rd = runs["d_two_pinned"]["records"][len(table)]
            row["d_s"], row["speedup_d"] = (
                rd["steady_wall_s"],
                ra["steady_wall_s"] / rd["steady_wall_s"],
            )
        table.append(row)
        print(
            f"{row['model']:>14s} {row['norb']:3d} {row['nk']:9d} | {row['a_s']:12.3f} "
            f"{row['b_s']:11.3f} {row['c_s']:11.3f} | {row['speedup_b']:7.2f} "
            f"{row['speedup_c']:7.2f} | {crossover:12.3g} | cpu (a)/(c0) "
            f"{row['cpu_ratio_a_over_c0']:.2f}"
            + (
                f" | (d) pinned {row['d_s']:.3f} s, (a)/(d) {row['speedup_d']:.2f}"
                if "d_s" in row
                else ""
            )
        )
    print(
        "\nstart-up (Python + JAX import, and for (c) jax.distributed + 2nd process): "
        f"(a) {su_a:.2f} s, (c) {su_c:.2f} s; whole process trees: "
        f"(a) {a['meta']['process_tree_wall_s']:.1f} s, "
        f"(b) {b['meta']['process_tree_wall_s']:.1f} s, "
        f"(c) {c['meta']['process_tree_wall_s']:.1f} s"
    )
    print(
        "speed-ups are steady-state wall-time ratios; 'crossover nk' = mesh size from which "
        "(c) beats (a) for one call, start-up and compile included."
    )
    worst = max(r["checksum_rel_diff_c_vs_a"] for r in table)
    print(f"results (c) vs (a), max relative checksum difference: {worst:.1e}")
    if args.json:
        meta = {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "cores": cores,
            "startup_a_s": su_a,
            "startup_c_s": su_c,
            "repeat": args.repeat,
            "quick": args.quick,
        }
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "runs": runs, "table": table}, fh, indent=2)
    return table


if __name__ == "__main__":
    main()
