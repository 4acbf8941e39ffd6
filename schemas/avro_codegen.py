"""Avro writers and readers generated from our own schemas, bound to the pydantic models.

fastavro interprets a schema for every record it writes or reads (per field: a dispatch on the type
name, a dict lookup, a logical-type hook) and the model layer then dumps or validates every field
again. For the schemas this version of agentlog owns, both are known in advance, so each record
compiles to one straight-line Python function: the writer reads the model's attributes and emits the
Avro binary encoding; the reader parses the body and builds the models directly. Measured on the
LLM-call events, that is 2-3x faster than fastavro + pydantic (docs/benchmarks.md, serde section).

The contract, which ``tests/unit/schemas/test_avro_codegen.py`` checks with hypothesis: a compiled
function returns exactly what the reference path (pydantic ``model_dump`` + fastavro, fastavro +
pydantic validation) returns for the same input, or it raises. ``schemas.serde`` falls back to the
reference path on any exception, so malformed input gets the reference's error and nothing the
reference accepts is refused.

A model is only compiled when its validation is fully reproduced here: field types that the Avro
type already guarantees (``str``, ``int``, ``float``, ``bool``, ``bytes``, ``UUID``, aware
``datetime``, ``str`` enums, nested models, optionals, lists, string-keyed dicts), ``Ge``/``Gt``/
``Le``/``Lt``/``MinLen``/``MaxLen`` constraints, and ``after`` field validators (run as pydantic
runs them). Anything else (other validators, serializers, aliases, config that changes values,
unions of several types, other logical types) raises :class:`UnsupportedBinding` and the record
keeps the reference path.
"""

from __future__ import annotations

import enum
import inspect
import struct
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import annotated_types
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_ZIGZAG_CACHED = 1 << 13  # varints of 0..8191 are precomputed: every length and count in practice

# model_config keys whose value changes what validation returns, and the values under which the
# compiled reader returns the same; keys in _CONFIG_INERT do not affect building a model from
# exactly typed values. Any other key is unknown here, so the model keeps the reference path.
_CONFIG_NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "extra": lambda v: v in (None, "ignore", "forbid"),
    "strict": lambda v: not v,
    "use_enum_values": lambda v: not v,
    "str_strip_whitespace": lambda v: not v,
    "str_to_lower": lambda v: not v,
    "str_to_upper": lambda v: not v,
    "str_min_length": lambda v: not v,
    "str_max_length": lambda v: v is None,
    "allow_inf_nan": lambda v: v is not False,
    "coerce_numbers_to_str": lambda v: True,  # Avro strings are str already
}
_CONFIG_INERT = frozenset(
    {
        "frozen",
        "title",
        "json_schema_extra",
        "json_schema_mode_override",
        "protected_namespaces",
        "hide_input_in_errors",
        "validate_assignment",
        "arbitrary_types_allowed",
        "from_attributes",
        "loc_by_alias",
        "populate_by_name",
        "validate_by_name",
        "validate_by_alias",
        "serialize_by_alias",
        "revalidate_instances",
        "defer_build",
        "use_attribute_docstrings",
        "cache_strings",
        "regex_engine",
        "validation_error_cause",
        "validate_default",
        "validate_return",
        "ser_json_timedelta",
        "ser_json_bytes",
        "ser_json_inf_nan",
        "val_json_bytes",
        "ignored_types",
    }
)
_CONSTRAINTS: dict[type, str] = {
    annotated_types.Ge: "{v} >= {c.ge!r}",
    annotated_types.Gt: "{v} > {c.gt!r}",
    annotated_types.Le: "{v} <= {c.le!r}",
    annotated_types.Lt: "{v} < {c.lt!r}",
    annotated_types.MinLen: "len({v}) >= {c.min_length!r}",
    annotated_types.MaxLen: "len({v}) <= {c.max_length!r}",
}


class UnsupportedBinding(TypeError):
    """The schema or the model uses something the compiler does not reproduce exactly."""


class InvalidBody(ValueError):
    """The compiled reader found a body it does not accept (the reference path then decides)."""


def _zigzag_varint(value: int) -> bytes:
    if not _INT64[0] <= value <= _INT64[1]:
        raise OverflowError(f"{value} does not fit an Avro long (64-bit)")
    n = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ZIGZAG = tuple(_zigzag_varint(i) for i in range(_ZIGZAG_CACHED))
