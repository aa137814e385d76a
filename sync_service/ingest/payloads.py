"""Webhook payloads as the inbox keeps them: a JSON object that PostgreSQL's jsonb accepts and that
`replay --inbox` re-applies with the same outcome.

JSON allows what jsonb refuses: a `\\u0000` escape in a string or key, and numbers beyond PostgreSQL's
numeric range (`1e999999`, `1e-999999`: at most 131,072 digits before the point, 16,383 after). Nearly
every payload has neither and is stored as it came. One that has is re-encoded (`storable_payload`):
each NUL becomes U+FFFD and each unrepresentable number a JSON string holding its text; every other value
keeps its exact text. A delivery can only be *applied* with such values in fields the service ignores
(a NUL in `name` or a number where a handled field is expected is rejected), so the stored copy decides
exactly as the original did.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import msgspec

_NUMERIC_INTEGER_DIGITS = 131_072  # PostgreSQL's numeric: digits before the decimal point
_NUMERIC_FRACTION_DIGITS = 16_383  # and after it
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnstorablePayload(ValueError):
    """Text that is not a JSON object PostgreSQL can be given, even re-encoded. Its message reads after
    "body" or "payload" (`is not valid JSON: ...`)."""


def needs_rewrite(text: str) -> bool:
    """Whether jsonb would surely refuse `text` as it is (a NUL escape). Numbers out of range are not
    looked for here (costly, and rare): PostgreSQL refuses them, and the ingest core re-encodes then."""
    return "\\u0000" in text


def storable_payload(text: str) -> str:
    """`text` (one JSON object) re-encoded so that jsonb accepts it; see the module's docstring.

    Raises `UnstorablePayload` when `text` is not a JSON object, holds a lone surrogate (`\\ud800`:
    not Unicode text, which the service's decoder refuses too), or is nested too deeply to walk."""
    try:
        value = json.loads(text, parse_int=_number, parse_float=_number, parse_constant=_not_json)
        if not isinstance(value, dict):
            raise UnstorablePayload("is not a JSON object")
        return msgspec.json.encode(_clean(value)).decode()
    except RecursionError:
        raise UnstorablePayload("is nested too deeply") from None
    except UnstorablePayload:
        raise
    except ValueError as exc:  # json.JSONDecodeError
        raise UnstorablePayload(f"is not valid JSON: {exc}") from None


def _number(text: str) -> msgspec.Raw | str:
    """A number kept as its own text when numeric can hold it, else as a string of that text."""
    _, digits, exponent = Decimal(text).as_tuple()
    assert isinstance(exponent, int)  # JSON has no NaN or Infinity (refused by `_not_json`)
    integer_digits = len(digits) + exponent
    if integer_digits <= _NUMERIC_INTEGER_DIGITS and -exponent <= _NUMERIC_FRACTION_DIGITS:
        return msgspec.Raw(text.encode())
    return text


def _not_json(name: str) -> object:
    raise UnstorablePayload(f"is not valid JSON: {name}")


def _clean(value: object) -> object:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise UnstorablePayload("is not valid JSON: a lone surrogate escape is not Unicode text")
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value
