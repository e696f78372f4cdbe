"""Argument handling shared by the 2-D layers (Conv2D and the pools)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.ops import Padding, Pair, out_size

__all__ = ["as_pair", "as_padding", "resolve_padding", "check_nchw", "check_fits"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def as_pair(layer: str, name: str, value: Any, minimum: int = 1) -> Pair:
    """An int or a pair of ints, each ``>= minimum``, as a pair."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def as_padding(layer: str, value: Any, allow_same: bool = True) -> Padding | str:
    """``"same"``, ``"valid"``, an int, a pair ``(ph, pw)`` or ``((top, bottom), (left, right))``."""
    if isinstance(value, str):
        v = value.lower()
        if v == "valid":
            return (0, 0, 0, 0)
        if v == "same" and allow_same:
            return "same"
        choices = '"same", "valid"' if allow_same else '"valid"'
        raise ValueError(f"{layer}: padding must be {choices}, an int or a pair, got {value!r}")
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (tuple, list)) for v in value):
        (t, b), (left, r) = (as_pair(layer, "padding", v, minimum=0) for v in value)
        return (t, b, left, r)
    ph, pw = as_pair(layer, "padding", value, minimum=0)
    return (ph, ph, pw, pw)


def resolve_padding(padding: Padding | str, size: tuple[int, int], kernel: Pair, stride: Pair,
                    dilation: Pair) -> Padding:
    """Explicit ``(top, bottom, left, right)`` padding for an input of spatial ``size``.

    ``"same"`` gives ``ceil(size / stride)`` outputs, with any odd extra row or
    column at the bottom/right (the rule of PyTorch, TensorFlow and JAX).
    """
    if not isinstance(padding, str):
        return padding
    pads: list[int] = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return (pads[0], pads[1], pads[2], pads[3])


def check_nchw(layer: str, x: np.ndarray, channels: int | None = None) -> None:
    """``x`` must be ``(N, C, H, W)`` (with ``C == channels`` when given)."""
    if x.ndim != 4:
        raise ValueError(f"{layer}: input must be (N, C, H, W), got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{layer}: input has {x.shape[1]} channels but params expect {channels} "
                         f"(input shape {x.shape})")


def check_fits(layer: str, size: tuple[int, int], padding: Padding, kernel: Pair, dilation: Pair,
               stride: Pair) -> tuple[int, int]:
    """Output size ``(OH, OW)``; ``ValueError`` when the kernel is larger than the padded input."""
    padded = (size[0] + padding[0] + padding[1], size[1] + padding[2] + padding[3])
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(f"{layer}: kernel {kernel} (span {span} with dilation {dilation}) is larger than "
                         f"the padded input {padded} (input {size}, padding {padding})")
    return out_size(padded[0], kernel[0], stride[0], dilation[0]), out_size(padded[1], kernel[1], stride[1],
                                                                            dilation[1])
