"""Explicit, splittable random keys built on numpy's SeedSequence and Generator.

A key is a read-only ``uint32`` array of shape ``(4,)``. Nothing in fnn draws
from numpy's global random state: every random number comes from a key, so
the same seed gives bitwise-identical results on the same machine.

>>> k = key(0)
>>> a, b = split(k)
>>> bool((normal(a, (3,)) == normal(a, (3,))).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import validate as _validate

__all__ = [
    "Key",
    "key",
    "split",
    "fold_in",
    "check_key",
    "generator",
    "uniform",
    "normal",
    "bernoulli",
    "permutation",
]

Key = np.ndarray
"""A key: read-only ``np.ndarray`` of dtype ``uint32`` and shape ``(4,)``."""

_KEY_WORDS = 4
# Domain tags keep the streams used for splitting and for drawing apart.
_SPLIT, _DRAW, _FOLD = 1, 2, 3


def _make(words: np.ndarray) -> Key:
    out = np.array(words, dtype=np.uint32).reshape(_KEY_WORDS)
    out.setflags(write=False)
    return out


def check_key(k: Any, where: str = "key") -> Key:
    """Return ``k`` if it is a valid key, else raise a ``TypeError``/``ValueError`` naming ``where``
    (:func:`fnn.validate.key`)."""
    return _validate.key(where, k)


def key(seed: int) -> Key:
    """Make a key from a non-negative integer seed."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"fnn.random.key: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"fnn.random.key: seed must be >= 0, got {seed}")
    return _make(np.random.SeedSequence(int(seed)).generate_state(_KEY_WORDS, dtype=np.uint32))


def _seq(k: Key, *tag: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(w) for w in k], spawn_key=tag)


def split(k: Key, n: int = 2) -> tuple[Key, ...]:
    """Derive ``n`` independent keys from ``k`` (``k`` itself should not be reused).

    The first keys do not depend on ``n``: ``split(k, 3)[:2] == split(k, 2)``, so a
    layer appended to a ``serial`` leaves the keys of the layers before it unchanged.
    """
    check_key(k, "fnn.random.split")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"fnn.random.split: n must be a non-negative int, got {n!r}")
    words = _seq(k, _SPLIT).generate_state(_KEY_WORDS * int(n), dtype=np.uint32)
    return tuple(_make(w) for w in words.reshape(int(n), _KEY_WORDS))


def fold_in(k: Key, data: int) -> Key:
    """Derive a key from ``k`` and an integer (a step count, an epoch, a layer index)."""
    check_key(k, "fnn.random.fold_in")
    if isinstance(data, (bool, np.bool_)) or not isinstance(data, (int, np.integer)) or data < 0:
        raise ValueError(f"fnn.random.fold_in: data must be a non-negative int, got {data!r}")
    return _make(_seq(k, _FOLD, int(data)).generate_state(_KEY_WORDS, dtype=np.uint32))


def generator(k: Key) -> np.random.Generator:
    """A fresh numpy ``Generator`` seeded by ``k`` (for draws this module does not offer)."""
    check_key(k, "fnn.random.generator")
    return np.random.Generator(np.random.PCG64(_seq(k, _DRAW)))


def _shape(shape: Any, where: str) -> tuple[int, ...]:
    """A draw's shape: an int or a tuple of non-negative ints (numpy's errors name no function)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not isinstance(dims, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 0 for d in dims):
        raise ValueError(f"{where}: shape must be a tuple of non-negative ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _float_dtype(dtype: Any, where: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


def uniform(
    k: Key, shape: tuple[int, ...], dtype: Any = np.float32, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Uniform draws in ``[low, high)`` of the given shape and dtype."""
    dt = _float_dtype(dtype, "fnn.random.uniform")
    out = np.asarray(generator(k).uniform(low, high, size=_shape(shape, "fnn.random.uniform"))).astype(dt, copy=False)
    if high > low:  # rounding (numpy's, then the cast to float32) can reach ``high``: keep it excluded
        top = dt.type(high)
        np.minimum(out, np.nextafter(top, dt.type(low)) if top >= high else top, out=out)
    return out


def normal(
    k: Key, shape: tuple[int, ...], dtype: Any = np.float32, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """Normal draws with the given mean and standard deviation."""
    dt = _float_dtype(dtype, "fnn.random.normal")
    return np.asarray(generator(k).normal(mean, std, size=_shape(shape, "fnn.random.normal"))).astype(dt, copy=False)


def bernoulli(k: Key, p: float, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean array whose entries are ``True`` with probability ``p``."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0.0 <= p <= 1.0:
        raise ValueError(f"fnn.random.bernoulli: p must be in [0, 1], got {p!r}")
    return generator(k).random(size=_shape(shape, "fnn.random.bernoulli")) < p


def permutation(k: Key, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` as an ``int64`` array."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"fnn.random.permutation: n must be a non-negative int, got {n!r}")
    return generator(k).permutation(int(n))
