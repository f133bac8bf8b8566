"""Config fields and command-line flags derived from function signatures (one source of truth).

A function's parameters (name, type hint, default) become the fields of a dataclass that
OmegaConf validates, or ``--flags`` of an argparse parser, so an argument added to
:class:`chipvi.ChIPVI`, ``ChIPVI.train`` or :func:`chipvi.read_bams` reaches ``chipvi train``
and ``chipvi bin`` without a second edit. Value checks stay with the functions.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import inspect
import os
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from .._errors import ChipviInputError

_SCALARS = (bool, int, float, str)


def parameters(
    func, skip: set[str] = frozenset(), owner: type | None = None
) -> list[inspect.Parameter]:
    """Named parameters of ``func`` with resolved type hints (no self, ``*args``, ``**kwargs``).

    A method that takes ``**kwargs`` and overrides one of a base class (a subclass of
    :class:`chipvi.ChIPVI` adding an argument) also has the base method's parameters: what
    ``super().__init__(adata, **kwargs)`` passes on (``owner``: the class ``func`` belongs to).
    """
    out: dict[str, inspect.Parameter] = {}
    for f in _method_chain(func, owner):
        for p in inspect.signature(f).parameters.values():
            if p.name == "self" or p.name in skip or p.name in out:
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = p.replace(annotation=_resolve(p.annotation, f, p.default))
    return list(out.values())


def _method_chain(func, owner: type | None) -> list:
    """``func``, then the methods it overrides while each takes ``**kwargs``."""
    chain = [func]
    if owner is None:
        return chain
    for base in owner.__mro__[1:]:
        kinds = [p.kind for p in inspect.signature(chain[-1]).parameters.values()]
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
        method = vars(base).get(func.__name__)
        if method is not None and inspect.isfunction(method):
            chain.append(method)
    return chain


def _resolve(annotation, func, default=inspect.Parameter.empty):
    """A string annotation (``from __future__ import annotations``) evaluated where ``func``
    was defined; one that cannot be (a name imported only for type checkers) is ``Any``; a
    missing one is the type of a scalar default."""
    if annotation is inspect.Parameter.empty:
        return type(default) if type(default) in _SCALARS else Any
    if not isinstance(annotation, str):
        return annotation
    namespace = {**vars(typing), **getattr(inspect.unwrap(func), "__globals__", {})}
    namespace.setdefault("os", os)
    try:
        return eval(annotation, namespace)  # noqa: S307 - the package's own annotations
    except Exception:  # noqa: BLE001
        return Any


def _members(hint) -> list:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return list(typing.get_args(hint))
    return [hint]


def _is_sequence(hint) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(
        origin, collections.abc.Sequence | collections.abc.Set
    ) and origin not in (str, bytes)  # fmt: skip


def _item_type(hint):
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    item = args[0] if args else Any
    return item if item in _SCALARS else Any


def config_type(hint, default: Any = inspect.Parameter.empty):
    """The OmegaConf-checkable type for a parameter hint.

    ``None`` in a union makes it optional; a path (``os.PathLike``) is a string; a ``Literal``
    is the type of its values; of the other union members the first one the default is an
    instance of wins, else the first one (``Sequence[str] | str`` is a list of strings,
    ``float | Sequence[float]`` a float); scalar unions such as ``int | str`` stay unions.
    """
    members = _members(hint)
    optional = type(None) in members or default is None
    kinds = []
    for m in members:
        if m is type(None):
            continue
        if typing.get_origin(m) is typing.Literal:
            values = typing.get_args(m)
            m = type(values[0]) if values else str
        elif m is os.PathLike or typing.get_origin(m) is os.PathLike:
            m = str
        kinds.append(m)
    kinds = list(dict.fromkeys(kinds))
    if not kinds or kinds == [Any] or any(k is inspect.Parameter.empty for k in kinds):
        chosen = Any
    elif all(k in _SCALARS for k in kinds):
        chosen = typing.Union[tuple(kinds)] if len(kinds) > 1 else kinds[0]  # noqa: UP007, UP045
    else:
        fitting = [k for k in kinds if _fits(default, k)]
        first = (fitting or kinds)[0]
        if first in _SCALARS:
            chosen = first
        elif _is_sequence(first):
            chosen = list[_item_type(first)]
        elif (typing.get_origin(first) or first) is dict:
            chosen = dict[str, Any]
        else:
            chosen = Any
    return typing.Optional[chosen] if optional and chosen is not Any else chosen  # noqa: UP007, UP045


def _fits(default, kind) -> bool:
    if default is inspect.Parameter.empty or default is None:
        return False
    origin = typing.get_origin(kind) or kind
    try:
        return isinstance(default, origin)
    except TypeError:
        return False


def config_default(value: Any) -> Any:
    """A parameter default as a config value (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [config_default(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dataclass_from(
    name: str,
    func,
    *,
    owner: type | None = None,
    skip: set[str] = frozenset(),
    extra: list[tuple[str, Any, Any]] = (),
    doc: str = "",
) -> type:
    """A dataclass with one field per parameter of ``func`` (then ``extra``'s fields).

    ``extra`` items are ``(name, type, default)``; one whose name is already a parameter is
    left out (the function's own declaration wins).
    """
    fields = []
    for p in parameters(func, skip, owner):
        default = None if p.default is inspect.Parameter.empty else p.default
        # Every field takes null: it stands for the function's own default (`call_kwargs`).
        kind = config_type(p.annotation, default)
        kind = kind if kind is Any else typing.Optional[kind]  # noqa: UP007, UP045
        fields.append(_field(p.name, kind, config_default(default)))
    names = {f[0] for f in fields}
    fields += [_field(n, t, d) for n, t, d in extra if n not in names]
    cls = dataclasses.make_dataclass(name, fields)
    cls.__doc__ = doc
    return cls


def _field(name: str, kind, default):
    if isinstance(default, list | dict):
        return (name, kind, dataclasses.field(default_factory=lambda d=default: type(d)(d)))
    return (name, kind, dataclasses.field(default=default))


def call_kwargs(values: dict, func, owner: type | None = None) -> dict:
    """Arguments for ``func`` from config values.

    ``null`` for a parameter whose own default is not ``None`` means that default (so a config
    written before a default changed still follows it), and a value equal to the default is
    left out too; keys that are not parameters of ``func`` are an error unless it takes
    ``**kwargs``.
    """
    params = {p.name: p for p in parameters(func, owner=owner)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    out = {}
    for key, value in values.items():
        p = params.get(key)
        if p is None:
            if not takes_kwargs:
                raise ChipviInputError(
                    f"config key {key!r} is not an argument of {func.__qualname__}; remove it."
                )
            out[key] = value
            continue
        if value is None and p.default is not None:
            continue
        if value == config_default(p.default):  # the function's own default: leave it to it
            continue
        out[key] = tuple(value) if isinstance(p.default, tuple) and value is not None else value
    return out


# -- command-line flags -----------------------------------------------------------------------
def parameter_docs(func) -> dict[str, str]:
    """First sentence of each parameter's description in a numpydoc docstring."""
    doc = inspect.getdoc(func) or ""
    match = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    if not match:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(":")[0].split(",")]
        elif line.strip() and names:
            for n in names:
                out[n] = (out.get(n, "") + " " + line.strip()).strip()
    # First sentence, reStructuredText roles and literals as plain text.
    # ("e.g." and "i.e." do not end a sentence)
    out = {k: re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s", v, maxsplit=1)[0]
           for k, v in out.items()}  # fmt: skip
    return {k: re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda m: m[1] or m[2], v)
            for k, v in out.items()}  # fmt: skip


def parse_scalar(text: str):
    """A command-line value for an ``int | str | None`` parameter: ``none``, an integer or text."""
    if text.lower() in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_flags(parser: argparse.ArgumentParser, func, *, skip: set[str] = frozenset()) -> list[str]:
    """One ``--flag`` per parameter of ``func``, typed from its hint, help from its docstring.

    Lists are comma-separated (``--chroms chr1,chr2``); booleans get ``--x/--no-x``. Values
    are passed as given: the function validates them. Returns the parameter names added (the
    parser's dests).
    """
    docs = parameter_docs(func)
    added = []
    for p in parameters(func, skip):
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = config_type(p.annotation, default)
        base = [m for m in _members(kind) if m is not type(None)]
        flag = "--" + p.name.replace("_", "-")
        shown = "" if default is None else f" (default {config_default(default)})"
        help_text = (docs.get(p.name, "") + shown).replace("%", "%%") or None
        if base == [bool]:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif base and typing.get_origin(base[0]) is list:
            item = _item_type(base[0])
            convert = item if item in (int, float) else str
            parser.add_argument(
                flag,
                type=lambda s, c=convert: [c(x.strip()) for x in s.split(",") if x.strip()],
                default=default,
                metavar="A,B,...",
                help=help_text,
            )
        elif len(base) == 1 and base[0] in (int, float, str):
            parser.add_argument(flag, type=base[0], default=default, help=help_text)
        else:
            parser.add_argument(flag, type=parse_scalar, default=default, help=help_text)
        added.append(p.name)
    return added


def lazy_flags(parser: argparse.ArgumentParser, populate) -> None:
    """Call ``populate(parser)`` only when this (sub)parser is used or its help is shown.

    Deriving flags needs the function, and importing it can be slow (``read_bams`` pulls in
    numba and anndata, ~0.5 s): other commands of ``chipvi`` should not pay for it.
    """

    class _Lazy(type(parser)):
        _populated = False

        def _populate(self) -> None:
            if not self._populated:
                self._populated = True
                populate(self)

        def parse_known_args(self, *args, **kwargs):
            self._populate()
            return super().parse_known_args(*args, **kwargs)

        def format_help(self):
            self._populate()
            return super().format_help()

        def format_usage(self):
            self._populate()
            return super().format_usage()

    parser.__class__ = _Lazy


def as_flags(message: str, names: Sequence[str]) -> str:
    """A function's error message in command-line words: ``index=True`` → ``--index``,
    ``bin_size=0`` → ``--bin-size 0`` (for the parameters that became flags)."""
    for name in sorted(names, key=len, reverse=True):
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"\b{name}=True\b", flag, message)
        message = re.sub(rf"\b{name}=False\b", "--no-" + flag[2:], message)
        message = re.sub(rf"\b{name}=", flag + " ", message)
    return message
