"""Every kind of calibration input, loaded offline: local files, texts, token ids, DataLoaders, Hub."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from torch.utils.data import DataLoader

from autoround.calibration import DatasetUnavailableError, build_calibration_set, parse_spec
from autoround.calibration.sources import render_chat


def words(n: int, start: int = 0) -> str:
    """``n`` distinct-ish vocabulary words of the tiny tokenizer (w0..w99), one token each."""
    return " ".join(f"w{(start + k) % 100}" for k in range(n))


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep datasets' JSON cache out of the user's home."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_txt_one_sample_per_non_empty_line(tmp_path: Path, tiny_tokenizer) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(f"{words(10, 0)}\n\n{words(3)}\n{words(8, 30)}\n   \n{words(12, 50)}\n")
    calib = build_calibration_set(str(path), tiny_tokenizer, nsamples=3, seqlen=8, seed=1)
    assert calib.input_ids.shape == (3, 8) and calib.input_ids.dtype == torch.int64
    firsts = sorted(tiny_tokenizer.decode(row[:1]) for row in calib.input_ids)
    assert firsts == ["w0", "w30", "w50"]  # the 3-token line is dropped, longer ones truncated


def test_txt_concat_takes_the_whole_file(tmp_path: Path, tiny_tokenizer) -> None:
    path = tmp_path / "calib.txt"
    path.write_text(f"{words(3)}\n{words(3, 3)}\n{words(4, 6)}\n")  # 10 tokens in short lines
    calib = build_calibration_set(f"{path}:concat", tiny_tokenizer, nsamples=2, seqlen=5)
    got = sorted(tiny_tokenizer.decode(row) for row in calib.input_ids)
    assert got == [words(5), words(5, 5)]


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_and_jsonl_text_field(
    tmp_path: Path, tiny_tokenizer, monkeypatch: pytest.MonkeyPatch, suffix: str, offline: bool
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    rows = [{"text": words(6, 10 * i), "id": i} for i in range(4)] + [{"text": "w1 w2", "id": 9}]
    path = tmp_path / f"calib{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(row) for row in rows))
    calib = build_calibration_set(str(path), tiny_tokenizer, nsamples=4, seqlen=6)
    assert calib.input_ids.shape == (4, 6)
    with pytest.raises(ValueError, match="found 4 samples, asked for nsamples=5"):
        build_calibration_set(str(path), tiny_tokenizer, nsamples=5, seqlen=6)


def test_json_without_text_field(tmp_path: Path, tiny_tokenizer) -> None:
    path = tmp_path / "calib.jsonl"
    path.write_text(json.dumps({"content": words(6)}))
    with pytest.raises(DatasetUnavailableError, match="no 'text' field"):
        build_calibration_set(str(path), tiny_tokenizer, nsamples=1, seqlen=4)


def test_missing_local_file(tmp_path: Path, tiny_tokenizer) -> None:
    with pytest.raises(DatasetUnavailableError, match="calibration file not found"):
        build_calibration_set(str(tmp_path / "nope.txt"), tiny_tokenizer, nsamples=1, seqlen=4)


def test_split_on_a_local_file_is_refused(tmp_path: Path, tiny_tokenizer) -> None:
    path = tmp_path / "a.txt"
    path.write_text(words(8))
    with pytest.raises(DatasetUnavailableError, match="split= applies to Hub datasets only"):
        build_calibration_set(f"{path}:split=train", tiny_tokenizer, nsamples=1, seqlen=4)


def test_list_of_strings(tiny_tokenizer) -> None:
    texts = [words(9, 20 * i) for i in range(5)] + ["the of"]
    calib = build_calibration_set(texts, tiny_tokenizer, nsamples=5, seqlen=9)
    assert sorted(calib.input_ids[:, 0].tolist()) == [
        tiny_tokenizer.convert_tokens_to_ids(f"w{20 * i}") for i in range(5)
    ]
    assert calib.attention_mask is None


def test_list_of_token_tensors_and_lists() -> None:
    data = [torch.arange(10), list(range(100, 108)), torch.arange(3), torch.arange(50, 60).view(1, 10)]
    calib = build_calibration_set(data, None, nsamples=3, seqlen=8, seed=0)
    assert sorted(calib.input_ids[:, 0].tolist()) == [0, 50, 100]  # arange(3) is too short
    assert torch.equal(calib.input_ids[calib.input_ids[:, 0] == 0][0], torch.arange(8))


def test_one_batch_tensor() -> None:
    calib = build_calibration_set(torch.arange(40).view(4, 10), None, nsamples=4, seqlen=10)
    assert sorted(calib.input_ids[:, 0].tolist()) == [0, 10, 20, 30]


def test_dataloader_of_dicts_keeps_attention_mask() -> None:
    rows = [
        {"input_ids": torch.arange(i, i + 6), "attention_mask": torch.ones(6, dtype=torch.int64)}
        for i in range(4)
    ]
    rows[2]["attention_mask"][-2:] = 0
    loader = DataLoader(rows, batch_size=2)
    calib = build_calibration_set(loader, None, nsamples=4, seqlen=5)
    assert calib.attention_mask is not None and calib.attention_mask.shape == (4, 5)
    padded = calib.attention_mask[calib.input_ids[:, 0] == 2][0]
    assert padded.tolist() == [1, 1, 1, 1, 0]


def test_dataloader_of_tensors() -> None:
    loader = DataLoader(torch.arange(60).view(6, 10), batch_size=4)
    calib = build_calibration_set(loader, None, nsamples=6, seqlen=10)
    assert sorted(calib.input_ids[:, 0].tolist()) == list(range(0, 60, 10))


def test_dict_without_input_ids() -> None:
    with pytest.raises(TypeError, match="no 'input_ids'"):
        build_calibration_set([{"ids": torch.arange(4)}], None, nsamples=1, seqlen=4)


def test_float_token_ids_are_refused() -> None:
    with pytest.raises(TypeError, match="must be integers"):
        build_calibration_set([torch.rand(8)], None, nsamples=1, seqlen=4)


def test_text_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer is needed"):
        build_calibration_set(["w1 w2 w3"], None, nsamples=1, seqlen=2)


def test_hub_unreachable_gives_a_clear_error(tiny_tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'NeelNanda/pile-10k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        build_calibration_set("pile-10k", tiny_tokenizer, nsamples=1, seqlen=4)
    message = str(info.value)
    assert "'NeelNanda/pile-10k'" in message and "ConnectionError" in message
    assert "local .txt/.json/.jsonl path, a list of strings, or a list of token-id tensors" in message
    assert isinstance(info.value.__cause__, ConnectionError)


def test_hub_dataset_is_loaded_through_datasets(tiny_tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict(
            {"text": [words(7, 10 * i) for i in range(6)], "meta": list(range(6))}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake)
    calib = build_calibration_set("pile-10k", tiny_tokenizer, nsamples=6, seqlen=7)
    assert calib.input_ids.shape == (6, 7)
    build_calibration_set("org/other:split=train+test", tiny_tokenizer, nsamples=2, seqlen=7)
    assert calls == [("NeelNanda/pile-10k", "train"), ("org/other", "train+test")]


def test_chat_template_through_a_spec(tmp_path: Path, tiny_tokenizer) -> None:
    tiny_tokenizer.chat_template = (
        "{% for m in messages %}{% if m.role == 'system' %}of {% endif %}{{ m.content }} {% endfor %}"
        "{% if add_generation_prompt %}the{% endif %}"
    )
    path = tmp_path / "chat.txt"
    path.write_text(f"{words(4)}\n")
    body = tiny_tokenizer(words(4))["input_ids"]
    the, of = tiny_tokenizer.convert_tokens_to_ids(["the", "of"])
    system = build_calibration_set(f'{path}:system_prompt="w90 w91"', tiny_tokenizer, nsamples=1, seqlen=8)
    assert system.input_ids[0].tolist() == [of, *tiny_tokenizer("w90 w91")["input_ids"], *body, the]
    no_system = build_calibration_set(f'{path}:system_prompt=""', tiny_tokenizer, nsamples=1, seqlen=5)
    assert no_system.input_ids[0].tolist() == [*body, the]


def test_default_system_prompt_is_intels(tiny_tokenizer) -> None:
    tiny_tokenizer.chat_template = "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
    (rendered,) = render_chat(tiny_tokenizer, ["hi"], parse_spec("a:apply_chat_template")[0].system_prompt)
    assert rendered == "system=You are a helpful assistant.;user=hi;"


def test_the_shipped_wikitext2_alias_needs_no_network(tiny_tokenizer) -> None:
    from autoround.calibration import build_calibration_set

    calib = build_calibration_set("wikitext2:concat", tiny_tokenizer, nsamples=4, seqlen=64, seed=0)
    assert calib.input_ids.shape == (4, 64)