# Lookup tables on the first byte of a varint (one subscript instead of five operations); a longer
# varint, or a negative length, takes _read_varint / _read_sized. A one-byte varint's value, else None:
_ONE_BYTE = tuple((b >> 1) ^ -(b & 1) if b < 0x80 else None for b in range(256))
# First byte of a string/bytes -> bytes taken by its one-byte length and content (0: longer length).
_SHORT_SIZED = tuple((b >> 1) + 1 if b < 0x80 and not b & 1 else 0 for b in range(256))
# First byte of a two-byte non-negative length (64..8191: hashes, JSON texts) -> its low six bits
# of the length, else -1; the second byte gives the rest (<< 6) when it has no continuation bit.
_TWO_BYTE_LOW = tuple((b & 0x7F) >> 1 if b >= 0x80 and not b & 1 else -1 for b in range(256))


def _read_varint(buf: bytes, p: int) -> tuple[int, int]:
    """The zigzag varint at ``p`` and the position after it; refuses what a 64-bit reader would wrap."""
    n = shift = 0
    while True:
        b = buf[p]
        p += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise InvalidBody(f"varint at byte {p} is longer than 10 bytes")
    if n >> 64:
        raise InvalidBody(f"varint before byte {p} exceeds 64 bits")
    return (n >> 1) ^ -(n & 1), p


def _read_sized(buf: bytes, p: int) -> tuple[bytes, int]:
    """A string's or bytes' content whose length takes more than one byte; two bytes (64..8191:
    hashes, JSON texts) without the general loop."""
    first, second = buf[p], buf[p + 1]
    if second < 0x80 and not first & 1:
        start = p + 2
        end = start + (((first & 0x7F) | (second << 7)) >> 1)
    else:
        n, start = _read_varint(buf, p)
        if n < 0:
            raise InvalidBody(f"negative length {n} before byte {start}")
        end = start + n
    return buf[start:end], end


def _read_str(buf: bytes, p: int) -> tuple[str, int]:
    content, p = _read_sized(buf, p)
    return content.decode(), p


def constructor(cls: type[BaseModel]) -> Callable[..., Any]:
    """``make(*values)``: a ``cls`` holding the field values (positional, in field order) as they are.

    For values validation would keep as they are (already-validated models, exactly typed values)
    of a model :func:`check_constructible` accepts: the result equals ``cls(**values)``, field for
    field and in pydantic's bookkeeping, without the validation pass.
    """
    check_constructible(cls)
    code = _Code()
    code.constants.update(_READER_CONSTANTS)
    names = [f"v{i}" for i in range(len(cls.__pydantic_fields__))]
    _emit_new(code, 1, "model", cls, dict(zip(cls.__pydantic_fields__, names, strict=True)))
    code.emit(1, "return model")
    return code.build(f"make_{cls.__name__}", ", ".join(names), code.lines)


