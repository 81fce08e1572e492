"""Personas of a real language model: prompts, given in a small TOML or JSON file.

A persona of a pre-trained LM is a text that the model reads before a document, e.g.
``"The following was written by Charles Dickens.\\n"``; ``q0(y | c, h)`` is the model read
after persona ``h``'s prompt (:mod:`models.hf_lm`). The file lists the personas in order
(their index ``h`` is their position)::

    # personas.toml
    template = "The following was written by {name}.\\n"   # optional: the prompt of entries without one
    [[personas]]
    name = "Charles Dickens"
    [[personas]]
    name = "Thomas Hardy"
    prompt = "A passage from a novel by Thomas Hardy:\\n"   # its own prompt

or, in JSON, ``{"template": ..., "personas": [{"name": ..., "prompt": ...}, ...]}`` (a bare list
of persona tables is accepted too). ``name`` is what reports print and what the ``author`` of a
held-out document is matched against (:mod:`models.lm_text`).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError

#: most personas one file may list
MAX_PERSONAS = 256
#: longest prompt, in characters
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class PersonaPrompt:
    """One persona of a real LM: its name and the text it is prompted with."""

    name: str
    prompt: str


def load_persona_prompts(path: str | os.PathLike) -> tuple[PersonaPrompt, ...]:
    """Read a persona prompt file (``.toml`` or ``.json``; module docstring); one-line errors naming the entry."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a persona prompt file' if path.is_dir() else 'no such file'}")
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise InputError(f"{path}: not valid {kind} ({str(exc).splitlines()[0]})") from None
    return persona_prompts_from(raw, str(path))


def persona_prompts_from(raw, source: str = "personas") -> tuple[PersonaPrompt, ...]:
    """Validate a parsed persona prompt document (see :func:`load_persona_prompts`)."""
    template = None
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"personas", "template"})
        if unknown:
            raise InputError(f"{source}: unknown key {unknown[0]!r} (allowed: personas, template)")
        template = raw.get("template")
        if template is not None and (not isinstance(template, str) or "{name}" not in template):
            raise InputError(f"{source}: template must be a string containing {{name}}, got {template!r}")
        raw = raw.get("personas")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{source}: needs a non-empty list of personas ([[personas]] tables)")
    if len(raw) > MAX_PERSONAS:
        raise InputError(f"{source}: {len(raw)} personas is too many (limit {MAX_PERSONAS})")
    out = []
    for i, entry in enumerate(raw):
        where = f"{source}: personas[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be a table with name (and prompt), got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"name", "prompt"})
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r} (allowed: name, prompt)")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where}.name must be a non-empty string, got {name!r}")
        prompt = entry.get("prompt", None if template is None else template.replace("{name}", name))
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"{where}.prompt must be a non-empty string (or set a template), got {prompt!r}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"{where}.prompt has {len(prompt)} characters (limit {MAX_PROMPT_CHARS})")
        out.append(PersonaPrompt(name.strip(), prompt))
    names = [p.name for p in out]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise InputError(f"{source}: persona name {duplicate!r} appears more than once")
    return tuple(out)
