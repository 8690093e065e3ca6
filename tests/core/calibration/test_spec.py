"""Parsing of Intel-syntax calibration dataset spec strings."""

from __future__ import annotations

import pytest

from autoround.calibration import DEFAULT_DATASET, DatasetSpec, DatasetSpecError, parse_spec
from autoround.calibration.spec import DEFAULT_SYSTEM_PROMPT


def test_bare_name_gets_defaults() -> None:
    (spec,) = parse_spec("NeelNanda/pile-10k")
    assert spec == DatasetSpec()
    assert spec.name == DEFAULT_DATASET
    assert (spec.split, spec.num, spec.concat, spec.apply_chat_template) == ((), None, False, False)


def test_all_options() -> None:
    (spec,) = parse_spec("pile-10k:split=train+validation:num=16:concat=True:apply_chat_template")
    assert spec == DatasetSpec("pile-10k", ("train", "validation"), 16, True, True, DEFAULT_SYSTEM_PROMPT)


@pytest.mark.parametrize(
    ("text", "concat", "template"),
    [
        ("a:concat", True, False),
        ("a:concat=false", False, False),
        ("a:concat=TRUE:apply_chat_template=False", True, False),
        ("a:apply_chat_template=1", False, True),
    ],
)
def test_boolean_flags(text: str, concat: bool, template: bool) -> None:
    (spec,) = parse_spec(text)
    assert (spec.concat, spec.apply_chat_template) == (concat, template)


def test_several_datasets_and_whitespace() -> None:
    specs = parse_spec(" pile-10k:num=4 , data/a.jsonl:concat ,b.txt")
    assert [s.name for s in specs] == ["pile-10k", "data/a.jsonl", "b.txt"]
    assert [s.num for s in specs] == [4, None, None]
    assert [s.concat for s in specs] == [False, True, False]


def test_quoted_system_prompt_keeps_separators_and_implies_template() -> None:
    specs = parse_spec('a.txt:system_prompt="Be brief, please: no lists.",b.txt')
    assert specs[0].system_prompt == "Be brief, please: no lists."
    assert specs[0].apply_chat_template
    assert specs[1].name == "b.txt" and not specs[1].apply_chat_template


def test_empty_system_prompt_means_none() -> None:
    (spec,) = parse_spec('a:system_prompt=""')
    assert spec.system_prompt == "" and spec.apply_chat_template


def test_explicitly_disabled_template_wins_over_system_prompt() -> None:
    (spec,) = parse_spec('a:apply_chat_template=false:system_prompt="x"')
    assert not spec.apply_chat_template


def test_quoted_name_may_hold_a_colon() -> None:
    (spec,) = parse_spec('"C:/data/calib.json":num=3')
    assert spec.name == "C:/data/calib.json" and spec.num == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pile:num=abc", "dataset spec 'pile:num=abc': 'num=abc' is not an integer"),
        ("pile:num=0", "'num=0' must be >= 1"),
        ("pile:num", "'num' needs a value"),
        ("pile:split=", "'split=' needs a value"),
        ("pile:split=train+", "'split=train+' has an empty split name"),
        ("pile:train", "unknown option 'train' (did you mean 'split=train'?)"),
        ("pile:seqlen=5", "unknown option 'seqlen=5'"),
        ("pile:concat=maybe", "'concat=maybe' is not a boolean"),
        ("pile:num=1:num=2", "option 'num' given twice"),
        (":num=3", "missing dataset name"),
        ("a,,b", "empty dataset entry"),
        ("", "dataset spec is empty"),
        ('a:system_prompt="open', "unterminated"),
        ('a:system_prompt=x"y"', "quotes must enclose the whole value"),
    ],
)
def test_bad_specs_point_at_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(DatasetSpecError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_specs_are_frozen() -> None:
    (spec,) = parse_spec("a")
    with pytest.raises(AttributeError):
        spec.num = 3  # type: ignore[misc]
