"""JSON encoding of task arguments and results.

Values kombu's JSON serializer round-trips (``datetime``, ``date``, ``time``, ``Decimal``,
``UUID``, ``bytes``) are written the way kombu writes them (``{"__type__": ..., "__value__": ...}``)
so rows are readable by people who know Celery's wire format, and decoded back to the same types.
Anything else that is not JSON raises ``EncodeError`` before a row is written, and so does what
JSON or PostgreSQL's jsonb cannot hold: NaN and infinite floats, NUL characters (``\\u0000``),
lone surrogates (not UTF-8), and nesting deeper than ``MAX_DEPTH`` (which every decoder pgq runs,
in a worker's child as in a producer, reads with room to spare).
"""

from __future__ import annotations

import json
import re
import traceback as tb_module
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from pgq.errors import EncodeError

__all__ = ["MAX_DEPTH", "dumps", "exception_to_json", "loads"]

# How deeply arrays and objects may nest in a value pgq stores. Python's decoder gives up near
# its recursion limit (1,000 frames, fewer in a worker whose stack is already deep), so a row
# nested deeper could be written and then never read.
MAX_DEPTH = 200


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": value.hex}}
    if isinstance(value, bytes):
        try:
            return {"__type__": "bytes", "__value__": value.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(hex=v["hex"]),
    "bytes": lambda v: v.encode("utf-8"),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    kind = obj.get("__type__")
    if kind is not None and len(obj) == 2 and "__value__" in obj:
        decoder = _DECODERS.get(kind)
        if decoder is not None:
            return decoder(obj["__value__"])
    return obj


_encoder = json.JSONEncoder(
    default=_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
)
# An escaped NUL in JSON text: "\u0000" not itself escaped (an even run of backslashes before it).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# JSON strings, to be skipped when counting how deeply brackets nest.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def dumps(value: Any) -> str:
    """Encode ``value`` as JSON text, or raise ``EncodeError`` naming what could not be encoded."""
    if value is None:  # the result of most tasks
        return "null"
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode as JSON: {exc}") from exc
    except RecursionError:
        raise EncodeError(f"cannot encode as JSON: nested more than {MAX_DEPTH} deep") from None
    _check_storable(text)
    return text


def _check_storable(text: str) -> None:
    """Refuse JSON text that PostgreSQL's jsonb or pgq's decoder cannot take (cheap tests
    first: this runs for every enqueue)."""
    if "\\u0000" in text and _NUL.search(text):
        raise EncodeError("cannot store as JSON: PostgreSQL refuses the NUL character (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start : exc.end]
            raise EncodeError(
                f"cannot store as JSON: {bad!r} is a lone surrogate, not valid Unicode text"
            ) from None
    # Brackets bound the depth from above (those inside strings count too): only a value with
    # more than MAX_DEPTH of them is measured.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise EncodeError(f"cannot store as JSON: nested more than {MAX_DEPTH} deep")


def _depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text``."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char in "]}":
            depth -= 1
    return deepest


_decoder = json.JSONDecoder(object_hook=_object_hook)


def loads(text: str | bytes | None) -> Any:
    """Decode JSON text written by ``dumps`` (or by hand) back to Python values."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = bytes(text).decode()
    # Most tasks have no kwargs and many no args or options: skip the decoder for those.
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        return _decoder.decode(text)
    except RecursionError:  # a row written by hand may nest deeper than anything dumps makes
        raise ValueError("JSON nested too deeply to decode") from None


def exception_to_json(exc: BaseException) -> dict[str, Any]:
    """Describe an exception the way Celery's result backends store it."""
    cls = type(exc)
    try:
        args = list(exc.args)
        dumps(args)
    except EncodeError:
        args = [_storable_text(str(exc))]
    return {
        "exc_type": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": args,
    }


def _storable_text(text: str) -> str:
    """``text`` with what jsonb refuses (NUL, lone surrogates) written as escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def format_traceback(exc: BaseException) -> str:
    """The full traceback text stored in ``pgq.tasks.traceback``."""
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
