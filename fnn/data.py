"""Data helpers: seeded mini-batches, one-hot labels and MNIST-format IDX files.

>>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
>>> [len(b[0]) for b in batches(fnn.random.key(0), (x, y), batch_size=2)]
[2, 2, 1]
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import validate

__all__ = ["batches", "batch_indices", "one_hot", "load_idx", "load_mnist", "IDXError"]


def batch_indices(key: _random.Key | None, arrays: Sequence[np.ndarray], batch_size: int, shuffle: bool = True,
                  drop_last: bool = False) -> tuple[tuple[np.ndarray, ...], Iterator[np.ndarray]]:
    """Check the arguments of :func:`batches` and return ``(arrays, index batches)``: the arrays
    as numpy arrays and an iterator over the row indices of each batch."""
    arrays, n = validate.aligned_arrays("batches", arrays)
    batch_size = validate.integer("batches", "batch_size", batch_size, low=1)
    shuffle = validate.boolean("batches", "shuffle", shuffle)
    drop_last = validate.boolean("batches", "drop_last", drop_last)
    if shuffle:
        if key is None:
            raise ValueError("batches: shuffle=True needs a key (fnn.random.key(seed)); "
                             "pass shuffle=False for a fixed order")
        order = _random.permutation(key, n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return arrays, (order[start:start + batch_size] for start in range(0, stop, batch_size))


def batches(key: _random.Key | None, arrays: Sequence[np.ndarray], batch_size: int, shuffle: bool = True,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """Iterate over tuples of aligned mini-batches of ``arrays`` (a tuple of arrays sharing
    their first axis length; pass ``(x,)`` for a single array).

    The order is a permutation drawn from ``key`` when ``shuffle`` (a key is then
    required), so the same key gives the same batches. ``drop_last`` drops a final
    short batch. Arguments are checked when ``batches`` is called, not at the first batch.
    For data-parallel training, :func:`fnn.distributed.batches` gives each rank its
    part of the same batches.
    """
    arrays, index_batches = batch_indices(key, arrays, batch_size, shuffle, drop_last)
    return (tuple(a[idx] for a in arrays) for idx in index_batches)


def one_hot(labels: np.ndarray, n: int, dtype: Any = np.float32) -> np.ndarray:
    """``labels: (...,)`` integer classes in ``[0, n)`` -> ``(..., n)`` rows of zeros with a one."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"one_hot: labels must be integers, got dtype {labels.dtype}")
    n = validate.integer("one_hot", "n", n, low=1)
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"one_hot: labels must be in [0, {n}), got values from {labels.min()} to {labels.max()}")
    return (labels[..., None] == np.arange(n)).astype(dtype)


class IDXError(ValueError):
    """An IDX file that is truncated, corrupt or not IDX at all."""


_IDX_TYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array.

    The header is checked: two zero bytes, a known type code, a dimension count,
    and sizes whose product matches the data length. Any mismatch raises
    :class:`IDXError` naming the file.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IDXError(f"load_idx: {path}: corrupt or truncated gzip data ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise IDXError(f"load_idx: {path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"load_idx: {path}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: sizes up to 2**32 - 1 each cannot overflow
    if len(raw) - header != expected:
        raise IDXError(f"load_idx: {path}: header says shape {shape} of {dtype} ({expected} bytes) "
                       f"but the file holds {len(raw) - header} data bytes (truncated or corrupt)")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_mnist(directory: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load every MNIST split found in ``directory``.

    Looks for ``train-images-idx3-ubyte``/``train-labels-idx1-ubyte`` and
    ``t10k-…`` (each optionally ``.gz``). Returns ``{"train": (x, y), "test": (x, y)}``
    with only the splits present; ``x: (N, 1, 28, 28)`` float32 in ``[0, 1]``, ``y: (N,)`` int64.
    """
    found = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        paths = []
        for part in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = os.path.join(directory, f"{prefix}-{part}")
            paths.append(next((p for p in (name, name + ".gz") if os.path.exists(p)), None))
        if all(paths):
            images, labels = load_idx(paths[0]), load_idx(paths[1])  # type: ignore[arg-type]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise IDXError(f"load_mnist: {directory}: {split} images {images.shape} and labels "
                               f"{labels.shape} do not match")
            x = (images.astype(np.float32) / 255.0)[:, None]
            found[split] = (x, labels.astype(np.int64))
    if not found:
        raise FileNotFoundError(f"load_mnist: no MNIST IDX files (train-*/t10k-*-ubyte[.gz]) in {directory}")
    return found
