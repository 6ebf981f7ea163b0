"""``celery.utils.serialization``: the stand-in for an exception that cannot be rebuilt.

A failed task's exception is stored as its module, class name and arguments (JSON). When the
class cannot be called again with those arguments (its constructor wants others), the caller
gets an ``UnpickleableExceptionWrapper`` instead, as from Celery: its text is the original's
``repr`` (so it names the class), and it keeps the module, class name and arguments.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UnpickleableExceptionWrapper"]


class UnpickleableExceptionWrapper(Exception):
    """An exception of class ``exc_module.exc_cls_name`` that could not be rebuilt here."""

    #: The module of the original exception.
    exc_module: str | None = None
    #: The name of the original exception class.
    exc_cls_name: str | None = None
    #: The arguments of the original exception.
    exc_args: tuple[Any, ...] | None = None

    def __init__(
        self, exc_module: str, exc_cls_name: str, exc_args: Any, text: str | None = None
    ) -> None:
        self.exc_module = exc_module
        self.exc_cls_name = exc_cls_name
        self.exc_args = tuple(exc_args or ())
        if text is None:
            text = f"{exc_cls_name}({', '.join(repr(a) for a in self.exc_args)})"
        self.text = text
        super().__init__(exc_module, exc_cls_name, self.exc_args, text)

    def __str__(self) -> str:
        return self.text

    def restore(self) -> Exception:
        """A new exception of a class named like the original, with the original arguments
        (a stand-in class: nothing is imported)."""
        namespace = {"__module__": self.exc_module}
        stand_in = type(self.exc_cls_name or "Exception", (Exception,), namespace)
        return stand_in(*self.exc_args or ())  # type: ignore[no-any-return]

    @classmethod
    def from_exception(cls, exc: BaseException) -> UnpickleableExceptionWrapper:
        """The wrapper of ``exc``: its module, class name, arguments and ``repr``."""
        return cls(type(exc).__module__, type(exc).__name__, getattr(exc, "args", ()), repr(exc))