_BOOKKEEPING = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """What ``object.__setattr__(obj, name, value)`` calls for a ``cls`` instance: the data
    descriptor found on the class, called directly (~25 % cheaper per model)."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None:
            setter = getattr(found, "__set__", None)
            if setter is None:
                raise UnsupportedBinding(f"{cls.__name__}.{name} is not a slot")
            return cast(Callable[[Any, Any], None], setter)
    raise UnsupportedBinding(f"{cls.__name__} has no {name} slot")


def _emit_new(code: _Code, indent: int, target: str, cls: type[BaseModel], values: dict[str, str]) -> None:
    """``target = cls`` with ``values`` (field -> expression), as validation leaves a model."""
    fields = ", ".join(f"{name!r}: {values[name]}" for name in cls.__pydantic_fields__)
    state, fields_set, extra, private = (code.const(_slot_setter(cls, name), "slot") for name in _BOOKKEEPING)
    code.emit(indent, f"{target} = _object_new({code.const(cls, cls.__name__)})")
    code.emit(indent, f"{state}({target}, {{{fields}}})")
    code.emit(indent, f"{fields_set}({target}, {{*{code.const(frozenset(values), 'names')}}})")
    code.emit(indent, f"{extra}({target}, None)")
    code.emit(indent, f"{private}({target}, None)")


def check_constructible(cls: type[BaseModel]) -> None:
    """Raise :class:`UnsupportedBinding` unless building ``cls`` without validation is exact."""
    if cls.__private_attributes__:
        raise UnsupportedBinding(f"{cls.__name__} has private attributes")
    if cls.__pydantic_post_init__ is not None:
        raise UnsupportedBinding(f"{cls.__name__} defines model_post_init")
    if cls.__pydantic_root_model__ or cls.__pydantic_generic_metadata__["origin"] is not None:
        raise UnsupportedBinding(f"{cls.__name__} is a root or generic model")
    decorators = cls.__pydantic_decorators__
    if decorators.model_validators or decorators.validators or decorators.root_validators:
        raise UnsupportedBinding(f"{cls.__name__} has model validators")
    for key, value in cls.model_config.items():
        neutral = _CONFIG_NEUTRAL.get(key)
        if neutral is None and key not in _CONFIG_INERT:
            raise UnsupportedBinding(f"{cls.__name__}.model_config[{key!r}] is not known to be neutral")
        if neutral is not None and not neutral(value):
            raise UnsupportedBinding(f"{cls.__name__}.model_config[{key}]={value!r} changes values")


def keeps_instances(cls: type[BaseModel]) -> bool:
    """Whether validation keeps an instance of ``cls`` given for a field of type ``cls`` as is."""
    return cls.model_config.get("revalidate_instances", "never") == "never"


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``(T, constraints)`` for ``Annotated[T, ...]`` whose metadata are only supported constraints
    (directly or inside a ``Field(...)``); ``(annotation, [])`` for anything not annotated."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, []
    base, *metadata = typing.get_args(annotation)
    constraints: list[Any] = []
    for item in metadata:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            if type(constraint) not in _CONSTRAINTS:
                raise UnsupportedBinding(f"{annotation!r} carries {constraint!r}")
            constraints.append(constraint)
    return base, constraints


# pydantic-core's UUID parser (Rust, ~4x faster than uuid.UUID(text)). It takes the 32-digit,
# hyphenated, braced and urn:uuid: forms, all of which uuid.UUID reads as the same value; uuid.UUID
# also takes odder spellings, which this refuses, so the reference path (uuid.UUID, as fastavro
# reads it) decides those.
_parse_uuid = TypeAdapter(UUID).validator.validate_python


def _implied_by_int64(constraint: Any) -> bool:
    """Whether every integer the reader returns meets ``constraint`` (it refuses varints above 64 bits)."""
    bound: Any
    if isinstance(constraint, annotated_types.Ge):
        bound = constraint.ge
        return bool(bound <= _INT64[0])
    if isinstance(constraint, annotated_types.Le):
        bound = constraint.le
        return bool(bound >= _INT64[1])
    return False


def _optional_inner(annotation: Any) -> Any | None:
    """``X`` for ``X | None`` (either spelling), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0]
    return None


