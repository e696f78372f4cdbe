"""A LeNet-5 train step written the way tutorials do, as a slow baseline for ``lenet.py``.

Layers are classes with ``forward`` / ``backward`` methods that keep a cache on
``self``; convolution and pooling go through ``im2col`` / ``col2im`` helpers
that loop in Python over every *output position* (vectorized over the batch
and the channels only), the classic textbook formulation. Nothing from fnn is
used here, so the numbers measure a genuinely independent implementation.

Parameters use fnn's layout and names (what ``fnn.serial`` gives LeNet-5), so
the same ``params`` dict can be fed to both and the results compared::

    conv2d_0: w (6, 1, 5, 5), b (6,)      conv2d_1: w (16, 6, 5, 5), b (16,)
    dense_0:  w (400, 120), b (120,)      dense_1:  w (120, 84), b (84,)
    dense_2:  w (84, 10), b (10,)

>>> import numpy as np
>>> net = LoopLeNet(init_params(np.random.default_rng(0)))
>>> x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
>>> net.forward(x).shape
(2, 10)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Conv", "Flatten", "Linear", "LoopLeNet", "MaxPool", "ReLU", "col2im", "im2col", "init_params",
           "softmax_cross_entropy"]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """``x: (N, C, H, W)`` (already padded) -> ``(N, C * kh * kw, OH * OW)``, one output position at a time."""
    n, c, h, w = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            cols[:, :, i * ow + j] = patch.reshape(n, c * kh * kw)
    return cols


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """Adjoint of :func:`im2col`: add each column back onto its window, one output position at a time."""
    n, c, h, w = shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros(shape, dtype=cols.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += \
                cols[:, :, i * ow + j].reshape(n, c, kh, kw)
    return out


class Conv:
    """Stride-1 convolution with zero padding, via :func:`im2col` and a matrix product."""

    def __init__(self, w: np.ndarray, b: np.ndarray, padding: int = 0) -> None:
        self.w, self.b, self.padding = w, b, padding
        self.dw: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.padding
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        f, _, kh, kw = self.w.shape
        n, _, h, w = xp.shape
        oh, ow = h - kh + 1, w - kw + 1
        cols = im2col(xp, kh, kw)
        y = self.w.reshape(f, -1) @ cols + self.b[:, None]
        self.cache = (xp.shape, cols)
        return y.reshape(n, f, oh, ow)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xp_shape, cols = self.cache
        f, _, kh, kw = self.w.shape
        n = dy.shape[0]
        dy3 = dy.reshape(n, f, -1)
        self.dw = np.einsum("nfp,nkp->fk", dy3, cols).reshape(self.w.shape)
        self.db = dy3.sum(axis=(0, 2))
        dcols = self.w.reshape(f, -1).T @ dy3
        dxp = col2im(dcols, xp_shape, kh, kw)
        p = self.padding
        return dxp[:, :, p:dxp.shape[2] - p, p:dxp.shape[3] - p] if p else dxp

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        return [("w", self.w, self.dw), ("b", self.b, self.db)]


class MaxPool:
    """Non-overlapping max pooling via :func:`im2col` on each channel; ties go to the first maximum."""

    def __init__(self, size: int = 2) -> None:
        self.size = size

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        s = self.size
        cols = im2col(x.reshape(n * c, 1, h, w), s, s, stride=s)  # (N*C, s*s, OH*OW)
        arg = cols.argmax(axis=1)
        y = np.take_along_axis(cols, arg[:, None, :], axis=1)
        self.cache = (x.shape, arg, cols.shape)
        return y.reshape(n, c, h // s, w // s)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape, arg, cols_shape = self.cache
        n, c, h, w = shape
        s = self.size
        dcols = np.zeros(cols_shape, dtype=dy.dtype)
        np.put_along_axis(dcols, arg[:, None, :], dy.reshape(n * c, 1, -1), axis=1)
        return col2im(dcols, (n * c, 1, h, w), s, s, stride=s).reshape(shape)

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        return []


class ReLU:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.mask

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        return []


class Flatten:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.shape)

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        return []


class Linear:
    """``y = x @ w + b`` with ``w: (in, out)``."""

    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        self.w, self.b = w, b
        self.dw: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.w + self.b

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.dw = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.w.T

    def params(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        return [("w", self.w, self.dw), ("b", self.b, self.db)]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and its gradient with respect to ``logits``."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -float(np.log(p[np.arange(n), labels]).astype(np.float64).sum()) / n
    grad = p.copy()
    grad[np.arange(n), labels] -= 1
    return loss, grad / logits.dtype.type(n)


def init_params(rng: np.random.Generator, dtype: Any = np.float32) -> dict[str, dict[str, np.ndarray]]:
    """Random LeNet-5 params in fnn's layout (uniform, PyTorch's default bounds, zero bias)."""

    def u(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return {
        "conv2d_0": {"w": u((6, 1, 5, 5), 25), "b": np.zeros(6, dtype)},
        "conv2d_1": {"w": u((16, 6, 5, 5), 150), "b": np.zeros(16, dtype)},
        "dense_0": {"w": u((400, 120), 400), "b": np.zeros(120, dtype)},
        "dense_1": {"w": u((120, 84), 120), "b": np.zeros(84, dtype)},
        "dense_2": {"w": u((84, 10), 84), "b": np.zeros(10, dtype)},
    }


class LoopLeNet:
    """LeNet-5 as a list of tutorial-style layers over (copies of) an fnn-layout ``params`` dict."""

    def __init__(self, params: dict[str, dict[str, np.ndarray]]) -> None:
        p = {name: {k: v.copy() for k, v in d.items()} for name, d in params.items()}
        self.named: list[tuple[str, Any]] = [
            ("conv2d_0", Conv(p["conv2d_0"]["w"], p["conv2d_0"]["b"], padding=2)), ("relu_0", ReLU()),
            ("max_pool2d_0", MaxPool(2)),
            ("conv2d_1", Conv(p["conv2d_1"]["w"], p["conv2d_1"]["b"])), ("relu_1", ReLU()),
            ("max_pool2d_1", MaxPool(2)),
            ("flatten_0", Flatten()),
            ("dense_0", Linear(p["dense_0"]["w"], p["dense_0"]["b"])), ("relu_2", ReLU()),
            ("dense_1", Linear(p["dense_1"]["w"], p["dense_1"]["b"])), ("relu_3", ReLU()),
            ("dense_2", Linear(p["dense_2"]["w"], p["dense_2"]["b"])),
        ]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for _, layer in self.named:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for _, layer in reversed(self.named):
            dy = layer.backward(dy)
        return dy

    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        """Forward, loss, backward (every layer's dx, as tutorials do), and an in-place SGD update."""
        loss, dlogits = softmax_cross_entropy(self.forward(x), labels)
        self.backward(dlogits)
        for _, layer in self.named:
            for _, p, g in layer.params():
                p -= lr * g
        return loss

    def params(self) -> dict[str, dict[str, np.ndarray]]:
        return {name: {k: p for k, p, _ in layer.params()} for name, layer in self.named if layer.params()}

    def grads(self) -> dict[str, dict[str, np.ndarray]]:
        return {name: {k: g for k, _, g in layer.params()} for name, layer in self.named if layer.params()}
