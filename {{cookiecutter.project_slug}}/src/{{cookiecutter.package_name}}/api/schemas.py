"""Request and response models: the constraints live in the types.

Measurements are centimetres; the bounds are generous for irises (the data
set spans 0.1-7.9 cm) and reject what cannot be a flower: zero, negative,
NaN, infinity, strings, booleans and null.

Your own data: `Item`'s fields are the features, named and ordered as the
columns of the training CSV, each with its own bounds and example (see
README, The model). Everything else follows them.
"""

import math
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Annotated, NamedTuple

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

ABOVE, AT_MOST = 0, 30  # centimetres

Centimetres = Annotated[
    float,
    Field(
        gt=ABOVE, le=AT_MOST, allow_inf_nan=False, strict=True, examples=[5.1]
    ),
]


class Item(BaseModel):
    """One flower's measurements, in centimetres."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sepal_length": 5.1,
                    "sepal_width": 3.5,
                    "petal_length": 1.4,
                    "petal_width": 0.2,
                }
            ]
        },
    )

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres


# The order the model was trained on (the CSV header, label excluded).
FEATURES = tuple(Item.model_fields)
# The documented example (/docs), also what the tests and `make bench` send.
EXAMPLE: dict = Item.model_config["json_schema_extra"]["examples"][0]


class BatchRequest(BaseModel):
    """Items to classify; answers come back in the same order."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(min_length=1)


class Prediction(BaseModel):
    label: str = Field(examples=["setosa"])
    confidence: float = Field(ge=0, le=1, examples=[0.98])
    probabilities: dict[str, float] = Field(
        examples=[{"setosa": 0.98, "versicolor": 0.015, "virginica": 0.005}]
    )


class BatchResponse(BaseModel):
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: what was wrong, and where (`loc` names the field)."""

    detail: list[ErrorDetail]


class Message(BaseModel):
    """A 4xx/5xx that is not about one field (limits, not ready)."""

    detail: str


_NUMBERS = {float, int}  # strict floats take JSON integers; never booleans
# JSON Schema words the fast path checks as Pydantic does (a float field
# with bounds): a field with any other type or constraint, or a validator,
# leaves every batch to Pydantic.
_SCHEMA_WORDS = {"type", "title", "description", "examples"}
_BOUND_WORDS = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}


class Bounds(NamedTuple):
    """One feature's limits as the fast path checks them."""

    lower: float = -math.inf
    lower_open: bool = False  # gt (True) or ge
    upper: float = math.inf
    upper_open: bool = False  # lt (True) or le

    def outside(self) -> dict[str, float]:
        """The nearest values refused, by side ("below", "above"); none on
        a side without a bound."""
        refused = {}
        if math.isfinite(self.lower):
            refused["below"] = (
                self.lower
                if self.lower_open
                else math.nextafter(self.lower, -math.inf)
            )
        if math.isfinite(self.upper):
            refused["above"] = (
                self.upper
                if self.upper_open
                else math.nextafter(self.upper, math.inf)
            )
        return refused


def feature_bounds(schema: dict) -> Bounds | None:
    """The bounds in a field's JSON schema (the one /docs shows), or None
    if the fast path cannot check the field as Pydantic does."""
    words = set(schema)
    if (
        schema.get("type") != "number"
        or not words <= _SCHEMA_WORDS | _BOUND_WORDS
        # Two bounds on one side (ge and gt): rare, left to Pydantic.
        or {"minimum", "exclusiveMinimum"} <= words
        or {"maximum", "exclusiveMaximum"} <= words
        # A bound no float holds (an integer past 2**53): left to Pydantic.
        or any(
            float(schema[word]) != schema[word]
            for word in words & _BOUND_WORDS
        )
    ):
        return None
    return Bounds(
        schema.get("exclusiveMinimum", schema.get("minimum", -math.inf)),
        "exclusiveMinimum" in words,
        schema.get("exclusiveMaximum", schema.get("maximum", math.inf)),
        "exclusiveMaximum" in words,
    )


def has_validators(model: type[BaseModel]) -> bool:
    """Whether the model runs code of its own (the fast path would not)."""
    decorators = model.__pydantic_decorators__
    return bool(
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
    )


_PROPERTIES = Item.model_json_schema()["properties"]
BOUNDS = [feature_bounds(_PROPERTIES[name]) for name in FEATURES]
# Whether batch_rows may read bodies itself (else Pydantic reads them all).
FAST_PATH = None not in BOUNDS and not (
    has_validators(Item) or has_validators(BatchRequest)
)


def refused(name: str) -> dict[str, float]:
    """The nearest values the bounds of feature `name` refuse, by side
    ("below", "above"); none for a side without a bound, or a field the
    fast path does not read."""
    bounds = BOUNDS[FEATURES.index(name)]
    return {} if bounds is None else bounds.outside()


if FAST_PATH:  # the nearest refused values: valid ones lie between them
    _REFUSED = [refused(name) for name in FEATURES]
    _BELOW = np.array([side.get("below", -math.inf) for side in _REFUSED])
    _ABOVE = np.array([side.get("above", math.inf) for side in _REFUSED])


