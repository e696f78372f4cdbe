"""The small GPT the interop and parity tests build twice, in PyTorch and in fnn, with the same
module names (so ``fnn.interop`` pairs them)."""

from typing import Any

import numpy as np

import fnn
from fnn.layers import Dense, Embedding, LayerNorm, PositionEmbedding, TransformerEncoderLayer


def torch_gpt(torch: Any, vocab: int, length: int, e: int, heads: int, layers: int, tied: bool = True) -> Any:
    """A GPT in PyTorch, float64: token and position tables, ``layers`` causal pre-LN GELU blocks of
    ``heads`` heads and MLP ``4 e``, a final LayerNorm, a bias-free head tied (``tied``) to the table."""
    nn = torch.nn

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, e)
            self.pos = nn.Embedding(length, e)
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(e, heads, 4 * e, dropout=0.0, activation="gelu",
                                                                   batch_first=True, norm_first=True)
                                        for _ in range(layers))
            self.ln_f = nn.LayerNorm(e)
            self.head = nn.Linear(e, vocab, bias=False)
            if tied:
                self.head.weight = self.tok.weight

        def forward(self, idx):
            t = idx.shape[1]
            h = self.tok(idx) + self.pos(torch.arange(t))
            mask = torch.tensor(~np.tri(t, dtype=bool))
            for block in self.blocks:
                h = block(h, src_mask=mask, is_causal=True)
            return self.head(self.ln_f(h))

    return GPT().double()


def fnn_gpt(vocab: int, length: int, e: int, heads: int, layers: int, embedding_init: Any = None) -> fnn.Layer:
    """The same GPT in fnn, its output layer tied to the token table with ``fnn.tie``."""
    blocks = [(f"blocks.{i}", TransformerEncoderLayer(heads, 4 * e, dropout=0.0, activation="gelu", norm_first=True,
                                                      causal=True)) for i in range(layers)]
    tok = Embedding(vocab, e) if embedding_init is None else Embedding(vocab, e, w_init=embedding_init)
    net = fnn.serial(("tok", tok), ("pos", PositionEmbedding(length)), *blocks,
                     ("ln_f", LayerNorm()), ("head", Dense(vocab, bias=False)))
    return fnn.tie(net, target="head/w", source="tok/weight", transpose=True)
