"""mlbd.data: generators are deterministic and well-formed; downloaders verify, reject and cache."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
import time

import numpy as np
import pandas as pd
import pytest

from mlbd import data


def test_iris_frame_columns_and_species():
    df = data.iris_frame()
    assert list(df.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    assert df.shape == (150, 5)
    assert df["species"].value_counts().to_dict() == {"setosa": 50, "versicolor": 50, "virginica": 50}


def test_make_linear_reproduces_the_notes_draws():
    X, y = data.make_linear(100, seed=42)
    rng = np.random.RandomState(42)
    X_ref = 2 * rng.rand(100, 1)
    y_ref = 4 + 3 * X_ref + rng.randn(100, 1)
    assert X.shape == y.shape == (100, 1)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_make_quadratic_shape_range_and_seed():
    X, y = data.make_quadratic(60, seed=0)
    assert X.shape == y.shape == (60, 1)
    assert X.min() >= -3 and X.max() <= 3
    np.testing.assert_array_equal(X, data.make_quadratic(60, seed=0)[0])
    assert not np.array_equal(X, data.make_quadratic(60, seed=1)[0])


@pytest.mark.parametrize("n,size", [(50, 28), (1001, 28), (40, 16)])
def test_make_shapes_form_and_balance(n, size):
    X, y = data.make_shapes(n, size=size, seed=3)
    assert X.shape == (n, size, size) and X.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.uint8
    assert X.min() >= 0.0 and X.max() <= 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1, "classes must be balanced"
    assert len(data.CLASS_NAMES) == 10


def test_make_shapes_deterministic_and_seed_dependent():
    a = data.make_shapes(200, seed=5)
    b = data.make_shapes(200, seed=5)
    c = data.make_shapes(200, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_make_shapes_classes_are_distinguishable_but_not_trivial():
    """Class means differ clearly (learnable), while noise keeps pixels from being binary."""
    X, y = data.make_shapes(2000, seed=0)
    means = np.stack([X[y == k].mean(axis=0).ravel() for k in range(10)])
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dists[~np.eye(10, dtype=bool)].min() > 0.5
    assert 0.05 < np.std(X[X < 0.3]) < 0.2, "background should carry Gaussian noise"


def test_make_shapes_speed_guard():
    # Generous guard only; the measured figure is printed by `mlbd bench data` (target < 1 s).
    start = time.perf_counter()
    data.make_shapes(5000, seed=0)
    assert time.perf_counter() - start < 5


def test_make_segmentation_shapes_masks_match_images():
    X, M = data.make_segmentation_shapes(64, size=32, seed=0)
    assert X.shape == (64, 32, 32, 1) and X.dtype == np.float32
    assert M.shape == (64, 32, 32, 1) and M.dtype == np.uint8
    assert set(np.unique(M)) <= {0, 1}
    assert (M.reshape(64, -1).sum(axis=1) > 0).all(), "every image has at least one shape"
    assert X[M == 1].mean() > X[M == 0].mean() + 0.3, "shapes are brighter than the background"
    np.testing.assert_array_equal(X, data.make_segmentation_shapes(64, size=32, seed=0)[0])


def test_corrupt_injects_nans_and_sites_without_touching_input():
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    before = df.copy()
    messy, sites = data.corrupt(df, frac=0.05, seed=7)
    pd.testing.assert_frame_equal(df, before)
    frac = messy.drop(columns="site").isna().to_numpy().mean()
    assert 0.04 < frac < 0.06
    assert set(messy["site"]) <= set(range(1, 9)) and data.UNLISTED_SITE in set(messy["site"])
    assert list(sites.columns) == ["site", "region"] and data.UNLISTED_SITE not in set(sites["site"])
    again, _ = data.corrupt(df, frac=0.05, seed=7)
    pd.testing.assert_frame_equal(messy, again)
    with pytest.raises(ValueError):
        data.corrupt(df, frac=1.5)


# ---------------------------------------------------------------------------------------------
# Downloaders against a local HTTP server serving IDX files made here
# ---------------------------------------------------------------------------------------------

def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def idx_server():
    rng = np.random.default_rng(0)
    files = {
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (12, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 12)),
    }
    served = dict(files)
    once = {}     # name -> body served from the second request on
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            hits.append(name)
            body = served.get(name)
            if name in once and name in hits[:-1]:
                body = once[name]
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[name]) if name.startswith("TRUNC") else len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sums = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/", "sums": sums, "served": served,
           "files": files, "hits": hits, "once": once}
    server.shutdown()


def test_download_parses_verifies_and_caches(idx_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MLBD_OFFLINE", raising=False)
    images, labels = data.fetch_fashion_mnist("test", base_url=idx_server["url"], checksums=idx_server["sums"],
                                              cache_dir=tmp_path)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8 and labels.shape == (12,)
    assert (tmp_path / "fashion_mnist" / "t10k-images-idx3-ubyte.gz").exists()
    n = len(idx_server["hits"])
    again = data.fetch_fashion_mnist("test", base_url=idx_server["url"], checksums=idx_server["sums"], cache_dir=tmp_path)
    assert len(idx_server["hits"]) == n, "a cached file must not be downloaded again"
    np.testing.assert_array_equal(again[0], images)


def test_corrupted_download_is_rejected_and_not_cached(idx_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MLBD_OFFLINE", raising=False)
    name = "t10k-images-idx3-ubyte.gz"
    body = bytearray(idx_server["files"][name])
    body[-5] ^= 0xFF
    idx_server["served"][name] = bytes(body)
    with pytest.raises(data.DownloadError, match="checksum"):
        data.fetch_mnist("test", base_url=idx_server["url"], checksums=idx_server["sums"], cache_dir=tmp_path, retries=0)
    assert not list((tmp_path / "mnist").iterdir()), "nothing, not even a temporary file, is left in the cache"


def test_truncated_download_is_rejected_and_not_cached(idx_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MLBD_OFFLINE", raising=False)
    name = "t10k-images-idx3-ubyte.gz"
    full = idx_server["files"][name]
    idx_server["served"][name] = full[: len(full) // 2]
    sums = dict(idx_server["sums"])
    sums[name] = hashlib.md5(full[: len(full) // 2]).hexdigest()  # even a matching sum must not save a bad file
    with pytest.raises(data.DownloadError):
        data.fetch_mnist("test", base_url=idx_server["url"], checksums=sums, cache_dir=tmp_path, retries=0)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_failed_download_is_retried(idx_server, tmp_path, monkeypatch):
    """The first response is corrupt, the retry gets the real file (pooch's retry_if_failed)."""
    monkeypatch.delenv("MLBD_OFFLINE", raising=False)
    name = "t10k-labels-idx1-ubyte.gz"
    idx_server["served"][name] = b"\x1f\x8b garbage"
    idx_server["once"][name] = idx_server["files"][name]
    images, labels = data.fetch_mnist("test", base_url=idx_server["url"], checksums=idx_server["sums"],
                                      cache_dir=tmp_path, retries=1)
    assert labels.shape == (12,) and idx_server["hits"].count(name) == 2


def test_tampered_cache_is_refetched(idx_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MLBD_OFFLINE", raising=False)
    kw = dict(base_url=idx_server["url"], checksums=idx_server["sums"], cache_dir=tmp_path)
    data.fetch_mnist("test", **kw)
    cached = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(b"garbage")
    images, labels = data.fetch_mnist("test", **kw)
    assert labels.shape == (12,)
    assert cached.read_bytes() == idx_server["files"]["t10k-labels-idx1-ubyte.gz"]


def test_offline_mode_refuses_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBD_OFFLINE", "1")
    with pytest.raises(data.DownloadError, match="MLBD_OFFLINE"):
        data.fetch_mnist("test", base_url="http://127.0.0.1:9/", cache_dir=tmp_path)


def test_read_idx_rejects_bad_headers():
    with pytest.raises(data.DownloadError, match="magic"):
        data.read_idx(b"\x01\x02\x03\x04")
    good = gzip.decompress(_idx(np.zeros((2, 3))))
    with pytest.raises(data.DownloadError, match="payload"):
        data.read_idx(good[:-1])
