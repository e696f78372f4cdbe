"""Shape checks and padding shared by the 2-D layers (Conv2D and the pools); their
arguments are checked by :mod:`fnn.validate` (``validate.pair``, ``validate.padding``)."""

from __future__ import annotations

import numpy as np

from fnn.ops import Padding, Pair, out_size

__all__ = ["resolve_padding", "check_nchw", "check_fits"]


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
