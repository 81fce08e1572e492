"""Hostile experiment configs: dictionaries and TOML files."""


from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from inference.experiment.config import config_from_dict, load_config
from tests.hostile.common import (
    HOSTILE_INTS,
    TINY_TOML,
    check_counts,
    corrupted,
    expect_refused_or_ok,
    hostile,
    toml_edits,
)

# ---------------------------------------------------------------- the API: configs


CONFIG_KEYS = {
    "": ["seed", "arms", "world", "base", "finetune", "compare", "bogus"],
    "world": ["num_personas", "vocab_size", "order", "concentration", "corpus_docs", "doc_len", "heldout_contexts",
              "seed", "vocabulary"],
    "base": ["n_layer", "n_head", "n_embd", "steps", "batch_size", "lr", "p_tag", "checkpoint", "layers"],
    "finetune": ["method", "steps", "lr", "batch_size", "snapshots", "rank", "k", "scratch_steps",
                 "prequential_blocks", "prequential_steps", "lora"],
    "compare": ["betas", "bootstrap", "attribution_completions", "attribution_prompt_len", "attribution_samples",
                "attribution_warmup", "attribution_chains", "elpd_docs", "beta"],
    "arms": ["name", "persona", "num_docs", "doc_len", "prompt_len", "concentration", "weight"],
}
HOSTILE_VALUES = st.one_of(
    st.integers(0, 8), st.integers(0, 8), HOSTILE_INTS, st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["", "novel", "full", "lora", "x y", "../../etc", "default", "ckpt"]),
    st.lists(st.one_of(st.integers(-2, 8), st.floats(allow_nan=True)), max_size=4),
    st.just({}), st.just({"a": 1}), st.just([{}]), st.just(10**400),
)


@hostile(500)
@given(st.data())
def test_config_from_dict_refuses_or_validates(data):
    import tomllib

    raw = tomllib.loads(TINY_TOML)
    for _ in range(data.draw(st.integers(1, 3))):
        section = data.draw(st.sampled_from(sorted(CONFIG_KEYS)))
        key = data.draw(st.sampled_from(CONFIG_KEYS[section]))
        value = data.draw(HOSTILE_VALUES)
        if section == "":
            raw[key] = value
        elif section == "arms":
            if isinstance(raw.get("arms"), list) and raw["arms"] and isinstance(raw["arms"][0], dict):
                raw["arms"][0][key] = value
        elif isinstance(raw.get(section), dict):
            raw[section][key] = value
    if data.draw(st.booleans()):
        raw = data.draw(st.sampled_from([raw, [raw], "seed = 1", 5, None]))
    config = expect_refused_or_ok("api:config_from_dict", lambda: config_from_dict(raw))
    if config is not None:
        assert 0 <= config.seed < 2**32 and config.world.num_personas >= 1 and config.arms
        assert all(math.isfinite(b) and b >= 0 for b in config.compare.betas)


@hostile(400)
@given(st.one_of(corrupted(TINY_TOML.encode()), toml_edits().map(str.encode)))
def test_load_config_refuses_corrupt_toml(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment.toml"
        path.write_bytes(data)
        expect_refused_or_ok("api:load_config", lambda: load_config(path))


TARGETS = {"api:config_from_dict": 400, "api:load_config": 320}


def test_cases_tried_are_counted(request):
    """Every target of this module ran at least its number of examples (about 80% of max_examples)."""
    check_counts(TARGETS, globals(), request)
