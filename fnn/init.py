"""Parameter initializers: functions ``(key, shape, dtype) -> array``.

Fans follow one rule. A 1-D shape ``(n,)`` has ``fan_in = fan_out = n``. A 2-D
shape is a Dense weight ``(in, out)``. A shape with more axes is in PyTorch's
convolution layout ``(out, in, *kernel)``: ``fan_in = in * prod(kernel)`` and
``fan_out = out * prod(kernel)``.

Initializers with a hyperparameter take it as a keyword after ``dtype``; use
``functools.partial`` to fix it, e.g. ``partial(fnn.init.normal, std=0.01)``.

>>> w = he_normal(fnn.random.key(0), (784, 128))
>>> w.shape, w.dtype
((784, 128), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import random as _random
from fnn import validate

__all__ = [
    "Initializer",
    "fans",
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "fan_in_uniform",
]

Initializer = Callable[..., np.ndarray]
"""``init(key, shape, dtype=np.float32, **hyperparameters) -> array`` of that shape and dtype."""


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape (see the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _dtype(dtype: Any, name: str) -> np.dtype:
    """``dtype`` checked by :func:`fnn.validate.float_dtype`, the message naming ``fnn.init.<name>``."""
    return validate.float_dtype(f"fnn.init.{name}", dtype)


def zeros(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """All zeros (``key`` is ignored)."""
    return np.zeros(shape, _dtype(dtype, "zeros"))


def ones(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """All ones (``key`` is ignored)."""
    return np.ones(shape, _dtype(dtype, "ones"))


def constant(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32, *, value: float = 0.0) -> np.ndarray:
    """Every entry equal to ``value``."""
    dt = _dtype(dtype, "constant")
    return np.full(shape, validate.number("fnn.init.constant", "value", value), dt)


def normal(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32, *, std: float = 1e-2) -> np.ndarray:
    """Normal with mean 0 and standard deviation ``std`` (default 0.01)."""
    dt = _dtype(dtype, "normal")
    return _random.normal(key, shape, dt, std=validate.number("fnn.init.normal", "std", std, low=0.0))


def uniform(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32, *, scale: float = 1e-2) -> np.ndarray:
    """Uniform on ``[-scale, scale)`` (default 0.01)."""
    dt = _dtype(dtype, "uniform")
    scale = validate.number("fnn.init.uniform", "scale", scale, low=0.0)
    return _random.uniform(key, shape, dt, -scale, scale)


def glorot_uniform(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Glorot/Xavier uniform: ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    fi, fo = fans(shape)
    a = math.sqrt(6.0 / (fi + fo))
    return _random.uniform(key, shape, _dtype(dtype, "glorot_uniform"), -a, a)


def glorot_normal(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Glorot/Xavier normal: standard deviation ``sqrt(2 / (fan_in + fan_out))``."""
    fi, fo = fans(shape)
    return _random.normal(key, shape, _dtype(dtype, "glorot_normal"), std=math.sqrt(2.0 / (fi + fo)))


def he_uniform(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """He/Kaiming uniform for ReLU: ``U(-a, a)`` with ``a = sqrt(6 / fan_in)``."""
    fi, _ = fans(shape)
    a = math.sqrt(6.0 / fi)
    return _random.uniform(key, shape, _dtype(dtype, "he_uniform"), -a, a)


def he_normal(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """He/Kaiming normal for ReLU: standard deviation ``sqrt(2 / fan_in)``."""
    fi, _ = fans(shape)
    return _random.normal(key, shape, _dtype(dtype, "he_normal"), std=math.sqrt(2.0 / fi))


def fan_in_uniform(key: _random.Key, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default for Linear and Conv2d weights
    (``kaiming_uniform_`` with ``a=sqrt(5)``)."""
    fi, _ = fans(shape)
    a = 1.0 / math.sqrt(fi)
    return _random.uniform(key, shape, _dtype(dtype, "fan_in_uniform"), -a, a)
