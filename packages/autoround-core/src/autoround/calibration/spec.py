"""Calibration dataset spec strings, in Intel auto-round's syntax, parsed into frozen objects.

Grammar (one or more datasets joined by ``,``; options after the name joined by ``:``)::

    name[:split=a+b][:num=N][:concat[=true|false]][:apply_chat_template[=true|false]]
        [:system_prompt="..."]

``name`` is a Hugging Face Hub dataset (``pile-10k`` is short for ``NeelNanda/pile-10k``) or a
local ``.txt`` / ``.json`` / ``.jsonl`` path. A bare flag (``concat``) means ``true``;
``system_prompt`` implies ``apply_chat_template``. Double quotes protect ``,`` ``:`` ``=`` and
spaces inside a part (``system_prompt="Be brief, please."``, ``"C:/data/calib.json":num=8``);
there are no escapes inside quotes. Unlike Intel, unknown options and bad values are errors
(Intel ignores them) and whitespace inside quotes is kept (Intel removes all whitespace).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoround.errors import AutoRoundError

DEFAULT_DATASET = "NeelNanda/pile-10k"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # Intel's default once a template is on
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_KEYS = ("split", "num", "concat", "apply_chat_template", "system_prompt")


class DatasetSpecError(AutoRoundError, ValueError):
    """A calibration dataset spec string is malformed; the message quotes the bad part."""


@dataclass(frozen=True)
class DatasetSpec:
    """One calibration source of a spec string.

    Attributes:
        name: Hub dataset name or local file path.
        split: Hub splits to load and join (``split=train+validation``); empty: ``train``.
        num: samples to take from this source when several are mixed; ``None``: an even share.
        concat: join all texts and cut them into ``seqlen`` windows instead of dropping short ones.
        apply_chat_template: render each text as a user turn with the tokenizer's chat template.
        system_prompt: system turn used with the chat template; ``""`` for none.
    """

    name: str = DEFAULT_DATASET
    split: tuple[str, ...] = ()
    num: int | None = None
    concat: bool = False
    apply_chat_template: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if not self.name:
            raise DatasetSpecError("dataset name is empty")
        if self.num is not None and self.num < 1:
            raise DatasetSpecError(f"num must be >= 1, got {self.num}")


def parse_spec(spec: str) -> tuple[DatasetSpec, ...]:
    """Parse ``spec`` into one :class:`DatasetSpec` per ``,``-separated dataset.

    Raises:
        DatasetSpecError: naming the spec and the part of it that is wrong, e.g.
            ``dataset spec 'pile:num=abc': 'num=abc' is not an integer``.
    """
    if not spec.strip():
        raise DatasetSpecError("dataset spec is empty")
    parsed = []
    for dataset in _split_top(spec, ",", spec):
        try:
            parsed.append(_parse_one(_split_top(dataset, ":", spec)))
        except DatasetSpecError as error:
            raise DatasetSpecError(f"dataset spec {spec!r}: {error}") from None
    return tuple(parsed)


def _split_top(text: str, sep: str, spec: str) -> list[str]:
    """Split ``text`` on ``sep`` outside double quotes; each part is stripped, quotes kept."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if quoted:
        raise DatasetSpecError(f"dataset spec {spec!r}: unterminated '\"' in {text.strip()!r}")
    parts.append("".join(current).strip())
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if '"' in value:
        raise DatasetSpecError(f"{value!r}: quotes must enclose the whole value")
    return value


def _parse_one(parts: list[str]) -> DatasetSpec:
    name = _unquote(parts[0])
    if parts == [""]:
        raise DatasetSpecError("empty dataset entry (a stray ',')")
    if not name:
        raise DatasetSpecError(f"missing dataset name before {':'.join(parts)!r}")
    options: dict[str, object] = {}
    for part in parts[1:]:
        key, has_value, raw = part.partition("=")
        key = key.strip()
        value = _unquote(raw.strip()) if has_value else None
        if key not in _KEYS:
            hint = f" (did you mean 'split={key}'?)" if not has_value else ""
            raise DatasetSpecError(f"unknown option {part!r}{hint}; known: {', '.join(_KEYS)}")
        if key in options:
            raise DatasetSpecError(f"option {key!r} given twice")
        options[key] = _convert(key, value, part)
    if "system_prompt" in options and "apply_chat_template" not in options:
        options["apply_chat_template"] = True  # as Intel: a system prompt implies the template
    return DatasetSpec(name=name, **options)  # type: ignore[arg-type]


def _convert(key: str, value: str | None, part: str) -> object:
    if key in ("concat", "apply_chat_template"):
        if value is None or value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise DatasetSpecError(f"{part!r} is not a boolean (true or false)")
    if value is None or (not value and key != "system_prompt"):
        raise DatasetSpecError(f"{part!r} needs a value ({key}=...)")
    if key == "num":
        try:
            num = int(value)
        except ValueError:
            raise DatasetSpecError(f"{part!r} is not an integer") from None
        if num < 1:
            raise DatasetSpecError(f"{part!r} must be >= 1")
        return num
    if key == "split":
        splits = tuple(s.strip() for s in value.split("+"))
        if not all(splits):
            raise DatasetSpecError(f"{part!r} has an empty split name")
        return splits
    return value  # system_prompt
