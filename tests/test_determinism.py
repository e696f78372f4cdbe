"""Same seeds, same everything: a short training run repeated gives bitwise-identical params."""

import numpy as np

from fnn import random, serial, tree
from fnn.data import batches
from fnn.layers import Dense, ReLU
from fnn.losses import l2_penalty, softmax_cross_entropy
from fnn.optim import sgd


def train(seed):
    k_data, k_init, k_order = random.split(random.key(seed), 3)
    kx, ky = random.split(k_data)
    x = random.normal(kx, (96, 6))
    y = random.permutation(ky, 96) % 3
    net = serial(Dense(16), ReLU(), Dense(16), ReLU(), Dense(3))
    params = net.init(k_init, (6,))
    opt = sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    state = opt.init(params)
    losses = []
    for epoch in range(3):
        for xb, yb in batches(random.fold_in(k_order, epoch), (x, y), batch_size=16, drop_last=True):
            logits, vjp = net.apply(params, xb, train=True)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            penalty, dpenalty = l2_penalty(params, 1e-3)
            grads, _ = vjp(dlogits, need_dx=False)
            params, state = opt.update(params, tree.add(grads, dpenalty), state)
            losses.append(loss + penalty)
    return params, state, losses


def test_two_identical_training_runs_are_bitwise_identical():
    (p1, s1, l1), (p2, s2, l2) = train(0), train(0)
    assert l1 == l2
    assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes()
               for a, b in zip(tree.leaves((p1, s1)), tree.leaves((p2, s2)), strict=True))
    assert int(s1["step"]) == 3 * 6
    assert np.mean(l1[-6:]) < np.mean(l1[:6])  # it trained
    p3, _, _ = train(1)
    assert not tree.allclose(p1, p3)
