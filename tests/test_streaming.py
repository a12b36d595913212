"""Training and embedding on backed files, read a chunk of cells at a time."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmae_utils import streaming
from mmae_utils.config import ModelConfig
from mmae_utils.data import load_multiome, split_modalities
from mmae_utils.pipeline import make_dataset
from mmae_utils.pp import binarized, log_normalized
from mmae_utils.sim import synthetic_bmmc
from mmae_utils.training import build_for, embed, reconstruct, train

N_CELLS = 700


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "cells.h5ad"
    synthetic_bmmc(N_CELLS, 300, 600, seed=11, path=path, chunk_size=256)
    memory = split_modalities(load_multiome(path))
    return path, memory


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 cells, shuffled 3 at a time: many chunks and windows on 700 cells."""
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 64)
    monkeypatch.setattr(streaming, "WINDOW_CHUNKS", 3)


def backed(path):
    return split_modalities(load_multiome(path, backed=True), copy=False)


def test_disk_rows_match_the_in_memory_inputs(files, small_chunks):
    path, (gex_mem, atac_mem) = files
    gex, atac = backed(path)
    log, binary = streaming.disk_rows(gex, "log"), streaming.disk_rows(atac, "binary")
    counts = streaming.disk_rows(gex, "counts")
    assert log.reader is binary.reader  # one read of the file serves both modalities
    rows = np.random.default_rng(0).permutation(N_CELLS)[:150]  # in any order, many chunks
    np.testing.assert_allclose(log[rows], log_normalized(gex_mem)[rows].toarray(), rtol=1e-6)
    np.testing.assert_array_equal(binary[rows], binarized(atac_mem)[rows].toarray())
    np.testing.assert_array_equal(binary[10:200], binarized(atac_mem)[10:200].toarray())
    expected = gex_mem.layers["counts"][rows]
    assert (counts.csr(rows) != sp.csr_matrix(expected, dtype=np.float32)).nnz == 0
    sums = np.asarray(gex_mem.layers["counts"].sum(axis=1)).ravel()
    np.testing.assert_allclose(counts.sum(axis=1).ravel(), sums)
    with pytest.raises(IndexError, match="out of range"):
        log[[N_CELLS]]


def test_window_order_visits_every_row_once_from_few_chunks_at_a_time():
    rows = np.random.default_rng(1).choice(5000, size=4000, replace=False)
    order = streaming.window_order(rows, chunk_rows=100, window_chunks=4)
    rng = np.random.default_rng(2)
    first, second = order(rng), order(rng)
    for visit in (first, second):
        np.testing.assert_array_equal(np.sort(visit), np.sort(rows))
        # the visit splits into runs that each hold all the rows of at most 4 chunks
        per_chunk = np.bincount(rows // 100)
        window, remaining = set(), 0
        for c in visit // 100:
            if remaining == 0:
                assert len(window) <= 4
                window = set()
            if c not in window:
                window.add(c)
                remaining += per_chunk[c]
            remaining -= 1
        assert remaining == 0 and len(window) <= 4
    assert not np.array_equal(first, second)  # a new order every pass
    np.testing.assert_array_equal(order(np.random.default_rng(2)), first)  # seeded


def test_streamed_batches_hold_each_training_cell_once(files, small_chunks):
    path, (gex_mem, _) = files
    gex, atac = backed(path)
    log, binary = streaming.disk_rows(gex, "log"), streaming.disk_rows(atac, "binary")
    rows = np.arange(0, N_CELLS, 2)  # every other cell
    ds = make_dataset(
        log, binary, rows, batch_size=50, shuffle=True, order=streaming.window_order(rows)
    )
    seen = np.concatenate([x["gex"].numpy() for x, _ in ds])
    expected = log_normalized(gex_mem)[rows].toarray()
    assert seen.shape == expected.shape
    key = np.lexsort  # compare as sets of rows
    np.testing.assert_allclose(seen[key(seen.T)], expected[key(expected.T)], rtol=1e-6)
    assert not np.allclose(seen, expected)  # shuffled, not in file order


def test_default_model_trains_on_a_backed_file_as_in_memory(files):
    path, (gex_mem, atac_mem) = files
    gex, atac = backed(path)
    config = ModelConfig.from_preset(None).replace(hidden=(32,), latent_dim=8)
    histories, codes, atac_from_gex = [], [], []
    for g, a in ((gex, atac), (gex_mem, atac_mem)):
        model = build_for(g, a, config=config)
        histories.append(train(model, g, a, epochs=2, verbose=0, seed=3))
        codes.append(embed(model, g, a, integrate=False))
        atac_from_gex.append(reconstruct(model, g, None, modality="atac", from_="gex"))
    # the SVD inputs are fitted on the same cells and fed as their (in-memory) components
    cols = ["loss", "val_loss"]
    np.testing.assert_allclose(histories[0][cols], histories[1][cols], rtol=1e-5)
    np.testing.assert_allclose(codes[0], codes[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(atac_from_gex[0], atac_from_gex[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["seed", "mmae"])
def test_models_reading_features_per_batch_train_from_disk(files, small_chunks, preset):
    """Inputs (``"seed"``) or count targets (``"mmae"``) read from disk every epoch."""
    path, (gex_mem, atac_mem) = files
    gex, atac = backed(path)
    config = ModelConfig.from_preset(preset).replace(hidden=(32,), latent_dim=8)
    losses = {}
    for name, (g, a) in {"disk": (gex, atac), "memory": (gex_mem, atac_mem)}.items():
        model = build_for(g, a, config=config)
        history = train(model, g, a, epochs=4, verbose=0, seed=3)
        losses[name] = history["val_loss"].to_numpy()
    assert losses["disk"][-1] < losses["disk"][0]  # it learns
    # another batch order, the same data: the validation losses end close together
    np.testing.assert_allclose(losses["disk"][-1], losses["memory"][-1], rtol=0.05)


def test_backed_subsets_of_cells_are_refused(files):
    path, (gex_mem, _) = files
    gex, _ = backed(path)
    with pytest.raises(ValueError, match="streaming reads whole files"):
        streaming.disk_rows(gex[:100], "log")
    with pytest.raises(ValueError, match="kind must be one of"):
        streaming.disk_rows(gex, "tfidf")
    with pytest.raises(ValueError, match="is in memory"):
        streaming.disk_rows(gex_mem, "log")


def test_fit_sample_draws_at_most_fit_cells(files):
    path, (gex_mem, _) = files
    gex, _ = backed(path)
    log = streaming.disk_rows(gex, "log")
    whole = streaming.fit_sample(log)
    assert (whole != log_normalized(gex_mem)).nnz == 0  # a small file: all of it
    part = streaming.fit_sample(log, n_cells=100, seed=0)
    assert part.shape == (100, gex.n_vars)
    again = streaming.fit_sample(log, n_cells=100, seed=0)
    assert (part != again).nnz == 0
    memory = log_normalized(gex_mem)
    assert streaming.fit_sample(memory) is memory  # in memory: the matrix itself
