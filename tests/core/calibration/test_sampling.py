"""Which samples are kept: length rules, concat, seeding, mixing, shortage errors, text windows."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import processors

from autoround.calibration import CalibrationSet, build_calibration_set, windows_from_text


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{(start + k) % 100}" for k in range(n))


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_calibration_set_shape_and_validation() -> None:
    calib = CalibrationSet(torch.zeros(3, 5, dtype=torch.int64))
    assert (calib.nsamples, calib.seqlen) == (3, 5)
    with pytest.raises(ValueError, match="2-D int64"):
        CalibrationSet(torch.zeros(3, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="attention_mask"):
        CalibrationSet(torch.zeros(3, 5, dtype=torch.int64), torch.ones(3, 4))
    with pytest.raises(AttributeError):
        calib.input_ids = torch.zeros(1, 1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("nsamples", "seqlen", "message"),
    [(0, 8, "nsamples must be an integer >= 1, got 0"), (4, 1, "seqlen must be an integer >= 2, got 1")],
)
def test_sizes_are_validated(tiny_tokenizer, nsamples: int, seqlen: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_calibration_set(["w1 w2"], tiny_tokenizer, nsamples=nsamples, seqlen=seqlen)
    with pytest.raises(ValueError, match=message):
        windows_from_text(tiny_tokenizer, words(50), nsamples=nsamples, seqlen=seqlen)


def test_long_samples_keep_their_first_window(tiny_tokenizer) -> None:
    calib = build_calibration_set([words(30, 7)], tiny_tokenizer, nsamples=1, seqlen=5)
    assert tiny_tokenizer.decode(calib.input_ids[0]) == words(5, 7)


def test_seed_makes_the_choice_reproducible(tiny_tokenizer) -> None:
    texts = [words(6, 3 * i) for i in range(30)]
    first = build_calibration_set(texts, tiny_tokenizer, nsamples=8, seqlen=6, seed=3)
    again = build_calibration_set(texts, tiny_tokenizer, nsamples=8, seqlen=6, seed=3)
    other = build_calibration_set(texts, tiny_tokenizer, nsamples=8, seqlen=6, seed=4)
    assert torch.equal(first.input_ids, again.input_ids)
    assert not torch.equal(first.input_ids, other.input_ids)
    assert len({tuple(row.tolist()) for row in first.input_ids}) == 8  # no sample twice


def test_too_few_samples_says_how_many_and_why(tiny_tokenizer) -> None:
    texts = [
        words(8),
        words(8, 10),
        words(3),
        words(2),
        "w1 w5 w5 w5 w5 w5 w5 w5",
    ]  # last token fills the window
    with pytest.raises(ValueError) as info:
        build_calibration_set(texts, tiny_tokenizer, nsamples=4, seqlen=8)
    message = str(info.value)
    assert "found 2 samples, asked for nsamples=4 of seqlen=8 tokens" in message
    assert "2 shorter than seqlen=8 dropped" in message
    assert "1 mostly one repeated token (padding) dropped" in message
    assert "':concat=True'" in message


def test_token_ids_skip_the_padding_filter() -> None:
    calib = build_calibration_set([torch.tensor([7, 0, 0, 0, 0])], None, nsamples=1, seqlen=5)
    assert calib.input_ids[0].tolist() == [7, 0, 0, 0, 0]


def test_concat_rescues_short_texts(tmp_path: Path, tiny_tokenizer) -> None:
    path = write_lines(tmp_path / "short.jsonl", [f'{{"text": "{words(3, 3 * i)}"}}' for i in range(7)])
    with pytest.raises(ValueError, match="found 0 samples"):
        build_calibration_set(path, tiny_tokenizer, nsamples=2, seqlen=10)
    calib = build_calibration_set(f"{path}:concat=True", tiny_tokenizer, nsamples=2, seqlen=10)
    assert sorted(tiny_tokenizer.decode(row) for row in calib.input_ids) == [words(10), words(10, 10)]


def test_concat_moves_bos_and_eos_to_every_window(tmp_path: Path, tiny_tokenizer) -> None:
    tiny_tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    path = write_lines(tmp_path / "short.txt", [words(3, 3 * i) for i in range(4)])  # 12 body tokens
    calib = build_calibration_set(f"{path}:concat", tiny_tokenizer, nsamples=2, seqlen=7)
    body = tiny_tokenizer(words(12), add_special_tokens=False)["input_ids"]
    windows = sorted(calib.input_ids.tolist())
    assert windows == [[1, *body[:5], 2], [1, *body[5:10], 2]]


def test_several_datasets_with_num(tmp_path: Path, tiny_tokenizer) -> None:
    a = write_lines(tmp_path / "a.txt", [words(4, i) for i in range(0, 40, 4)])  # 10 samples, w0..w39
    b = write_lines(tmp_path / "b.txt", [words(4, i) for i in range(50, 90, 4)])  # 10 samples, w50..w89
    calib = build_calibration_set(f"{a}:num=2,{b}", tiny_tokenizer, nsamples=6, seqlen=4, seed=1)
    first_words = [int(tiny_tokenizer.decode(row[:1])[1:]) for row in calib.input_ids]
    assert sum(w < 50 for w in first_words) == 2 and sum(w >= 50 for w in first_words) == 4
    with pytest.raises(ValueError, match="num=12 asked of"):
        build_calibration_set(f"{a}:num=12,{b}", tiny_tokenizer, nsamples=14, seqlen=4)


def test_even_shares_pass_a_small_sources_shortfall_on(tmp_path: Path, tiny_tokenizer) -> None:
    small = write_lines(tmp_path / "small.txt", [words(4, 0)])
    big = write_lines(tmp_path / "big.txt", [words(4, i) for i in range(50, 90, 4)])
    calib = build_calibration_set(f"{big},{small}", tiny_tokenizer, nsamples=6, seqlen=4)
    first_words = sorted(int(tiny_tokenizer.decode(row[:1])[1:]) for row in calib.input_ids)
    assert first_words[0] == 0 and len(first_words) == 6


def test_windows_from_text_follow_the_protocol(tiny_tokenizer) -> None:
    text = words(100)
    ids = tiny_tokenizer(text)["input_ids"]
    calib = windows_from_text(tiny_tokenizer, text, nsamples=16, seqlen=8, seed=0)
    rng = random.Random(0)
    starts = [rng.randint(0, len(ids) - 8 - 1) for _ in range(16)]
    assert calib.input_ids.tolist() == [ids[s : s + 8] for s in starts]
    assert calib.attention_mask is None
    assert torch.equal(calib.input_ids, windows_from_text(tiny_tokenizer, text, 16, 8).input_ids)


def test_windows_from_text_needs_more_tokens_than_seqlen(tiny_tokenizer) -> None:
    assert windows_from_text(tiny_tokenizer, words(9), nsamples=3, seqlen=8).input_ids.shape == (3, 8)
    with pytest.raises(ValueError, match="text has 8 tokens; windows of seqlen=8 need more than 8"):
        windows_from_text(tiny_tokenizer, words(8), nsamples=1, seqlen=8)
