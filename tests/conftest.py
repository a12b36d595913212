"""Shared fixtures: small synthetic multiome datasets (built once per session)."""

from __future__ import annotations

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
