"""One BLAS thread for the statistics: the same numbers for a fraction of the CPU time.

The statistics fit many small models (scikit-learn's L-BFGS on a few thousand episodes and
about ten flags, the Newton fits of stats/validation.py on a few hundred flag patterns). For
matrices this small OpenBLAS computes on one thread anyway, but its worker threads wake up
and spin-wait after every call: on the 2-core development machine the sensitivity stage's
60 cross-validation fits used 0.48 CPU s per subgroup with the default 2 threads and 0.03 s
with one, with bit-identical predictions (docs/benchmark.md, "Statistics to report"). The
limit applies to the BLAS and OpenMP pools of this process only while the statistics run;
DuckDB's own threads are not affected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# The number of BLAS/OpenMP threads the statistics may use (1: small problems only).
STATISTICS_BLAS_THREADS = 1


def one_blas_thread(function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` with the BLAS and OpenMP pools limited to STATISTICS_BLAS_THREADS."""

    @functools.wraps(function)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        # threadpoolctl comes with scikit-learn; imported here so that importing the
        # statistics costs nothing more
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=STATISTICS_BLAS_THREADS):
            return function(*args, **kwargs)

    return limited
