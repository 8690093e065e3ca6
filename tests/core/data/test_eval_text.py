"""The shipped evaluation text: a byte prefix of wiki.test.raw holding the first 20 SmolLM2 windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoround.data import EVAL_TEXT_WINDOWS, default_eval_text_path

WIKI_TEST_RAW = (
    Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"
)
SEQLEN = 2048

needs_wikitext = pytest.mark.skipif(not WIKI_TEST_RAW.is_file(), reason=f"{WIKI_TEST_RAW} is not here")


def test_shipped_text_and_license_exist():
    path = default_eval_text_path()
    assert path.name == "wikitext2_test_head.txt"
    assert path.read_bytes().endswith(b"\r\n")  # cut after a whole line
    license_text = (path.parent / "LICENSE-wikitext.txt").read_text()
    assert "CC BY-SA 3.0" in license_text and "Pointer Sentinel Mixture Models" in license_text


@needs_wikitext
def test_shipped_text_is_a_byte_prefix_of_wiki_test_raw():
    head = default_eval_text_path().read_bytes()
    assert WIKI_TEST_RAW.read_bytes().startswith(head)


@pytest.mark.slow
@needs_wikitext
def test_first_windows_are_the_full_files_windows():
    from autoround.model_sources import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer("smollm2")
    head_ids = tokenizer(default_eval_text_path().read_text(encoding="utf-8")).input_ids
    full_ids = tokenizer(WIKI_TEST_RAW.read_text(encoding="utf-8")).input_ids
    n = EVAL_TEXT_WINDOWS * SEQLEN
    assert len(head_ids) >= n
    assert head_ids[:n] == full_ids[:n]
