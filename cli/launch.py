"""The `xlir` program: process settings that must come before numpy loads, then the app."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        # The server answers many small queries at once. numpy's BLAS (OpenBLAS) spreads each
        # one over every core, and on a busy 2-core machine one embedding then takes 10-70 ms
        # instead of 3-5 (bench/serve.py: search p50 40 -> 9 ms, 7 -> 93 searches/s under load;
        # indexing is as fast). It is read when numpy loads, so it is set here, before that.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .main import app

    app()
