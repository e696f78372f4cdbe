"""fnn.data: seeded batches, one_hot, IDX files (written here into tmp_path) and the real MNIST files."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fnn import random
from fnn.data import IDXError, batches, load_idx, load_mnist, one_hot

KEY = random.key(0)

# ---------------------------------------------------------------- batches


def order_of(key, n, batch_size, **kwargs):
    idx = np.arange(n)
    return [b[0] for b in batches(key, (idx,), batch_size, **kwargs)]


@given(n=st.integers(0, 60), batch_size=st.integers(1, 16), drop_last=st.booleans(), shuffle=st.booleans(),
       seed=st.integers(0, 2**32))
def test_batches_cover_every_example_once(n, batch_size, drop_last, shuffle, seed):
    parts = order_of(random.key(seed), n, batch_size, drop_last=drop_last, shuffle=shuffle)
    sizes = [len(p) for p in parts]
    kept = n - n % batch_size if drop_last else n
    assert sum(sizes) == kept
    assert all(s == batch_size for s in sizes[:-1]) and (not sizes or 0 < sizes[-1] <= batch_size)
    if drop_last:
        assert all(s == batch_size for s in sizes)
    seen = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    assert len(np.unique(seen)) == kept
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        assert seen.tolist() == list(range(kept))


def test_batches_are_deterministic_per_key_and_follow_its_permutation():
    a, b, c = order_of(KEY, 50, 7), order_of(KEY, 50, 7), order_of(random.key(1), 50, 7)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)) and len(a) == len(b) == 8
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert np.concatenate(a).tolist() == random.permutation(KEY, 50).tolist()


def test_batches_keep_arrays_aligned_and_return_copies():
    x = np.arange(30.0).reshape(10, 3)
    y = np.arange(10)
    x.setflags(write=False)
    for bx, by in batches(KEY, (x, y), 4):
        assert bx.tolist() == x[by].tolist()
        assert not np.shares_memory(bx, x)
    assert [len(b) for b, _ in batches(KEY, (x, y), 4)] == [4, 4, 2]
    assert [len(b) for b, _ in batches(KEY, [x, y], 4, drop_last=True)] == [4, 4]


def test_batches_do_not_touch_numpy_global_state():
    before = np.random.get_state()[1].copy()
    list(batches(KEY, (np.arange(100),), 10))
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("key, arrays, kwargs, error, match", [
    (KEY, (), {}, ValueError, "needs at least one array"),
    (KEY, (np.zeros(3), np.zeros(4)), {}, ValueError, "share their first axis length, got lengths \\[3, 4\\]"),
    (KEY, (np.zeros(3), np.array(1.0)), {}, ValueError, "first axis length"),
    (KEY, (np.zeros(3),), {"batch_size": 0}, ValueError, "^batches: batch_size must be >= 1, got 0"),
    (KEY, (np.zeros(3),), {"batch_size": -2}, ValueError, "^batches: batch_size must be >= 1, got -2"),
    (KEY, (np.zeros(3),), {"batch_size": 1.5}, TypeError, "^batches: batch_size must be an int, got float 1.5"),
    (KEY, (np.zeros(3),), {"batch_size": 2.0}, TypeError, "^batches: batch_size must be an int, got float 2.0"),
    (KEY, (np.zeros(3),), {"batch_size": True}, TypeError, "^batches: batch_size must be an int, got bool True"),
    (KEY, (np.zeros(3),), {"batch_size": np.bool_(True)}, TypeError, "^batches: batch_size must be an int, got bool"),
    (KEY, (np.zeros(3),), {"batch_size": "2"}, TypeError, "^batches: batch_size must be an int, got str '2'"),
    (KEY, (np.zeros(3),), {"shuffle": "False"}, TypeError, "^batches: shuffle must be True or False, got str 'False'"),
    (KEY, (np.zeros(3),), {"shuffle": 0}, TypeError, "^batches: shuffle must be True or False, got int 0"),
    (KEY, (np.zeros(3),), {"drop_last": "yes"}, TypeError, "^batches: drop_last must be True or False, got str"),
    (KEY, (np.zeros(3),), {"drop_last": None}, TypeError, "^batches: drop_last must be True or False, got NoneType"),
    (None, (np.zeros(3),), {}, ValueError, "shuffle=True needs a key"),
    (np.zeros(4, np.int32), (np.zeros(3),), {}, ValueError, "expected a key"),
    (7, (np.zeros(3),), {}, TypeError, "expected a key"),
])
def test_batches_errors(key, arrays, kwargs, error, match):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        list(batches(key, arrays, **kwargs))


def test_batches_take_numpy_scalar_sizes_and_numpy_bools():
    x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    want = list(batches(KEY, (x, y), batch_size=2, drop_last=True))
    for size in (np.int64(2), np.int32(2), np.uint8(2)):
        got = list(batches(KEY, (x, y), batch_size=size, shuffle=np.bool_(True), drop_last=np.True_))
        assert len(got) == len(want) == 2
        assert all(a.tobytes() == b.tobytes() for g, w in zip(got, want) for a, b in zip(g, w))
    assert [len(b[0]) for b in batches(None, (x,), np.int64(2), shuffle=np.False_)] == [2, 2, 1]


# ---------------------------------------------------------------- one_hot

def test_one_hot_by_hand():
    out = one_hot(np.array([2, 0, 1]), 3)
    assert out.dtype == np.float32 and out.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    grid = one_hot(np.array([[0, 3], [1, 1]], np.uint8), 4, np.float64)
    assert grid.shape == (2, 2, 4) and grid.dtype == np.float64 and grid[0, 1].tolist() == [0, 0, 0, 1]
    assert one_hot(np.zeros(0, np.int64), 5).shape == (0, 5)


@pytest.mark.parametrize("labels, n, error, match", [
    (np.array([0.0, 1.0]), 3, TypeError, "labels must be integers, got dtype float64"),
    (np.array([True, False]), 3, TypeError, "labels must be integers, got dtype bool"),
    (np.array([0, 3]), 3, ValueError, "labels must be in \\[0, 3\\), got values from 0 to 3"),
    (np.array([-1, 2]), 3, ValueError, "labels must be in \\[0, 3\\), got values from -1 to 2"),
    (np.array([0]), 0, ValueError, "n must be >= 1, got 0"),
    (np.array([0]), -1, ValueError, "n must be >= 1, got -1"),
    (np.array([0]), 2.0, TypeError, "n must be an int, got float 2.0"),
    (np.array([0]), True, TypeError, "n must be an int, got bool True"),
    (np.array([0]), "3", TypeError, "n must be an int, got str '3'"),
    (np.array([0]), None, TypeError, "n must be an int, got NoneType None"),
])
def test_one_hot_errors(labels, n, error, match):
    with pytest.raises(error, match=f"^one_hot: {match}"):
        one_hot(labels, n)


def test_one_hot_takes_a_numpy_integer_n():
    out = one_hot(np.array([2, 0]), np.int64(3))
    assert out.shape == (2, 3) and out.tolist() == one_hot(np.array([2, 0]), 3).tolist()


# ---------------------------------------------------------------- IDX files

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr, code=None, shape=None):
    """An IDX file: two zero bytes, the type code, the number of axes, big-endian uint32 sizes, big-endian data."""
    arr = np.asarray(arr)
    code = IDX_CODES[arr.dtype.type] if code is None else code
    shape = arr.shape if shape is None else shape
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, content, gz=False):
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def sample(dtype, shape):
    values = np.arange(int(np.prod(shape))).reshape(shape)
    if np.issubdtype(dtype, np.floating):
        return (values * -1.25 + 0.5).astype(dtype)
    info = np.iinfo(dtype)
    return ((values * 37) % (int(info.max) - int(info.min) + 1) + int(info.min)).astype(dtype)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (0, 28, 28)])
def test_load_idx_round_trips_every_type(tmp_path, dtype, shape, gz):
    arr = sample(dtype, shape)
    out = load_idx(write(tmp_path / ("f.idx.gz" if gz else "f.idx"), idx_bytes(arr), gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.shape == shape
    assert out.tobytes() == arr.tobytes()
    assert out.flags.writeable


def test_load_idx_extremes_of_signed_types(tmp_path):
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        arr = np.array([info.min, -1, 0, 1, info.max], dtype)
        assert load_idx(write(tmp_path / "f", idx_bytes(arr))).tolist() == arr.tolist()


def test_load_idx_accepts_str_paths(tmp_path):
    path = write(tmp_path / "f", idx_bytes(np.arange(3, dtype=np.uint8)))
    assert load_idx(str(path)).tolist() == [0, 1, 2]


GOOD = idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4))


@pytest.mark.parametrize("content, match", [
    (GOOD[:-1], ("header says shape \\(3, 4\\) of >i2 \\(24 bytes\\) but the file holds 23 data bytes "
                 "\\(truncated or corrupt\\)$")),
    (GOOD + b"\x00", "header says .* but the file holds 25 data bytes"),
    (GOOD[:10], "truncated header \\(10 bytes, need 12\\)"),
    (GOOD[:3], "not an IDX file \\(bad magic number 00000b\\)"),
    (b"", "not an IDX file \\(bad magic number empty\\)$"),
    (b"\x01" + GOOD[1:], "not an IDX file \\(bad magic number 01000b02\\)"),
    (GOOD[:2] + b"\x0a" + GOOD[3:], "not an IDX file \\(bad magic number 00000a02\\)"),
    (b"hello, world\n", "not an IDX file"),
    (idx_bytes(np.zeros(0, np.uint8), shape=(2, 3)),
     "header says shape \\(2, 3\\) of uint8 \\(6 bytes\\) but the file holds 0"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_malformed_files_raise_idx_error_naming_the_file(tmp_path, content, match, gz):
    path = write(tmp_path / "bad-file", content, gz)
    with pytest.raises(IDXError, match=f"^load_idx: .*bad-file: {match}"):
        load_idx(path)


def test_load_idx_header_sizes_overflowing_int64_raise_idx_error(tmp_path):
    """Regression: the expected byte count was a product in int64, which wrapped to 0 for sizes 65536^4, so an
    empty data section passed the check and numpy failed deep inside with a reshape error."""
    path = write(tmp_path / "huge", idx_bytes(np.zeros(0, np.uint8), shape=(65536,) * 4))
    with pytest.raises(IDXError, match="header says shape \\(65536, 65536, 65536, 65536\\) of uint8"):
        load_idx(path)


def corrupt_gzip_bodies():
    """Gzip files of a valid IDX file, each with one byte of the deflate stream or the trailer damaged."""
    body = gzip.compress(idx_bytes(sample(np.uint8, (40, 40))), mtime=0)
    out = {"truncated": body[:-20], "no trailer": body[:-8], "bad crc": body[:-8] + bytes(8)}
    for i in range(12, len(body) - 8, max(1, (len(body) - 20) // 12)):
        damaged = bytearray(body)
        damaged[i] ^= 0xFF
        out[f"byte {i}"] = bytes(damaged)
    return out


def test_load_idx_corrupt_gzip_raises_idx_error(tmp_path):
    """Regression: damage inside the deflate stream raised zlib.error, which is neither OSError nor ValueError."""
    for name, content in corrupt_gzip_bodies().items():
        path = write(tmp_path / "broken.gz", content)
        try:
            load_idx(path)
        except IDXError as err:
            assert "broken.gz" in str(err), name
        else:  # a flipped byte that still inflates to the same length would have to be caught by the CRC
            pytest.fail(f"{name}: corrupt gzip was read without an error")


def test_load_idx_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope")


# ---------------------------------------------------------------- load_mnist

def write_split(directory, prefix, images, labels, gz):
    suffix = ".gz" if gz else ""
    write(directory / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gz)
    write(directory / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)


def test_load_mnist_from_files_written_here(tmp_path):
    images = sample(np.uint8, (6, 28, 28))
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.array([3, 1, 4, 1, 5, 9], np.uint8)
    write_split(tmp_path, "train", images, labels, gz=False)
    write_split(tmp_path, "t10k", images[:2], labels[:2], gz=True)
    data = load_mnist(tmp_path)
    assert set(data) == {"train", "test"}
    x, y = data["train"]
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [3, 1, 4, 1, 5, 9] and x[0, 0, 0, 0] == 0.0 and x[0, 0, 0, 1] == 1.0
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / 255)
    assert data["test"][1].tolist() == [3, 1]


def test_load_mnist_only_the_splits_present(tmp_path):
    write_split(tmp_path, "t10k", sample(np.uint8, (2, 28, 28)), np.array([0, 1], np.uint8), gz=True)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(sample(np.uint8, (2, 28, 28))))  # no labels
    assert set(load_mnist(tmp_path)) == {"test"}


@pytest.mark.parametrize("images, labels", [
    (np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8)),
    (np.zeros((3, 784), np.uint8), np.zeros(3, np.uint8)),
    (np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8)),
])
def test_load_mnist_mismatched_files_raise(tmp_path, images, labels):
    write_split(tmp_path, "train", images, labels, gz=False)
    with pytest.raises(IDXError, match="load_mnist: .*: train images .* and labels .* do not match"):
        load_mnist(tmp_path)


def test_load_mnist_empty_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MNIST IDX files"):
        load_mnist(tmp_path)


def test_load_mnist_real_test_set(mnist_dir):
    data = load_mnist(mnist_dir)
    assert "test" in data
    x, y = data["test"]
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (10_000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    # Label counts from ../shared/data/mnist/README.md.
    assert np.bincount(y, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = load_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert raw.dtype == np.uint8 and raw.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(x[:, 0], raw.astype(np.float32) / 255)
