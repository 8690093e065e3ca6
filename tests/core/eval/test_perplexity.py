"""Perplexity by the benchmark protocol, checked against plain-torch and closed-form references."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from autoround.eval import PerplexityResult, perplexity_of_file, perplexity_of_ids, perplexity_of_text

VOCAB = 256
SEQLEN = 16


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer: word ``w<i>`` is token ``i``; no special tokens are added."""
    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def text_of(ids: list[int]) -> str:
    return " ".join(f"w{i}" for i in ids)


def random_ids(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


def reference_ppl(model: nn.Module, ids: list[int], seqlen: int, windows: int) -> float:
    """Independent path: all windows in one batch, one cross_entropy over the concatenated targets."""
    batch = torch.tensor(ids[: windows * seqlen]).view(windows, seqlen)
    with torch.no_grad():
        logits = model(batch).logits.float()
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
    return math.exp(loss.item())


def hf_loss_ppl(model: nn.Module, ids: list[int], seqlen: int, windows: int) -> float:
    """Second independent path: transformers' own causal-LM loss, window by window."""
    losses = []
    for w in range(windows):
        window = torch.tensor([ids[w * seqlen : (w + 1) * seqlen]])
        with torch.no_grad():
            losses.append(model(window, labels=window).loss.item())
    return math.exp(sum(losses) / len(losses))  # every window predicts seqlen - 1 tokens


def test_matches_plain_torch_and_hf_loss(model, tokenizer):
    ids = random_ids(4 * SEQLEN)
    result = perplexity_of_text(model, tokenizer, text_of(ids), seqlen=SEQLEN, progress=False)
    assert result.windows == 4
    assert result.predicted_tokens == 4 * (SEQLEN - 1)
    assert result.ppl == pytest.approx(reference_ppl(model, ids, SEQLEN, 4), rel=1e-5)
    assert result.ppl == pytest.approx(hf_loss_ppl(model, ids, SEQLEN, 4), rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(result.nll_sum / result.predicted_tokens), rel=1e-12)


class ConstantLogits(nn.Module):
    """A "model" that predicts uniformly: its perplexity is exactly the vocabulary size."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, VOCAB) + self.anchor)


def test_uniform_prediction_has_vocab_size_perplexity():
    result = perplexity_of_ids(
        ConstantLogits(), torch.arange(3 * SEQLEN) % VOCAB, seqlen=SEQLEN, progress=False
    )
    assert result.ppl == pytest.approx(VOCAB, rel=1e-6)
    assert result.nll_sum == pytest.approx(3 * (SEQLEN - 1) * math.log(VOCAB), rel=1e-6)


def test_tail_is_dropped(model, tokenizer):
    ids = random_ids(3 * SEQLEN + SEQLEN - 1)
    with_tail = perplexity_of_text(model, tokenizer, text_of(ids), seqlen=SEQLEN, progress=False)
    exact = perplexity_of_text(model, tokenizer, text_of(ids[: 3 * SEQLEN]), seqlen=SEQLEN, progress=False)
    assert with_tail == exact
    assert with_tail.windows == 3


def test_exactly_n_windows(model):
    result = perplexity_of_ids(model, torch.tensor([random_ids(5 * SEQLEN)]), seqlen=SEQLEN, progress=False)
    assert (result.windows, result.predicted_tokens) == (5, 5 * (SEQLEN - 1))


def test_max_windows_takes_the_first_windows(model):
    ids = random_ids(5 * SEQLEN)
    first_two = perplexity_of_ids(model, torch.tensor(ids), seqlen=SEQLEN, max_windows=2, progress=False)
    assert first_two.windows == 2
    assert first_two.ppl == pytest.approx(reference_ppl(model, ids, SEQLEN, 2), rel=1e-5)
    more_than_there = perplexity_of_ids(
        model, torch.tensor(ids), seqlen=SEQLEN, max_windows=99, progress=False
    )
    assert more_than_there.windows == 5


def test_batch_size_does_not_change_the_result(model):
    ids = torch.tensor(random_ids(5 * SEQLEN))
    one = perplexity_of_ids(model, ids, seqlen=SEQLEN, batch_size=1, progress=False)
    three = perplexity_of_ids(model, ids, seqlen=SEQLEN, batch_size=3, progress=False)
    assert three.windows == one.windows
    assert three.ppl == pytest.approx(one.ppl, rel=1e-5)


def test_compute_dtype_runs_in_fp32_and_restores_the_model():
    torch.manual_seed(1)
    bf16 = AutoModelForCausalLM.from_config(tiny_config(), dtype=torch.bfloat16).eval()
    fp32 = AutoModelForCausalLM.from_config(tiny_config(), dtype=torch.float32).eval()
    fp32.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
    before = {k: v.clone() for k, v in bf16.state_dict().items()}
    ids = torch.tensor(random_ids(3 * SEQLEN))

    upcast = perplexity_of_ids(bf16, ids, seqlen=SEQLEN, compute_dtype=torch.float32, progress=False)

    assert upcast.ppl == pytest.approx(
        perplexity_of_ids(fp32, ids, seqlen=SEQLEN, progress=False).ppl, rel=1e-6
    )
    after = bf16.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in before.items())


def test_bf16_model_nll_is_close_to_fp32():
    """The loss is taken from fp32 logits, so a bf16 model lands near its fp32 twin."""
    torch.manual_seed(2)
    bf16 = AutoModelForCausalLM.from_config(tiny_config(), dtype=torch.bfloat16).eval()
    ids = torch.tensor(random_ids(2 * SEQLEN))
    in_bf16 = perplexity_of_ids(bf16, ids, seqlen=SEQLEN, progress=False)
    in_fp32 = perplexity_of_ids(bf16, ids, seqlen=SEQLEN, compute_dtype=torch.float32, progress=False)
    assert in_bf16.ppl == pytest.approx(in_fp32.ppl, rel=2e-2)


def test_training_flag_is_restored(model):
    model.train()
    try:
        perplexity_of_ids(model, torch.tensor(random_ids(SEQLEN)), seqlen=SEQLEN, progress=False)
        assert model.training
    finally:
        model.eval()


def test_file_is_read_in_text_mode(model, tokenizer, tmp_path):
    ids = random_ids(2 * SEQLEN)
    path = tmp_path / "eval.txt"
    path.write_bytes(text_of(ids).replace(" ", "\r\n").encode())
    seen: list[str] = []

    def recording(text: str, **kwargs):
        seen.append(text)
        return tokenizer(text, **kwargs)

    result = perplexity_of_file(model, recording, path, seqlen=SEQLEN, progress=False)
    assert seen == [text_of(ids).replace(" ", "\n")]
    assert isinstance(result, PerplexityResult) and result.windows == 2


def test_result_is_frozen(model):
    result = perplexity_of_ids(model, torch.tensor(random_ids(SEQLEN)), seqlen=SEQLEN, progress=False)
    with pytest.raises(AttributeError):
        result.ppl = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seqlen": 1}, "seqlen must be an int >= 2, got 1"),
        ({"seqlen": 2.5}, "seqlen must be an int >= 2, got 2.5"),
        ({"max_windows": 0}, "max_windows must be an int >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        ({"compute_dtype": torch.int8}, "compute_dtype must be a floating-point torch.dtype"),
    ],
)
def test_bad_arguments_are_named(model, kwargs, message):
    args = {"seqlen": SEQLEN, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        perplexity_of_ids(model, torch.tensor(random_ids(2 * SEQLEN)), progress=False, **args)


def test_too_short_text_says_how_many_tokens(model, tokenizer):
    with pytest.raises(
        ValueError, match=f"has {SEQLEN - 1} tokens, fewer than one window of seqlen={SEQLEN}"
    ):
        perplexity_of_text(model, tokenizer, text_of(random_ids(SEQLEN - 1)), seqlen=SEQLEN, progress=False)


def test_bad_inputs_are_rejected(model, tokenizer, tmp_path):
    with pytest.raises(TypeError, match="text must be a str"):
        perplexity_of_text(model, tokenizer, b"w1 w2", seqlen=SEQLEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(1, n\), got \(2, 16\)"):
        perplexity_of_ids(model, torch.zeros(2, SEQLEN, dtype=torch.long), seqlen=SEQLEN)
    with pytest.raises(TypeError, match=r"integer torch\.Tensor"):
        perplexity_of_ids(model, torch.zeros(SEQLEN), seqlen=SEQLEN)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        perplexity_of_file(model, tokenizer, tmp_path / "missing.txt", seqlen=SEQLEN)


@pytest.mark.slow
def test_smollm2_cpu_small_perplexity_matches_the_anchor():
    """cpu-small protocol on the shipped text: fp32 compute of the bf16 checkpoint, 20 windows."""
    from autoround.data import default_eval_text_path
    from autoround.model_sources import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2", dtype=torch.bfloat16)
    result = perplexity_of_file(
        model, tokenizer, default_eval_text_path(), max_windows=20, compute_dtype=torch.float32
    )
    assert (result.windows, result.predicted_tokens) == (20, 40_940)
    assert result.ppl == pytest.approx(20.97, abs=0.01)  # benchmark-protocol.md's cpu-small anchor
