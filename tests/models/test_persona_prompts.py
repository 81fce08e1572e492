"""Persona prompt files (TOML or JSON)."""

import json

import pytest

from models.errors import InputError
from models.persona_prompts import PersonaPrompt, load_persona_prompts, persona_prompts_from


def test_toml_with_a_template_and_an_own_prompt(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('template = "Written by {name}:\\n"\n[[personas]]\nname = "A"\n'
                    '[[personas]]\nname = "B"\nprompt = "B speaks.\\n"\n')
    assert load_persona_prompts(path) == (PersonaPrompt("A", "Written by A:\n"), PersonaPrompt("B", "B speaks.\n"))


def test_json_object_and_bare_list(tmp_path):
    entries = [{"name": "A", "prompt": "a:"}, {"name": "B", "prompt": "b:"}]
    (tmp_path / "p.json").write_text(json.dumps({"personas": entries}))
    (tmp_path / "q.json").write_text(json.dumps(entries))
    assert load_persona_prompts(tmp_path / "p.json") == load_persona_prompts(tmp_path / "q.json")
    assert [p.name for p in load_persona_prompts(tmp_path / "q.json")] == ["A", "B"]


@pytest.mark.parametrize("raw, match", [
    ({}, "non-empty list"),
    ({"personas": []}, "non-empty list"),
    ({"personas": [{"prompt": "x"}]}, r"personas\[0\].name"),
    ({"personas": [{"name": "A"}]}, r"personas\[0\].prompt"),
    ({"personas": [{"name": "A", "prompt": "x", "colour": 1}]}, "colour"),
    ({"personas": [{"name": "A", "prompt": "x"}, {"name": "A", "prompt": "y"}]}, "more than once"),
    ({"template": "no placeholder", "personas": [{"name": "A"}]}, "template"),
    ({"persona": []}, "persona"),
    ({"personas": ["A"]}, "table"),
])
def test_bad_prompt_documents_name_the_entry_in_one_line(raw, match):
    with pytest.raises(InputError, match=match) as err:
        persona_prompts_from(raw)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_persona_prompts(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[[personas]\nname=")
    with pytest.raises(InputError, match="not valid TOML"):
        load_persona_prompts(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_persona_prompts(tmp_path / "bad.json")
