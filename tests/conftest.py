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


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config, log):
        """Whole test files per worker (their module fixtures are built once), except: the
        notebooks run in order on one worker (each reads what the one before wrote), and
        the report chains of ``test_parameters.py``, a minute each, go out one by one."""
        from xdist.scheduler import LoadScopeScheduling

        class Scheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                if nodeid.startswith("notebooks/"):
                    return "notebooks"
                if nodeid.startswith("tests/test_parameters.py::"):
                    return nodeid
                return nodeid.split("::", 1)[0]

        return Scheduling(config, log)
