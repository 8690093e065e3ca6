"""Small data files shipped with autoround, so that the demo evaluates with no network.

``wikitext2_test_head.txt`` is the head of WikiText-2's raw test split (``wiki.test.raw``),
byte for byte (with its ``\\r\\n`` line endings): long enough to hold the first 20 windows of
2048 SmolLM2 tokens, the same tokens as the full file's first 20 windows, which is what the
cpu-small protocol evaluates. ``wikitext2_valid.txt`` is WikiText-2's validation split in its
word-level form, the calibration text of the cpu-small protocol (the spec alias ``wikitext2``).
WikiText is CC BY-SA 3.0; see ``LICENSE-wikitext.txt``.
"""

from __future__ import annotations

from pathlib import Path

_DATA_DIR = Path(__file__).resolve().parent
EVAL_TEXT_NAME = "wikitext2_test_head.txt"
EVAL_TEXT_WINDOWS = 20
"""Full 2048-token SmolLM2 windows the shipped evaluation text is guaranteed to hold."""


def default_eval_text_path() -> Path:
    """Path of the shipped evaluation text (the head of wikitext-2-raw ``wiki.test.raw``)."""
    path = _DATA_DIR / EVAL_TEXT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped evaluation text {str(path)!r} is missing; reinstall autoround-core"
        )
    return path


CALIBRATION_TEXT_NAME = "wikitext2_valid.txt"


def default_calibration_text_path() -> Path:
    """Path of the shipped calibration text (WikiText-2 validation split, word-level)."""
    return _DATA_DIR / CALIBRATION_TEXT_NAME
