"""Streaming a simulated dataset to an ``.h5ad`` file chunk by chunk (the full-size path)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .._utils import atomic_path
from ..data import load_multiome
from ._counts import obs_with_qc, simulate_chunk
from ._design import Design


def stream_to_h5ad(
    d: Design, path: Path, chunks, seed: int, obsm: dict, uns: dict, bar
) -> ad.AnnData:
    """Simulate ``chunks`` one at a time into the ``.h5ad`` file ``path`` (bounded memory).

    ``X``, ``layers["counts"]`` and ``obsm["ATAC_gene_activity"]`` grow by appending each
    chunk; ``obs`` (with the QC columns of all chunks), ``var``, ``obsm`` and ``uns`` follow.
    The file is written under a temporary name and renamed on success.

    Returns
    -------
    The file read back as ``load_multiome(path, backed=True)`` does: metadata in memory,
    counts on disk.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    if path.suffix != ".h5ad":
        raise ValueError(f"path must end in .h5ad, got {path}.")
    qcs = []
    kw: dict = {}  # anndata makes the arrays resizable (maxshape=None) by itself
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
            f.create_group("layers").attrs.update(
                {"encoding-type": "dict", "encoding-version": "0.1.0"}
            )
            targets = {}
            for start, stop in chunks:
                counts, x, ga, qc = simulate_chunk(d, start, stop, seed)
                qcs.append(qc)
                for key, (parent, name, mat) in {
                    "X": ("/", "X", x),
                    "counts": ("layers", "counts", counts),
                    "ga": ("obsm_tmp", "ATAC_gene_activity", ga),
                }.items():
                    if key not in targets:
                        # into the parent group by a plain name: anndata 0.13 refuses keys
                        # with a "/" (such as "layers/counts") in .h5ad files
                        write_elem(f.require_group(parent), name, mat, dataset_kwargs=kw)
                        targets[key] = sparse_dataset(f[parent][name])
                    else:
                        targets[key].append(mat)
                bar.update(stop - start)
            bar.close()
            obs = obs_with_qc(d, qcs)
            write_elem(f, "obs", obs)
            write_elem(f, "var", d.var)
            write_elem(f, "obsm", obsm)
            f.move("obsm_tmp/ATAC_gene_activity", "obsm/ATAC_gene_activity")
            del f["obsm_tmp"]
            for key in ("obsp", "varm", "varp"):
                write_elem(f, key, {})
            write_elem(f, "uns", uns)
    # anndata's backed="r" would load layers["counts"] into memory; this keeps it on disk
    return load_multiome(path, backed=True, validate=False)
