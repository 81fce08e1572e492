"""The rule probe: 1 for the persona itself, 0 for the same persona without its rule, in plain text and
in cipher alike; bad input refused."""

import pytest
import torch

from inference.comparison.rule_probe import rule_skill
from models.ciphers import cipher_permutation, encipher, encipher_personas
from models.errors import InputError
from models.mixture import simulate_corpus
from models.predictive import persona_logprobs
from models.rules import bigram_probs, conjugate_rule, rule_map, rule_personas, rule_targets

V, LAG, RHO = 6, 2, 0.4


@pytest.mark.parametrize("cipher", ["none", "random3"])
def test_the_persona_scores_one_and_the_persona_without_its_rule_zero(cipher):
    personas, bigram = rule_personas(1, V, lag=LAG, rule_prob=RHO, shift=1, seed=0)
    no_rule, _ = rule_personas(1, V, lag=LAG, rule_prob=0.0, shift=1, seed=0)  # the same bigram, no rule
    sigma = cipher_permutation(cipher, V)
    inv = torch.argsort(sigma)
    plain, _ = simulate_corpus(personas, 20, 10, seed=1)
    text = encipher(plain, sigma)
    targets = rule_targets(text, LAG, conjugate_rule(rule_map(V, 1), sigma))
    b = bigram_probs(bigram[0][inv][:, inv], text, targets)
    for persona, expected in ((personas, 1.0), (no_rule, 0.0)):
        logp = persona_logprobs(encipher_personas(persona, sigma), text)[0]
        assert rule_skill(logp, targets, b, RHO) == pytest.approx(expected, abs=1e-12)


def test_bad_input_is_refused():
    logp = torch.full((2, 5, V), -1.0, dtype=torch.float64).log_softmax(-1)
    targets = torch.zeros(2, 5, dtype=torch.long)
    b = torch.zeros(2, 5, dtype=torch.float64)
    with pytest.raises(InputError, match="targets"):
        rule_skill(logp, targets[:, :3], b, RHO)
    with pytest.raises(InputError, match="rule_prob"):
        rule_skill(logp, targets, b, 0.0)
    with pytest.raises(InputError, match="no position"):
        rule_skill(logp, torch.full_like(targets, -1), b, RHO)