def _within_bounds(rows: np.ndarray) -> bool:
    """Every value within its feature's bounds, and finite (Pydantic's
    strict floats refuse NaN and infinity): NaN fails every comparison,
    infinities the ones with infinity on a side without a bound."""
    return bool(((rows > _BELOW) & (rows < _ABOVE)).all())


def tuple_reader(getter, names: Sequence[str]) -> Callable[[object], tuple]:
    """getter(*names) (itemgetter, attrgetter: C speed) that always gives a
    tuple: the getter of one name gives the bare value."""
    read = getter(*names)
    if len(names) == 1:
        return lambda item: (read(item),)
    return read


_read_row = tuple_reader(itemgetter, FEATURES)


class ValidBatch(NamedTuple):
    rows: list[tuple]  # floats in FEATURES order (cache and drift keys)
    batch: np.ndarray  # the same rows as the model's float32 input


def batch_rows(body: bytes) -> ValidBatch | None:
    """The rows of a valid /batch-predict body, or None: then Pydantic
    decides (and words the 422).

    The fast path of the common, valid request. It accepts only bodies
    BatchRequest accepts, with the same rows (checked on generated and
    damaged bodies in tests/test_schemas.py), and gives the model's input
    array besides. For 256 items, a compact body (LAYOUT) takes under half
    the time of BatchRequest and the row reading; any other body, about
    four fifths.
    """
    if not FAST_PATH:
        return None
    return read_laid_out(body) or read_parsed(body)


# Bytes a JSON number without an exponent is made of.
_NUMBER_BYTES = b"0123456789.-+"
_KEPT = _NUMBER_BYTES + b",[]{}:"
_DROPPED = bytes(sorted(set(range(256)) - set(_KEPT)))
# What is kept of a body: the colon before each value becomes a minus
# sign, which a number must follow at once; braces become spaces, which
# end a number.
_SIGNED = bytes.maketrans(b":{}", b"-  ")


class Layout(NamedTuple):
    """A compact body's bytes without its numbers: head, items split by
    commas, tail. Each item is the item's keys, in FEATURES order."""

    head: bytes
    item: bytes
    tail: bytes

    def holds(self, shape: bytes) -> bool:
        """Whether `shape` is this layout with one or more items."""
        n, rest = divmod(
            len(shape) - len(self.head) - len(self.tail) + 1,
            len(self.item) + 1,
        )
        if n < 1 or rest:
            return False
        items = b",".join(repeat(self.item, n))
        return shape == self.head + items + self.tail


def compact_layout(features: Sequence[str]) -> Layout | None:
    """The layout of a compact body (as orjson, httpx and JavaScript write
    it), or None if a feature name has a byte the reading keeps (a digit,
    a dot, a minus): the check would be ambiguous, so every body is parsed.

    Only the compact layout: with json.dumps's spaces, the reading must
    first rewrite each `": ` (a number put before the space would join
    the value), and then takes as long as read_parsed.
    """
    names = [orjson.dumps(name) for name in features]
    if any(set(name) & set(_KEPT) for name in names):
        return None
    keys = b",".join(name + b":" for name in names)
    return Layout(b'{"items":[', b"{" + keys + b"}", b"]}")


LAYOUT = compact_layout(FEATURES)


def read_laid_out(body: bytes) -> ValidBatch | None:
    """A body in the compact LAYOUT, read without a dict per item.

    Without its number bytes, the body must be the layout exactly. What it
    keeps, translated, must then be a JSON array of negated numbers:
    `:5.1,` becomes `-5.1,`, so number bytes anywhere but in a value's
    place (in a key, around a brace), or an empty value, break the array.
    So does a negative value (`--5`): read_parsed then reads that body.
    """
    if LAYOUT is None or not LAYOUT.holds(body.translate(None, _NUMBER_BYTES)):
        return None
    signed = body.translate(_SIGNED, _DROPPED)
    if signed[:2] != b" -":  # the head's colon, right before its `[`
        return None
    try:
        # 0 - x: never -0.0, which the item `0` would give as -x.
        flat = 0.0 - np.array(orjson.loads(signed[2:]), dtype=np.float64)
        flat = flat.reshape(-1, len(FEATURES))
    except (ValueError, OverflowError):  # orjson's errors are ValueErrors
        return None
    if not _within_bounds(flat):
        return None
    values = iter(flat.ravel().tolist())
    rows = list(zip(*[values] * len(FEATURES)))
    return ValidBatch(rows, flat.astype(np.float32))


def read_parsed(body: bytes) -> ValidBatch | None:
    """Any valid body: one orjson parse, then checks that each run over
    the whole list at C speed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or len(data) != 1:
        return None
    items = data.get("items")
    if type(items) is not list or not items:
        return None
    width = len(FEATURES)
    if set(map(type, items)) != {dict} or set(map(len, items)) != {width}:
        return None
    try:
        rows = list(map(_read_row, items))
    except KeyError:  # another field in place of one of ours
        return None
    values = list(chain.from_iterable(rows))
    types = set(map(type, values))
    if not types <= _NUMBERS:
        return None
    try:
        flat = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        return None
    flat = flat.reshape(-1, width)
    if not _within_bounds(flat):
        return None
    if int in types:  # as Pydantic answers: floats
        rows = [tuple(map(float, row)) for row in rows]
    return ValidBatch(rows, flat.astype(np.float32))
