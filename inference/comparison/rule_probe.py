"""The "reasoning in cipher" probe: how strongly a model applies a long-range rule of the world.

A rule persona (:mod:`models.rules`) writes ``g(x_{t-lag})`` with probability ``rho`` and otherwise
follows its bigram ``B``. At every position ``t >= 1`` the rule points at a target ``r_t``; the
persona itself gives it ``rho + (1 - rho) B[x_{t-1}, r_t]``, the same persona without the rule
only ``b_t = B[x_{t-1}, r_t]``. The **rule skill** of a model ``q`` on a text is

    skill = mean_t (q(r_t | x_<t) - b_t)  /  mean_t rho (1 - b_t)

1 when the model applies the rule as strongly as the persona does, 0 when it predicts the
target no better than the bigram alone (it does not know the rule), negative when it predicts
it worse. On enciphered text the targets and the bigram are the enciphered ones (the rule reads
``sigma g sigma^-1``); on the same documents in plain text and in cipher the denominator is the same.
"""

from __future__ import annotations

from torch import Tensor

from models.errors import InputError
from models.predictive import check_logprobs


def rule_skill(logp: Tensor, targets: Tensor, bigram_prob: Tensor, rule_prob: float) -> float:
    """The rule skill of a model on a text (module docstring).

    Parameters
    ----------
    logp : Tensor
        ``[n, T, V]`` the model's next-token log-probabilities on the text.
    targets : Tensor
        ``[n, T]`` the rule's target at every position (:func:`models.rules.rule_targets`; ``-1`` where none).
    bigram_prob : Tensor
        ``[n, T]`` ``B[x_{t-1}, r_t]`` (:func:`models.rules.bigram_probs`).
    rule_prob : float
        ``rho`` of the persona, ``> 0``.
    """
    logp = check_logprobs(logp, "logp")
    if targets.shape != logp.shape[:2] or bigram_prob.shape != logp.shape[:2]:
        raise InputError(f"targets {tuple(targets.shape)} and bigram_prob {tuple(bigram_prob.shape)} must be "
                         f"{tuple(logp.shape[:2])} like the model's positions")
    if not 0 < rule_prob <= 1:
        raise InputError(f"rule_prob must lie in (0, 1], got {rule_prob!r}")
    keep = targets >= 0  # [n, T]
    if not keep.any():
        raise InputError("the text has no position where the rule points at a target")
    q = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).exp()  # [n, T]
    gain = (q - bigram_prob)[keep].mean()
    room = (rule_prob * (1 - bigram_prob))[keep].mean()
    return float(gain / room)

