"""Shared fixtures (small synthetic multiome datasets, built once per session), and how
``pytest -n 2`` (pytest-xdist, as ``make test`` runs) shares the tests between workers."""

from __future__ import annotations

import importlib.util
import os

import matplotlib
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
matplotlib.use("Agg")


@pytest.fixture(scope="session")
def small_mdata():
    """800 cells x (1,000 genes + 2,000 peaks) in the GSE194122 schema (read-only: copy it)."""
    from mmae_utils.datasets import synthetic_bmmc

    return synthetic_bmmc(800, 1000, 2000, seed=7)


@pytest.fixture
def mdata(small_mdata):
    """A fresh copy of :func:`small_mdata` that a test may modify."""
    return small_mdata.copy()


#: Thread pools sized by CPU count at start-up: each worker's share is set for them.
#: Not numba's (NUMBA_NUM_THREADS): scanpy and UMAP ask it for a set count and would fail.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


def pytest_configure(config):
    """Under ``pytest -n N`` (N > 1), give each worker, and the kernels it starts, its share
    of the CPUs for BLAS, OpenMP and TensorFlow. Otherwise each process starts one spinning
    thread per CPU: on 2 CPUs, two workers each computing the seven baselines took 121 s
    against 38 s for one alone, and 60 s with one thread each (benchmarks/README.md)."""
    workers = getattr(config.option, "numprocesses", None)
    if os.environ.get("PYTEST_XDIST_WORKER") or not isinstance(workers, int) or workers < 2:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for var in THREAD_VARS:
        os.environ.setdefault(var, share)  # the workers are started after this, with it


#: Work taking minutes (the notebooks together, each report chain, the report fixture,
#: the worker processes), handed out first so that none is left running alone at the end.
SLOW_FIRST = ("notebooks/", "tests/test_parameters.py", "tests/test_report.py", "tests/test_distribute.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """In pytest-xdist workers: the slow work of :data:`SLOW_FIRST` first (a stable sort,
    so notebooks and the tests of a file keep their order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        return next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), 99)

    items.sort(key=rank)


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config, log):
        """Whole test files per worker (their module fixtures are built once), except: the
        notebooks run in order on one worker (each reads what the one before wrote), and
        the report chains of ``test_parameters.py``, a minute each, go out one by one.
        Work goes out in collection order (see :func:`pytest_collection_modifyitems`), not
        xdist's default of the files with most tests first."""
        from xdist.scheduler import LoadScopeScheduling

        config.option.loadscopereorder = False

        class Scheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                if nodeid.startswith("notebooks/"):
                    return "notebooks"
                if nodeid.startswith("tests/test_parameters.py::"):
                    return nodeid
                return nodeid.split("::", 1)[0]

        return Scheduling(config, log)
