"""Precision policy.

Band geometry needs double precision: energy denominators (E_n - E_m)^2 and cancellations between
bands lose 6-8 digits in float32. qgeo_jax therefore turns on ``jax_enable_x64`` when it is
imported, unless the environment variable ``QGEO_JAX_NO_X64=1`` is set. With x64 off, every entry
point raises a clear error instead of silently computing in complex64.
"""

from __future__ import annotations

import os

import jax

if os.environ.get("QGEO_JAX_NO_X64", "0") not in ("1", "true", "True"):
    jax.config.update("jax_enable_x64", True)


def require_x64() -> None:
    """Raise if JAX computes in single precision (checked at trace time, free at run time)."""
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "qgeo_jax computes in float64/complex128, but jax_enable_x64 is off "
            "(QGEO_JAX_NO_X64 is set or it was switched off after import). Fix: "
            "`jax.config.update('jax_enable_x64', True)` before building models."
        )
