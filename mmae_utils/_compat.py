"""A narrow compatibility step for episcanpy 0.4.0 on numpy 2 / anndata >= 0.11.

episcanpy 0.4.0 (its last release) fails at import on the modern stack:

- ``episcanpy/count_matrix/_bld_met_mtx.py`` does ``from numpy import NaN`` (removed in
  numpy 2.0: the spelling is ``np.nan``);
- ``episcanpy/__init__.py`` does ``from anndata import read`` (removed in anndata 0.11: the
  function is ``anndata.read_h5ad``).

:func:`import_episcanpy` provides the two missing names only while episcanpy is being
imported, then removes them again, so that the rest of the process sees numpy and anndata
unchanged. Both names are only bound at import time by episcanpy's modules (``read`` is
used solely by ``episcanpy.read_h5ad``-style helpers that this project does not call).
episcanpy's other modern-stack problem (``scipy.stats.stats``, deprecated) only warns; the
``scipy<2`` pin in ``pyproject.toml`` keeps it importable.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def _temporary_attr(module: ModuleType, name: str, value) -> Iterator[None]:
    missing = not hasattr(module, name)
    if missing:
        setattr(module, name, value)
    try:
        yield
    finally:
        if missing:
            delattr(module, name)


def import_episcanpy() -> ModuleType:
    """Import and return ``episcanpy`` on numpy 2 / anndata >= 0.11.

    Returns
    -------
    The ``episcanpy`` module.
    """
    if "episcanpy" in sys.modules:
        return sys.modules["episcanpy"]
    import anndata
    import numpy

    with (
        _temporary_attr(numpy, "NaN", numpy.nan),
        _temporary_attr(anndata, "read", anndata.read_h5ad),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import episcanpy

    return episcanpy
