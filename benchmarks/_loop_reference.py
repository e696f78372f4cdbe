"""LeNet-5 written the way tutorials do, the slow baseline of ``lenet.py``: layer classes whose
``forward`` / ``backward`` keep a cache on ``self``, convolution and pooling through ``im2col`` /
``col2im`` helpers that loop in Python over every output position (vectorized over the batch and the
channels only). Nothing from fnn is used. Parameters have fnn's layout and names (``conv2d_0`` ...
``dense_2``; Dense ``w`` is (in, out)), so the same ``params`` feed both and the results compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Params = dict[str, np.ndarray]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """``x: (N, C, H, W)`` (already padded) -> ``(N, C * kh * kw, OH * OW)``, one output position at a time."""
    n, c, h, w = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            cols[:, :, i * ow + j] = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw].reshape(n, -1)
    return cols


def col2im(cols: np.ndarray, shape: tuple[int, ...], kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """Adjoint of :func:`im2col`: add each column back onto its window, one output position at a time."""
    n, c, h, w = shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros(shape, dtype=cols.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += \
                cols[:, :, i * ow + j].reshape(n, c, kh, kw)
    return out


class Layer:
    """``p``: the parameters by name, ``g``: their gradients, set by ``backward`` (none by default)."""

    p: Params = {}
    g: Params = {}


class Conv(Layer):
    """Stride-1 convolution with zero padding, via :func:`im2col` and a matrix product."""

    def __init__(self, w: np.ndarray, b: np.ndarray, padding: int = 0) -> None:
        self.p, self.padding = {"w": w, "b": b}, padding

    def forward(self, x: np.ndarray) -> np.ndarray:
        pad, w = self.padding, self.p["w"]
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
        f, _, kh, kw = w.shape
        cols = im2col(xp, kh, kw)
        self.cache = (xp.shape, cols)
        y = w.reshape(f, -1) @ cols + self.p["b"][:, None]
        return y.reshape(x.shape[0], f, xp.shape[2] - kh + 1, xp.shape[3] - kw + 1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (xp_shape, cols), w, pad = self.cache, self.p["w"], self.padding
        f, _, kh, kw = w.shape
        dy3 = dy.reshape(dy.shape[0], f, -1)
        self.g = {"w": np.einsum("nfp,nkp->fk", dy3, cols).reshape(w.shape), "b": dy3.sum(axis=(0, 2))}
        dxp = col2im(w.reshape(f, -1).T @ dy3, xp_shape, kh, kw)
        return dxp[:, :, pad:dxp.shape[2] - pad, pad:dxp.shape[3] - pad] if pad else dxp


class MaxPool(Layer):
    """Non-overlapping max pooling via :func:`im2col` on each channel; ties go to the first maximum."""

    def __init__(self, size: int = 2) -> None:
        self.size = size

    def forward(self, x: np.ndarray) -> np.ndarray:
        (n, c, h, w), s = x.shape, self.size
        cols = im2col(x.reshape(n * c, 1, h, w), s, s, stride=s)  # (N*C, s*s, OH*OW)
        arg = cols.argmax(axis=1)
        self.cache = (x.shape, arg, cols.shape)
        return np.take_along_axis(cols, arg[:, None, :], axis=1).reshape(n, c, h // s, w // s)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        ((n, c, h, w), arg, cols_shape), s = self.cache, self.size
        dcols = np.zeros(cols_shape, dtype=dy.dtype)
        np.put_along_axis(dcols, arg[:, None, :], dy.reshape(n * c, 1, -1), axis=1)
        return col2im(dcols, (n * c, 1, h, w), s, s, stride=s).reshape(n, c, h, w)


class ReLU(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.mask


class Flatten(Layer):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.shape)


class Linear(Layer):
    """``y = x @ w + b`` with ``w: (in, out)``."""

    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        self.p = {"w": w, "b": b}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.p["w"] + self.p["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.g = {"w": self.x.T @ dy, "b": dy.sum(axis=0)}
        return dy @ self.p["w"].T


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and its gradient with respect to ``logits``."""
    n = logits.shape[0]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -float(np.log(p[np.arange(n), labels]).astype(np.float64).sum()) / n
    p[np.arange(n), labels] -= 1
    return loss, p / logits.dtype.type(n)


class LoopLeNet:
    """LeNet-5 as a list of tutorial-style layers over copies of an fnn-layout ``params`` dict."""

    def __init__(self, params: dict[str, Params]) -> None:
        p = {name: {k: v.copy() for k, v in d.items()} for name, d in params.items()}
        self.named: list[tuple[str, Any]] = [
            ("conv2d_0", Conv(**p["conv2d_0"], padding=2)), ("relu_0", ReLU()), ("max_pool2d_0", MaxPool(2)),
            ("conv2d_1", Conv(**p["conv2d_1"])), ("relu_1", ReLU()), ("max_pool2d_1", MaxPool(2)),
            ("flatten_0", Flatten()), ("dense_0", Linear(**p["dense_0"])), ("relu_2", ReLU()),
            ("dense_1", Linear(**p["dense_1"])), ("relu_3", ReLU()), ("dense_2", Linear(**p["dense_2"]))]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for _, layer in self.named:
            x = layer.forward(x)
        return x

    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        """Forward, loss, backward (every layer's dx, as tutorials do), and an in-place SGD update."""
        loss, dy = softmax_cross_entropy(self.forward(x), labels)
        for _, layer in reversed(self.named):
            dy = layer.backward(dy)
        for _, layer in self.named:
            for k, grad in layer.g.items():
                layer.p[k] -= lr * grad
        return loss

    def params(self) -> dict[str, Params]:
        return {name: layer.p for name, layer in self.named}
