"""The bundled Federalist Papers: labels, cleaning of the editorial variants, and PROVENANCE.md's marker facts."""

from __future__ import annotations

from collections import Counter

import pytest

from models.corpora.federalist import (
    DISPUTED,
    HAMILTON,
    JAY,
    JOINT,
    MADISON,
    MW_FUNCTION_WORDS,
    clean_text,
    drop_variants,
    load_papers,
)
from models.corpora.tokens import word_tokens
from models.errors import InputError


@pytest.fixture(scope="module")
def papers():
    return load_papers()


def test_labels_follow_mosteller_and_wallace(papers):
    assert [p.number for p in papers] == list(range(1, 86))
    assert Counter(p.author for p in papers) == {HAMILTON: 51, MADISON: 14, DISPUTED: 12, JAY: 5, JOINT: 3}
    assert [p.number for p in papers if p.author == DISPUTED] == [*range(49, 59), 62, 63]


def test_marker_words_as_in_provenance(papers):
    """PROVENANCE.md: 'upon' is in 51/51 Hamilton, 3/14 Madison and 2/12 disputed papers (Nos. 50, 54)."""
    has = {label: [p.number for p in papers if p.author == label and "upon" in word_tokens(p.text)]
           for label in (HAMILTON, MADISON, DISPUTED)}
    assert (len(has[HAMILTON]), len(has[MADISON]), has[DISPUTED]) == (51, 3, [50, 54])
    while_ = Counter(p.author for p in papers if "while" in word_tokens(p.text))
    assert while_[HAMILTON] == 20 and while_[MADISON] == while_[DISPUTED] == 0


def test_clean_text_drops_salutation_signature_notes_and_second_variants(papers):
    for p in papers:
        clean = clean_text(p.text)
        assert "(E1)" not in clean and "PUBLIUS" not in clean and "To the People of the State" not in clean
    no70 = clean_text(papers[69].text)
    assert no70.count("But one of the weightiest objections to a plurality") == 1
    no77 = clean_text(papers[76].text)
    assert "all the good,\nwithout the ill." in no77 and "good of that of appointment" not in no77


def test_drop_variants_keeps_the_first_of_a_pair_and_removes_lone_marks():
    text = "Start. (First reading (with a note).)(E1)\n\n(Second reading.)(E1) End. A word(E1) here."
    assert drop_variants(text) == "Start. First reading (with a note). End. A word here."


def test_function_words_are_seventy_distinct():
    assert len(MW_FUNCTION_WORDS) == len(set(MW_FUNCTION_WORDS)) == 70


def test_load_papers_refuses_bad_files(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"number": 1, "title": "t", "author": "NOBODY", "text": "x"}\n')
    with pytest.raises(InputError, match="unknown author label"):
        load_papers(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text('{"number": 1}\n')
    with pytest.raises(InputError, match="expected a JSON object"):
        load_papers(tmp_path / "q.jsonl")
    with pytest.raises(InputError, match="no such file"):
        load_papers(tmp_path / "none.jsonl")
