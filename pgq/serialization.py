"""JSON encoding of task arguments and results.

Values kombu's JSON serializer round-trips (``datetime``, ``date``, ``time``, ``Decimal``,
``UUID``, ``bytes``) are written the way kombu writes them (``{"__type__": ..., "__value__": ...}``)
so rows are readable by people who know Celery's wire format, and decoded back to the same types.
Anything else that is not JSON raises ``EncodeError`` before a row is written.
"""

from __future__ import annotations

import json
import traceback as tb_module
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from pgq.errors import EncodeError

__all__ = ["dumps", "exception_to_json", "loads"]


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


_encoder = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Encode ``value`` as JSON text, or raise ``EncodeError`` naming what could not be encoded."""
    if value is None:  # the result of most tasks
        return "null"
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"cannot encode as JSON: {exc}") from exc


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
    return _decoder.decode(text)


def exception_to_json(exc: BaseException) -> dict[str, Any]:
    """Describe an exception the way Celery's result backends store it."""
    cls = type(exc)
    try:
        args = list(exc.args)
        dumps(args)
    except EncodeError:
        args = [str(exc)]
    return {
        "exc_type": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": args,
    }


def format_traceback(exc: BaseException) -> str:
    """The full traceback text stored in ``pgq.tasks.traceback``."""
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
