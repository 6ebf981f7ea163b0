"""``@app.task(pydantic=True)``: Celery 5.5+'s pydantic tasks.

A task function whose parameters are annotated with pydantic models gets those models, built
from the dicts the task was sent with (``Model.model_validate``, with ``pydantic_strict`` and
``pydantic_context``); a model it returns, when the return annotation names that model's class,
is stored as JSON (``model_dump(mode="json", **pydantic_dump_kwargs)``). A caller may pass the
models themselves: ``delay(Model(...))`` sends their dumps, as Celery 5.7 does, when the task
would build an equal model back from the dump (anything else is left for the JSON encoder to
refuse with ``EncodeError``). Arguments that do not validate raise pydantic's
``ValidationError`` in the task: it ends in ``FAILURE`` (retried only if ``autoretry_for`` says so),
and the stored error names the argument and carries pydantic's message (pydantic's exception
cannot be rebuilt from it, so ``AsyncResult.get()`` raises Celery's
``UnpickleableExceptionWrapper`` with that text; Celery raises a bare ``Exception``).

``Optional[Model]`` (``Model | None``) parameters accept ``None`` as is. ``*args``/``**kwargs``
parameters are not validated one by one, as in Celery.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pgq.compat.exceptions import ImproperlyConfigured

__all__ = ["pydantic_task"]


def _optional_of(annotation: Any) -> Any:
    """``X`` for ``Optional[X]`` / ``X | None``; None for any other annotation."""
    origin = typing.get_origin(annotation)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    members = typing.get_args(annotation)
    if len(members) != 2 or type(None) not in members:
        return None
    return next(m for m in members if m is not type(None))


def _is_class(annotation: Any) -> bool:
    # list[int] passes inspect.isclass() before Python 3.11.
    if sys.version_info < (3, 11) and isinstance(annotation, types.GenericAlias):
        return False
    return inspect.isclass(annotation)


def pydantic_task(
    app: Any,
    fun: Callable[..., Any],
    name: str,
    *,
    strict: bool = False,
    context: Mapping[str, Any] | None = None,
    dump_kwargs: Mapping[str, Any] | None = None,
    bound: bool = False,
) -> tuple[Callable[..., Any], Callable[[Any, Any], tuple[Any, Any]]]:
    """The task body that validates models in and dumps a model out, and the caller-side
    function that turns the models a caller passes into their dumps: ``(run, dump_arguments)``.
    """
    try:
        import pydantic
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"task {name!r} has pydantic=True but pydantic is not installed: "
            "pip install 'pgq-tasks[pydantic]'"
        ) from exc
    base_model = pydantic.BaseModel
    validation_context = {**(context or {}), "celery_app": app, "celery_task_name": name}
    dump_options = {"mode": "json", **(dump_kwargs or {})}
    signature = inspect.signature(fun)
    try:
        # `from __future__ import annotations` makes every annotation a string.
        hints: dict[str, Any] = typing.get_type_hints(fun)
    except (NameError, AttributeError, TypeError):
        hints = {}

    def annotation(param: str) -> Any:
        if param in hints:
            return hints[param]
        if param == "return":
            return signature.return_annotation
        return signature.parameters[param].annotation

    def model_for(param: str, value: Any) -> Any:
        """The model class ``param`` is validated with, or None (``None`` for an Optional)."""
        wanted = annotation(param)
        inner = _optional_of(wanted)
        if inner is not None:
            if value is None:
                return None
            wanted = inner
        if _is_class(wanted) and issubclass(wanted, base_model):
            return wanted
        return None

    def validate(model: Any, value: Any) -> Any:
        return model.model_validate(value, strict=strict, context=validation_context)

    @functools.wraps(fun)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound_args = signature.bind(*args, **kwargs)
        for param, value in bound_args.arguments.items():
            model = model_for(param, value)
            if model is None:
                continue
            try:
                bound_args.arguments[param] = validate(model, value)
            except pydantic.ValidationError as exc:
                # Its text is not in its args, and a failure is stored as the args: without
                # this, AsyncResult.get() would raise a bare "ValidationError()".
                exc.args = (f"argument {param!r} of {name}: {exc}",)
                raise
        returned = fun(*bound_args.args, **bound_args.kwargs)
        wanted = annotation("return")
        wanted = _optional_of(wanted) or wanted
        if _is_class(wanted) and isinstance(returned, base_model) and isinstance(returned, wanted):
            return returned.model_dump(**dump_options)
        return returned

    kinds = inspect.Parameter
    positional = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    if bound:  # the task itself comes first: callers do not pass it
        positional = positional[1:]
    by_keyword = {
        p.name
        for p in signature.parameters.values()
        if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
    }

    def dump_one(param: str | None, value: Any) -> Any:
        if param is None or not isinstance(value, base_model):
            return value
        model = model_for(param, value)
        if model is None:
            return value
        try:
            dumped = value.model_dump(**dump_options)
            # Only a dump the task turns back into an equal model is sent (a subclass passed
            # for its base class would arrive as the base: it is left for the encoder).
            if validate(model, dumped) == value:
                return dumped
        except Exception:  # noqa: BLE001 - validators that only work on a worker: leave it
            pass
        return value

    def dump_arguments(args: Any, kwargs: Any) -> tuple[Any, Any]:
        """``(args, kwargs)`` with the models the task rebuilds equal replaced by their dumps."""
        args_in = () if args is None else args
        kwargs_in = {} if kwargs is None else kwargs
        if not isinstance(args_in, (list, tuple)) or not isinstance(kwargs_in, Mapping):
            return args, kwargs
        if not any(isinstance(v, base_model) for v in (*args_in, *kwargs_in.values())):
            return args, kwargs
        try:
            signature.bind(*([None] if bound else []), *args_in, **kwargs_in)
        except TypeError:  # the signature check refuses these with its own message
            return args, kwargs
        new_args = [
            dump_one(positional[i] if i < len(positional) else None, v)
            for i, v in enumerate(args_in)
        ]
        new_kwargs = {k: dump_one(k if k in by_keyword else None, v) for k, v in kwargs_in.items()}
        return new_args, new_kwargs

    return run, dump_arguments