def _is_str_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum) and issubclass(annotation, str)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class _Names:
    """Avro named types, registered in definition order as the compiler walks the schema."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def resolve(self, avro_type: Any, namespace: str | None) -> tuple[Any, str | None]:
        if isinstance(avro_type, str):
            if avro_type in PRIMITIVES:
                return avro_type, namespace
            for candidate in (avro_type, f"{namespace}.{avro_type}"):
                if candidate in self.types:
                    named = self.types[candidate]
                    return named, named.get("namespace", namespace)
            raise UnsupportedBinding(f"named type {avro_type!r} is used before it is defined")
        if isinstance(avro_type, dict) and avro_type.get("type") in ("record", "enum", "fixed"):
            name = avro_type["name"]
            own = avro_type.get("namespace", namespace) if "." not in name else name.rpartition(".")[0]
            self.types[name if "." in name else f"{own}.{name}"] = avro_type
            return avro_type, own
        return avro_type, namespace


class _Code:
    """Lines of one generated function, its constants and fresh local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def const(self, value: Any, stem: str = "K") -> str:
        for name, known in self.constants.items():
            if known is value:
                return name
        name = self.fresh(f"_{stem}")
        self.constants[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def build(self, name: str, params: str, body_indent_lines: list[str]) -> Callable[..., Any]:
        source = f"def {name}({params}):\n" + "\n".join(body_indent_lines) + "\n"
        namespace = dict(self.constants)
        exec(compile(source, f"<avro_codegen {name}>", "exec"), namespace)
        function: Callable[..., Any] = namespace[name]
        function.__source__ = source  # type: ignore[attr-defined]  # for reading what was generated
        return function


def _model_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return dict(model.__pydantic_fields__)


def _check_field(model: type[BaseModel], name: str, info: FieldInfo) -> None:
    if (info.alias not in (None, name)) or (info.validation_alias not in (None, name)):
        raise UnsupportedBinding(f"{model.__name__}.{name} has an alias")
    if info.exclude:
        raise UnsupportedBinding(f"{model.__name__}.{name} is excluded from dumps")
    for item in info.metadata:
        if type(item) not in _CONSTRAINTS:
            raise UnsupportedBinding(f"{model.__name__}.{name} carries {item!r}")
    if info.metadata and _optional_inner(info.annotation) is not None:
        raise UnsupportedBinding(f"{model.__name__}.{name}: constraint on an optional field")


def _after_validators(model: type[BaseModel], name: str) -> list[Callable[[Any], Any]]:
    """The field's validators in the order pydantic runs them; only plain ``after`` ones compile."""
    found: list[Callable[[Any], Any]] = []
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if name not in decorator.info.fields and "*" not in decorator.info.fields:
            continue
        if decorator.info.mode != "after":
            raise UnsupportedBinding(f"{model.__name__}.{name} has a {decorator.info.mode!r} validator")
        parameters = inspect.signature(decorator.func).parameters.values()
        positional = [
            p
            for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(positional) != 1 or any(p.kind is p.VAR_POSITIONAL for p in parameters):
            raise UnsupportedBinding(f"{model.__name__}.{name}: validator takes validation info")
        found.append(decorator.func)
    return found


def _record_fields(
    record: dict[str, Any], model: type[BaseModel], detached: Mapping[str, type[BaseModel]]
) -> Iterator[tuple[dict[str, Any], FieldInfo | None]]:
    """Each Avro field with the model field it binds to (None for a detached field)."""
    fields = _model_fields(model)
    avro_names = [f["name"] for f in record["fields"]]
    if sorted(n for n in avro_names if n not in detached) != sorted(fields):
        raise UnsupportedBinding(
            f"record {record['name']} fields {avro_names} differ from {model.__name__} fields {list(fields)}"
        )
    for field in record["fields"]:
        yield field, (None if field["name"] in detached else fields[field["name"]])


class _WriterCompiler:
    """Emits code appending the Avro encoding of a value (a Python expression) to ``out``."""

    def __init__(self) -> None:
        self.code = _Code()
        self.names = _Names()

    def long(self, indent: int, expr: str) -> None:
        v = self.code.fresh("n")
        self.code.emit(indent, f"{v} = {expr}")
        self.code.emit(indent, f"out += _ZZ[{v}] if 0 <= {v} < {_ZIGZAG_CACHED} else _varint({v})")

    def value(self, avro_type: Any, annotation: Any, expr: str, indent: int, namespace: str | None) -> None:
        avro_type, namespace = self.names.resolve(avro_type, namespace)
        annotation, _ = _unwrap(annotation)  # constraints hold: the model was validated
        c = self.code
        if isinstance(avro_type, list):
            inner = _optional_inner(annotation)
            if inner is None or len(avro_type) != 2 or "null" not in avro_type:
                raise UnsupportedBinding(f"union {avro_type} bound to {annotation!r}")
            v = c.fresh("u")
            c.emit(indent, f"{v} = {expr}")
            null_index = avro_type.index("null")
            c.emit(indent, f"if {v} is None:")
            c.emit(indent + 1, f"out += {_ZIGZAG[null_index]!r}")
            c.emit(indent, "else:")
            c.emit(indent + 1, f"out += {_ZIGZAG[1 - null_index]!r}")
            self.value(avro_type[1 - null_index], inner, v, indent + 1, namespace)
            return
        kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if isinstance(kind, (dict, list)):
            self.value(kind, annotation, expr, indent, namespace)
            return
        if logical is not None:
            self.logical(kind, logical, annotation, expr, indent)
        elif kind == "null" and annotation is type(None):
            pass
        elif kind == "string" and annotation is str:
            s = c.fresh("s")
            c.emit(indent, f"{s} = {expr}.encode()")
            self.long(indent, f"len({s})")
            c.emit(indent, f"out += {s}")
        elif kind == "bytes" and annotation is bytes:
            s = c.fresh("s")
            c.emit(indent, f"{s} = {expr}")
            self.long(indent, f"len({s})")
            c.emit(indent, f"out += {s}")
        elif kind in ("int", "long") and annotation is int:
            self.long(indent, expr)
        elif kind == "double" and annotation is float:
            c.emit(indent, f"out += {c.const(struct.Struct('<d').pack, 'pack_d')}({expr})")
        elif kind == "float" and annotation is float:
            c.emit(indent, f"out += {c.const(struct.Struct('<f').pack, 'pack_f')}({expr})")
        elif kind == "boolean" and annotation is bool:
            c.emit(indent, f"out += b'\\x01' if {expr} else b'\\x00'")
        elif kind == "enum" and (_is_str_enum(annotation) or annotation is str):
            index = c.const({symbol: _ZIGZAG[i] for i, symbol in enumerate(avro_type["symbols"])}, "enum")
            c.emit(indent, f"out += {index}[{expr}]")
        elif kind == "fixed" and annotation is bytes:
            s = c.fresh("s")
            c.emit(indent, f"{s} = {expr}")
            c.emit(indent, f"if len({s}) != {avro_type['size']}: raise _Invalid('fixed size')")
            c.emit(indent, f"out += {s}")
        elif kind == "array" and typing.get_origin(annotation) is list:
            (item_type,) = typing.get_args(annotation)
            items, item = c.fresh("a"), c.fresh("i")
            c.emit(indent, f"{items} = {expr}")
            c.emit(indent, f"if {items}:")
            self.long(indent + 1, f"len({items})")
            c.emit(indent + 1, f"for {item} in {items}:")
            self.value(avro_type["items"], item_type, item, indent + 2, namespace)
            c.emit(indent, "out += b'\\x00'")
        elif kind == "map" and typing.get_origin(annotation) is dict:
            key_type, value_type = typing.get_args(annotation)
            if key_type is not str:
                raise UnsupportedBinding(f"map bound to {annotation!r}")
            entries, key, item = c.fresh("m"), c.fresh("k"), c.fresh("i")
            c.emit(indent, f"{entries} = {expr}")
            c.emit(indent, f"if {entries}:")
            self.long(indent + 1, f"len({entries})")
            c.emit(indent + 1, f"for {key}, {item} in {entries}.items():")
            self.value("string", str, key, indent + 2, namespace)
            self.value(avro_type["values"], value_type, item, indent + 2, namespace)
            c.emit(indent, "out += b'\\x00'")
        elif kind == "record" and _is_model(annotation):
            r = c.fresh("r")
            c.emit(indent, f"{r} = {expr}")
            self.record(avro_type, annotation, r, {}, indent, namespace)
        else:
            raise UnsupportedBinding(f"Avro {avro_type!r} bound to {annotation!r}")

    def logical(self, kind: str, logical: str, annotation: Any, expr: str, indent: int) -> None:
        c = self.code
        if (kind, logical) == ("string", "uuid") and annotation is UUID:
            s = c.fresh("s")
            c.emit(indent, f"{s} = str({expr}).encode()")
            self.long(indent, f"len({s})")
            c.emit(indent, f"out += {s}")
        elif (kind, logical) == ("long", "timestamp-millis") and annotation is datetime:
            # Floor division of the timedelta: fastavro truncates microseconds the same way.
            self.long(indent, f"({expr} - {c.const(_EPOCH, 'epoch')}) // {c.const(_MILLISECOND, 'ms')}")
        else:
            raise UnsupportedBinding(f"logical type {kind}/{logical} bound to {annotation!r}")

    def record(
        self,
        record: dict[str, Any],
        model: type[BaseModel],
        obj: str,
        detached: Mapping[str, type[BaseModel]],
        indent: int,
        namespace: str | None,
    ) -> None:
        decorators = model.__pydantic_decorators__
        if decorators.field_serializers or decorators.model_serializers:
            raise UnsupportedBinding(f"{model.__name__} has serializers: dumps differ from attributes")
        for field, info in _record_fields(record, model, detached):
            name = field["name"]
            if info is None:
                self.record_value(field["type"], detached[name], name, indent, namespace)
                continue
            _check_field(model, name, info)
            self.value(field["type"], info.annotation, f"{obj}.{name}", indent, namespace)

    def record_value(
        self, avro_type: Any, model: type[BaseModel], obj: str, indent: int, namespace: str | None
    ) -> None:
        resolved, own = self.names.resolve(avro_type, namespace)
        if not (isinstance(resolved, dict) and resolved.get("type") == "record"):
            raise UnsupportedBinding(f"detached field of type {avro_type!r} is not a record")
        self.record(resolved, model, obj, {}, indent, own)


class _ReaderCompiler:
    """Emits code parsing the value at ``p`` in ``buf`` into a local variable."""

    def __init__(self) -> None:
        self.code = _Code()
        self.names = _Names()

    def long(self, indent: int, target: str) -> None:
        c = self.code
        c.emit(indent, f"{target} = _ONE[buf[p]]")
        c.emit(indent, f"if {target} is None:")
        c.emit(indent + 1, f"{target}, p = _varint(buf, p)")
        c.emit(indent, "else:")
        c.emit(indent + 1, "p += 1")

    def sized(self, indent: int, target: str, decode: bool) -> None:
        """A string or bytes: length, then content (a short read shows in the final length check)."""
        c = self.code
        k, e = c.fresh("k"), c.fresh("e")
        c.emit(indent, f"{k} = _SIZED[buf[p]]")
        c.emit(indent, f"if {k}:")
        c.emit(indent + 1, f"{e} = p + {k}")
        c.emit(indent + 1, f"{target} = buf[p + 1:{e}]{'.decode()' if decode else ''}")
        c.emit(indent + 1, f"p = {e}")
        c.emit(indent, "else:")
        low, high = c.fresh("lo"), c.fresh("hi")
        c.emit(indent + 1, f"{low} = _LOW[buf[p]]")
        c.emit(indent + 1, f"{high} = buf[p + 1]")
        c.emit(indent + 1, f"if {low} >= 0 and {high} < 128:")
        c.emit(indent + 2, f"{e} = p + 2 + ({low} | {high} << 6)")
        c.emit(indent + 2, f"{target} = buf[p + 2:{e}]{'.decode()' if decode else ''}")
        c.emit(indent + 2, f"p = {e}")
        c.emit(indent + 1, "else:")
        c.emit(indent + 2, f"{target}, p = {'_str' if decode else '_sized'}(buf, p)")

    def count(self, indent: int, target: str, what: str) -> None:
        """A block count of an array or map; every item takes at least one byte, so more than the
        bytes left is malformed (and would only make a huge loop)."""
        self.long(indent, target)
        self.code.emit(indent, f"if {target} < 0 or {target} > end - p: raise _Invalid('{what} block count')")

    def value(self, avro_type: Any, annotation: Any, target: str, indent: int, namespace: str | None) -> None:
        annotation, constraints = _unwrap(annotation)
        self.unconstrained(avro_type, annotation, target, indent, namespace)
        resolved, _ = self.names.resolve(avro_type, namespace)
        if resolved in ("int", "long"):
            constraints = [c for c in constraints if not _implied_by_int64(c)]
        self.check(constraints, target, indent, repr(annotation))

    def check(self, constraints: list[Any], target: str, indent: int, what: str) -> None:
        for constraint in constraints:
            test = _CONSTRAINTS[type(constraint)].format(v=target, c=constraint)
            self.code.emit(indent, f"if not {test}: raise _Invalid({what!r})")

    def unconstrained(
        self, avro_type: Any, annotation: Any, target: str, indent: int, namespace: str | None
    ) -> None:
        avro_type, namespace = self.names.resolve(avro_type, namespace)
        c = self.code
        if isinstance(avro_type, list):
            inner = _optional_inner(annotation)
            if inner is None or len(avro_type) != 2 or "null" not in avro_type:
                raise UnsupportedBinding(f"union {avro_type} bound to {annotation!r}")
            # The branch index is one byte, 0 or 2 (zigzag of 0 and 1); anything else, including a
            # longer encoding of the same index, is left to the reference path.
            null_index = avro_type.index("null")
            branch = c.fresh("u")
            c.emit(indent, f"{branch} = buf[p]")
            c.emit(indent, "p += 1")
            c.emit(indent, f"if {branch} == {2 * null_index}:")
            c.emit(indent + 1, f"{target} = None")
            c.emit(indent, f"elif {branch} == {2 * (1 - null_index)}:")
            self.value(avro_type[1 - null_index], inner, target, indent + 1, namespace)
            c.emit(indent, "else:")
            c.emit(indent + 1, f"raise _Invalid('union branch byte ' + str({branch}))")
            return
        kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if isinstance(kind, (dict, list)):
            self.unconstrained(kind, annotation, target, indent, namespace)
            return
        if logical is not None:
            self.logical(kind, logical, annotation, target, indent)
        elif kind == "null" and annotation is type(None):
            c.emit(indent, f"{target} = None")
        elif kind == "string" and annotation is str:
            self.sized(indent, target, decode=True)
        elif kind == "bytes" and annotation is bytes:
            self.sized(indent, target, decode=False)
        elif kind in ("int", "long") and annotation is int:
            self.long(indent, target)
        elif kind in ("double", "float") and annotation is float:
            unpack = c.const(struct.Struct("<d" if kind == "double" else "<f").unpack_from, "unpack")
            c.emit(indent, f"{target}, = {unpack}(buf, p)")
            c.emit(indent, f"p += {8 if kind == 'double' else 4}")
        elif kind == "boolean" and annotation is bool:
            # fastavro reads any non-zero byte as True; only 0 and 1 are valid Avro, and the
            # reference path decides the rest.
            c.emit(indent, "b = buf[p]")
            c.emit(indent, "if b > 1: raise _Invalid('boolean byte ' + str(b))")
            c.emit(indent, f"{target} = b == 1")
            c.emit(indent, "p += 1")
        elif kind == "enum" and (_is_str_enum(annotation) or annotation is str):
            symbols = avro_type["symbols"]
            try:
                members = tuple(annotation(s) for s in symbols)
            except ValueError as exc:
                raise UnsupportedBinding(
                    f"enum {avro_type['name']} symbols vs {annotation!r}: {exc}"
                ) from exc
            table = c.const(members, "symbols")
            i = c.fresh("e")
            self.long(indent, i)
            c.emit(indent, f"if not 0 <= {i} < {len(members)}: raise _Invalid('enum index ' + str({i}))")
            c.emit(indent, f"{target} = {table}[{i}]")
        elif kind == "fixed" and annotation is bytes:
            size = avro_type["size"]
            c.emit(indent, f"{target} = buf[p:p + {size}]")
            c.emit(indent, f"p += {size}")
        elif kind == "array" and typing.get_origin(annotation) is list:
            (item_type,) = typing.get_args(annotation)
            items, n, item = c.fresh("a"), c.fresh("c"), c.fresh("i")
            c.emit(indent, f"{items} = []")
            c.emit(indent, "while True:")
            self.count(indent + 1, n, "array")
            c.emit(indent + 1, f"if not {n}: break")
            c.emit(indent + 1, f"for _ in range({n}):")
            self.value(avro_type["items"], item_type, item, indent + 2, namespace)
            c.emit(indent + 2, f"{items}.append({item})")
            c.emit(indent, f"{target} = {items}")
        elif kind == "map" and typing.get_origin(annotation) is dict:
            key_type, value_type = typing.get_args(annotation)
            if key_type is not str:
                raise UnsupportedBinding(f"map bound to {annotation!r}")
            entries, n, key, item = c.fresh("m"), c.fresh("c"), c.fresh("k"), c.fresh("i")
            c.emit(indent, f"{entries} = {{}}")
            c.emit(indent, "while True:")
            self.count(indent + 1, n, "map")
            c.emit(indent + 1, f"if not {n}: break")
            c.emit(indent + 1, f"for _ in range({n}):")
            self.value("string", str, key, indent + 2, namespace)
            self.value(avro_type["values"], value_type, item, indent + 2, namespace)
            c.emit(indent + 2, f"{entries}[{key}] = {item}")
            c.emit(indent, f"{target} = {entries}")
        elif kind == "record" and _is_model(annotation):
            self.record(avro_type, annotation, target, {}, indent, namespace)
        else:
            raise UnsupportedBinding(f"Avro {avro_type!r} bound to {annotation!r}")

    def logical(self, kind: str, logical: str, annotation: Any, target: str, indent: int) -> None:
        c = self.code
        if (kind, logical) == ("string", "uuid") and annotation is UUID:
            s = c.fresh("s")
            self.sized(indent, s, decode=True)
            c.emit(indent, f"{target} = {c.const(_parse_uuid, 'uuid')}({s})")
        elif (kind, logical) == ("long", "timestamp-millis") and annotation is datetime:
            ms = c.fresh("t")
            self.long(indent, ms)
            # As fastavro builds it: the epoch (UTC) plus the milliseconds.
            c.emit(indent, f"{target} = {c.const(_EPOCH, 'epoch')} + {c.const(_MILLISECOND, 'ms')} * {ms}")
        else:
            raise UnsupportedBinding(f"logical type {kind}/{logical} bound to {annotation!r}")

    def record(
        self,
        record: dict[str, Any],
        model: type[BaseModel],
        target: str,
        detached: Mapping[str, str],
        indent: int,
        namespace: str | None,
        detached_models: Mapping[str, type[BaseModel]] | None = None,
    ) -> None:
        """Parse ``record`` into ``target`` (a ``model``); detached fields go to their own locals."""
        check_constructible(model)
        c = self.code
        locals_: dict[str, str] = {}
        for field, info in _record_fields(record, model, detached_models or {}):
            name = field["name"]
            if info is None:
                assert detached_models is not None
                resolved, own = self.names.resolve(field["type"], namespace)
                if not (isinstance(resolved, dict) and resolved.get("type") == "record"):
                    raise UnsupportedBinding(f"detached field {name} is not a record")
                self.record(resolved, detached_models[name], detached[name], {}, indent, own)
                continue
            _check_field(model, name, info)
            local = c.fresh("f")
            self.value(field["type"], info.annotation, local, indent, namespace)
            locals_[name] = local
        for name, info in _model_fields(model).items():
            local = locals_[name]
            constraints = info.metadata
            if next(f["type"] for f in record["fields"] if f["name"] == name) in ("int", "long"):
                constraints = [c for c in constraints if not _implied_by_int64(c)]
            self.check(constraints, local, indent, f"{model.__name__}.{name}")
            for validator in _after_validators(model, name):
                c.emit(indent, f"{local} = {c.const(validator, 'validator')}({local})")
        # Built inline rather than through constructor(): a call per model is a measurable share.
        _emit_new(c, indent, target, model, locals_)


_WRITER_CONSTANTS = {"_ZZ": _ZIGZAG, "_varint": _zigzag_varint, "_Invalid": InvalidBody}
_READER_CONSTANTS = {
    "_ONE": _ONE_BYTE,
    "_SIZED": _SHORT_SIZED,
    "_LOW": _TWO_BYTE_LOW,
    "_varint": _read_varint,
    "_sized": _read_sized,
    "_str": _read_str,
    "_object_new": object.__new__,
    "_Invalid": InvalidBody,
}


def compile_writer(
    schema: dict[str, Any], model: type[BaseModel], detached: Mapping[str, type[BaseModel]] | None = None
) -> Callable[..., bytes]:
    """``write(obj, *detached_values) -> bytes``: the Avro body of ``obj`` (a ``model``) under ``schema``.

    ``detached`` names top-level record fields that are not attributes of ``model`` but separate
    arguments, in order (the envelope of an event record).
    """
    detached = dict(detached or {})
    compiler = _WriterCompiler()
    compiler.code.constants.update(_WRITER_CONSTANTS)
    resolved, namespace = compiler.names.resolve(schema, None)
    compiler.code.emit(1, "out = bytearray()")
    compiler.record(resolved, model, "obj", detached, 1, namespace)
    compiler.code.emit(1, "return bytes(out)")
    params = ", ".join(["obj", *detached])
    return compiler.code.build(f"write_{schema['name'].rpartition('.')[2]}", params, compiler.code.lines)


def compile_reader(
    schema: dict[str, Any], model: type[BaseModel], detached: Mapping[str, type[BaseModel]] | None = None
) -> Callable[[bytes], Any]:
    """``read(body)``: the ``model`` in an Avro body written with ``schema``; with ``detached``
    fields, a tuple ``(model, *detached models in order)``. Raises on anything malformed, including
    bytes left over."""
    detached = dict(detached or {})
    compiler = _ReaderCompiler()
    compiler.code.constants.update(_READER_CONSTANTS)
    resolved, namespace = compiler.names.resolve(schema, None)
    targets = {name: compiler.code.fresh("d") for name in detached}
    compiler.code.emit(1, "p = 0")
    compiler.code.emit(1, "end = len(buf)")
    compiler.record(resolved, model, "root", targets, 1, namespace, detached)
    compiler.code.emit(1, "if p != end: raise _Invalid(str(end - p) + ' bytes left or missing at the end')")
    result = ", ".join(["root", *targets.values()]) if detached else "root"
    compiler.code.emit(1, f"return {result}")
    return compiler.code.build(f"read_{schema['name'].rpartition('.')[2]}", "buf", compiler.code.lines)
