"""The Markov persona as a Pyro distribution over whole documents.

``MarkovChain(log_table, ...)`` has batch shape ``log_table.shape[:-1]`` and
event shape ``[T]``. It samples documents token by token (vectorised over the
batch) and scores them through the sufficient statistics of
:mod:`models.counts`: when the caller hands over precomputed
:class:`~models.counts.TransitionCounts`, ``log_prob`` never touches the
tokens again, so its cost does not grow with the number of evidence tokens.

Scoring is *tempered*: ``log_prob = beta * sum_t mask_t * log p(x_t | ctx_t)``.
With ``beta != 1`` or a partial mask this is a likelihood term, not a
normalised density over documents; sampling always draws whole documents.
"""

from __future__ import annotations

import torch
from pyro.distributions import Categorical, TorchDistribution, constraints
from torch import Tensor

from models.counts import TransitionCounts, feature_index

_NO_SHAPE = torch.Size()  # default sample shape (one draw)


class MarkovChain(TorchDistribution):
    """Documents of ``doc_len`` tokens from order-``order`` Markov personas.

    Parameters
    ----------
    log_table : Tensor
        ``[..., F]`` flat log tables (``F = V + V**order * V``), see
        :meth:`models.personas.MarkovPersonas.log_table`.
    vocab_size, order, doc_len : int
        ``V``, the Markov order, and ``T``.
    mask : Tensor, optional
        ``[..., T]`` bool, the tokens that are scored (default: all).
    beta : float
        Tempering exponent of the likelihood.
    counts : TransitionCounts, optional
        Precomputed statistics of the observed documents (mask applied);
        ``log_prob`` then scores them and reads only the shape of its value.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(
        self,
        log_table: Tensor,
        vocab_size: int,
        order: int,
        doc_len: int,
        *,
        mask: Tensor | None = None,
        beta: float = 1.0,
        counts: TransitionCounts | None = None,
        validate_args: bool | None = None,
    ):
        self.log_table = log_table
        self.vocab_size, self.order, self.doc_len = vocab_size, order, doc_len
        self.mask, self.beta, self.counts = mask, float(beta), counts
        super().__init__(log_table.shape[:-1], torch.Size([doc_len]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.vocab_size - 1), 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MarkovChain, _instance)
        batch_shape = torch.Size(batch_shape)
        new.log_table = self.log_table.expand(batch_shape + self.log_table.shape[-1:])
        new.vocab_size, new.order, new.doc_len = self.vocab_size, self.order, self.doc_len
        new.mask, new.beta, new.counts = self.mask, self.beta, self.counts
        super(MarkovChain, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=_NO_SHAPE) -> Tensor:
        """Draw documents: ``sample_shape + batch_shape + [T]`` int64."""
        shape = torch.Size(sample_shape) + self.batch_shape
        V, n, T = self.vocab_size, self.order, self.doc_len
        table = self.log_table.detach().expand(shape + self.log_table.shape[-1:])  # [..., F]
        trans = table[..., V:].reshape(shape + (V**n, V))  # [..., C, V]
        x = torch.empty(shape + (T,), dtype=torch.long)
        x[..., 0] = Categorical(logits=table[..., :V]).sample()
        for t in range(1, T):  # sequential by nature; vectorised over documents
            ctx = torch.zeros(shape, dtype=torch.long)
            for j in range(n):
                ctx = ctx * V + x[..., max(t - n + j, 0)]
            logits = trans.gather(-2, ctx[..., None, None].expand(shape + (1, V))).squeeze(-2)  # [..., V]
            x[..., t] = Categorical(logits=logits).sample()
        return x

    def log_prob(self, value: Tensor) -> Tensor:
        """Tempered, masked log-likelihood of documents: ``broadcast(batch, value.shape[:-1])``."""
        if self.counts is not None:
            lp = self.counts.loglik(self.log_table)  # [..., D]
        else:
            lp = self._token_log_prob(value)
        if self.beta == 0:
            return torch.zeros_like(lp)  # 0 * log(0) would be NaN
        return self.beta * lp

    def _token_log_prob(self, value: Tensor) -> Tensor:
        T = value.shape[-1]
        features = feature_index(value.reshape(-1, T), self.vocab_size, self.order).reshape(value.shape)
        batch = torch.broadcast_shapes(self.batch_shape, value.shape[:-1])
        table = self.log_table.expand(batch + self.log_table.shape[-1:])  # [..., F]
        lp = table.gather(-1, features.expand(batch + (T,)))  # [..., T]
        if self.mask is not None:
            lp = torch.where(self.mask, lp, torch.zeros((), dtype=lp.dtype))
        return lp.sum(-1)
