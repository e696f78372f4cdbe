"""Same init, same curve: a GPT built in fnn and the same GPT built in PyTorch, started from the
same weights (ported with ``fnn.interop``) and trained on the same batches with AdamW in float64,
give the same loss at every one of 50 steps and end with the same weights.

The model: token embedding + learned position embedding, 2 causal pre-LN encoder blocks with
exact GELU, a final LayerNorm, the output projection tied to the token embedding. Dropout 0.
The loss is fnn's ``softmax_cross_entropy`` on ``(N, T, C)`` logits against torch's
``F.cross_entropy`` on the logits with the classes moved to axis 1, with ``ignore_index``.
Skips cleanly without torch.
"""

from functools import partial

import gpt_models
import numpy as np
import pytest

import fnn
from fnn.interop import from_torch_state_dict, to_torch_state_dict

torch = pytest.importorskip("torch")

VOCAB, T, E, HEADS, LAYERS, BATCH, STEPS = 13, 8, 16, 2, 2, 4, 50
IGNORE = -100  # torch's default ignore_index
LR, BETAS, EPS, WEIGHT_DECAY = 1e-2, (0.9, 0.99), 1e-8, 0.1
LOSS_TOL = 1e-9  # both absolute and relative, at every step (losses run from 2.6 down to about 0.7)


def torch_gpt():
    torch.manual_seed(0)
    model = gpt_models.torch_gpt(torch, VOCAB, T, E, HEADS, LAYERS)
    with torch.no_grad():  # GPT-2's init for the tables (fnn's defaults), non-trivial biases and LayerNorms
        model.tok.weight.normal_(0.0, 0.02)
        model.pos.weight.normal_(0.0, 0.02)
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def fnn_gpt():
    return gpt_models.fnn_gpt(VOCAB, T, E, HEADS, LAYERS, embedding_init=partial(fnn.init.normal, std=0.02))


def batches():
    """``STEPS`` batches of (inputs, targets): windows counting up by a stride of 1 or 2 (mod
    ``VOCAB``) from random starts, so there is something to learn; targets shifted by one, a few
    ignored."""
    r = np.random.default_rng(0)
    for _ in range(STEPS):
        start, stride = r.integers(0, VOCAB, (BATCH, 1)), r.integers(1, 3, (BATCH, 1))
        tokens = (start + stride * np.arange(T + 1)) % VOCAB
        targets = tokens[:, 1:].copy()
        targets[r.random(targets.shape) < 0.1] = IGNORE
        yield tokens[:, :-1], targets


def sequence_loss(logits, targets):
    return fnn.losses.softmax_cross_entropy(logits, targets, ignore_index=IGNORE)


@pytest.mark.parametrize("decay", ["all", "matrices"])
def test_fnn_and_torch_gpts_trained_with_adamw_follow_the_same_loss_curve(decay):
    """``decay="all"``: torch's AdamW decays every parameter, as fnn's does without a mask.
    ``"matrices"``: torch's param groups (decay for ``ndim >= 2``, none otherwise) against fnn's
    ``decay_mask=fnn.optim.weights_only``."""
    tm = torch_gpt()
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    gpt = fnn_gpt()
    params, _ = from_torch_state_dict(gpt, sd, (T,), np.float64)

    if decay == "all":
        t_opt = torch.optim.AdamW(tm.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
        opt = fnn.optim.adamw(LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    else:
        matrices = [p for p in tm.parameters() if p.ndim >= 2]
        vectors = [p for p in tm.parameters() if p.ndim < 2]
        t_opt = torch.optim.AdamW([{"params": matrices, "weight_decay": WEIGHT_DECAY},
                                   {"params": vectors, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)
        opt = fnn.optim.adamw(LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, decay_mask=fnn.optim.weights_only)
    opt_state = opt.init(params)
    loss_and_grads = fnn.training.value_and_grad(gpt, sequence_loss)

    ours, theirs = [], []
    for step, (x, y) in enumerate(batches()):
        loss, grads, _, logits = loss_and_grads(params, x, y, key=fnn.random.key(step))
        assert logits.shape == (BATCH, T, VOCAB) and logits.dtype == np.float64
        params, opt_state = opt.update(params, grads, opt_state)
        ours.append(loss)

        t_opt.zero_grad()
        t_logits = tm(torch.tensor(x))
        t_loss = torch.nn.functional.cross_entropy(t_logits.permute(0, 2, 1), torch.tensor(y), ignore_index=IGNORE)
        t_loss.backward()
        t_opt.step()
        theirs.append(t_loss.item())

    ours, theirs = np.array(ours), np.array(theirs)
    assert ours[-5:].mean() < ours[:5].mean() - 0.3  # it learns: the curve is not flat
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=LOSS_TOL)  # measured: 4e-14
    np.testing.assert_allclose(ours, theirs, rtol=LOSS_TOL, atol=0)
    final = to_torch_state_dict(gpt, params, (T,))
    t_final = tm.state_dict()
    assert set(final) == set(t_final)
    for name, value in final.items():
        np.testing.assert_allclose(value, t_final[name].numpy(), rtol=0, atol=1e-9, err_msg=name)  # measured: 4e-11
