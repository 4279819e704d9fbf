"""The fast path of /batch-predict accepts only what the schema accepts.

`batch_rows` may hand a body to Pydantic that it could have read itself,
but it must never accept a body BatchRequest refuses, nor read other rows.
"""

import json
import math
import re
from functools import partial

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError, field_validator

from {{ cookiecutter.package_name }}.api.schemas import (
    BOUNDS,
    EXAMPLE,
    FAST_PATH,
    FEATURES,
    LAYOUT,
    BatchRequest,
    Bounds,
    Item,
    batch_rows,
    compact_layout,
    feature_bounds,
    has_validators,
    read_laid_out,
    read_parsed,
    refused,
)
from {{ cookiecutter.package_name }}.predict import as_batch, row_reader

ROW_OF = row_reader(FEATURES)
# A field the fast path cannot check has no Bounds (and FAST_PATH is off).
KNOWN_BOUNDS = [bounds or Bounds() for bounds in BOUNDS]


def good(bounds: Bounds):
    """Floats within a feature's bounds."""
    return st.floats(
        min_value=None if math.isinf(bounds.lower) else bounds.lower,
        max_value=None if math.isinf(bounds.upper) else bounds.upper,
        exclude_min=bounds.lower_open and math.isfinite(bounds.lower),
        exclude_max=bounds.upper_open and math.isfinite(bounds.upper),
        allow_nan=False,
        allow_infinity=False,
    )


# Each feature at each of its bounds, and just beyond.
AT_THE_EDGES = {
    (name, edge)
    for name, bounds in zip(FEATURES, KNOWN_BOUNDS)
    for edge in [bounds.lower, bounds.upper, *refused(name).values()]
    if math.isfinite(edge)
}
EDGES = sorted({edge for _, edge in AT_THE_EDGES})
# Values on both sides of every bound, and of every type JSON has.
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 5, *EDGES]),
    st.sampled_from([int(edge) + step for edge in EDGES for step in (-1, 1)]),
    st.integers(-(10**400), 10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(good(KNOWN_BOUNDS[0]), max_size=2),
)
good_values = st.one_of(*map(good, KNOWN_BOUNDS))
keys = st.sampled_from([*FEATURES, "colour", FEATURES[0].title()])
# In FEATURES order (fixed_dictionaries shuffles), as clients mostly send.
good_item = st.tuples(*map(good, KNOWN_BOUNDS)).map(
    lambda values: dict(zip(FEATURES, values))
)
# Good but for one field: every bound and type, one at a time.
one_off_item = st.builds(
    lambda item, name, value: {**item, name: value},
    good_item,
    st.sampled_from(FEATURES),
    values,
)
items = st.one_of(
    st.fixed_dictionaries({name: values for name in FEATURES}),
    good_item,
    st.dictionaries(keys, good_values, max_size=5),
    st.lists(good_values, max_size=4),
    good_values,
)
bodies = st.one_of(
    st.fixed_dictionaries({"items": st.lists(items, max_size=4)}),
    # Mostly good batches, where one wrong value decides.
    st.fixed_dictionaries(
        {
            "items": st.lists(
                st.one_of(good_item, one_off_item), min_size=1, max_size=4
            )
        }
    ),
    st.fixed_dictionaries(
        {"items": st.lists(items, max_size=4), "extra": st.just(1)}
    ),
    st.lists(items, max_size=2),
    st.dictionaries(st.sampled_from(["items", "Items"]), st.just([])),
)


def pydantic_rows(body: bytes) -> list[tuple] | None:
    try:
        return list(map(ROW_OF, BatchRequest.model_validate_json(body).items))
    except ValidationError:
        return None


def one_off(name: str, value) -> dict:
    """A batch of one item, the documented example but for one field."""
    return {"items": [{**EXAMPLE, name: value}]}


# The compact layout (LAYOUT, read without a dict per item), and
# json.dumps's spaces (parsed).
compact = partial(json.dumps, separators=(",", ":"))
ENCODINGS = (compact, json.dumps)


def at_every_edge(test):
    """The test run on each feature at and beyond each bound, always, in
    both encodings."""
    for name, edge in sorted(AT_THE_EDGES):
        for dumps in ENCODINGS:
            at_edge = example(one_off(name, edge), dumps)
            test = at_edge.via(f"{name} at {edge}")(test)
    return test


def assert_read_as_pydantic_reads(body: bytes):
    fast = batch_rows(body)
    if fast is not None:
        assert fast.rows == pydantic_rows(body)
        assert all(type(v) is float for row in fast.rows for v in row)
        # Bytes, not ==: a 0.0 read as -0.0 would pass ==.
        assert fast.batch.tobytes() == as_batch(pydantic_rows(body)).tobytes()


@settings(max_examples=600, deadline=None)
@given(bodies, st.sampled_from(ENCODINGS))
@example(one_off(FEATURES[-1], True), json.dumps).via("a boolean")
@at_every_edge
def test_fast_path_accepts_only_what_the_schema_accepts(body, dumps):
    assert_read_as_pydantic_reads(dumps(body).encode())


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e999", "true", '"5"']
)
def test_literals_json_dumps_will_not_write_go_to_pydantic(literal):
    item = json.dumps({**EXAMPLE, FEATURES[0]: "X"})
    body = '{"items": [' + item.replace('"X"', literal) + "]}"
    assert batch_rows(body.encode()) is None
    assert pydantic_rows(body.encode()) is None


number_texts = st.text("0123456789.-+", max_size=4)
good_batches = st.fixed_dictionaries(
    {"items": st.lists(good_item, min_size=1, max_size=3)}
)


@settings(max_examples=600, deadline=None)
@given(good_batches, st.sampled_from(ENCODINGS), st.data())
def test_a_damaged_body_is_read_as_pydantic_reads_it(body, dumps, data):
    """A good batch in either encoding, with a few bytes taken out
    anywhere, or one value taken out, and number bytes (that value,
    or others) put in anywhere."""
    text = dumps(body)
    values = [m.span(1) for m in re.finditer(r'": ?(-?[0-9][^,}]*)', text)]
    start, end = data.draw(
        st.one_of(
            st.sampled_from(values),
            st.tuples(st.integers(0, len(text) - 1), st.integers(0, 4)).map(
                lambda cut: (cut[0], cut[0] + cut[1])
            ),
        )
    )
    put_in = data.draw(st.one_of(st.just(text[start:end]), number_texts))
    text = text[:start] + text[end:]
    # Anywhere, or near where the bytes were (in a key, around a brace).
    near = st.integers(max(0, start - 20), min(len(text), start + 3))
    at = data.draw(st.one_of(st.integers(0, len(text)), near))
    assert_read_as_pydantic_reads((text[:at] + put_in + text[at:]).encode())


@pytest.mark.parametrize("dumps", ENCODINGS)
@pytest.mark.parametrize(
    "old, new",
    [
        # The first value moved into its key, before it, or between key
        # and colon.
        ('"<name>"<colon><value>', '"<name><value>"<colon>'),
        ('"<name>"<colon><value>', '<value>"<name>"<colon>'),
        ('"<name>"<colon><value>', '"<name>"<value><colon>'),
        # The value's first digit between the colon and its space
        # (json.dumps's spaces): `"a":5 .1`, never 5.1.
        ('"<name>"<colon><value>', '"<name>":<first> <rest>'),
        # A digit after an item's closing brace.
        ("<last>}", "<last>}5"),
        # No value, or a negative one (read_parsed reads those).
        ('"<name>"<colon><value>', '"<name>"<colon>'),
        ('"<name>"<colon><value>', '"<name>"<colon>-<value>'),
    ],
)
def test_the_layout_reading_refuses_numbers_out_of_place(old, new, dumps):
    """In the example batch: <name> and <value> are its first feature
    and value (<first> the value's first byte, <rest> the others), <last>
    its last value, <colon> what follows each key. Each body keeps the
    layout's bytes without its numbers."""
    body = dumps({"items": [EXAMPLE, EXAMPLE]})
    value = compact(EXAMPLE[FEATURES[0]])
    for placeholder, text in [
        ("<name>", FEATURES[0]),
        ("<value>", value),
        ("<first>", value[0]),
        ("<rest>", value[1:]),
        ("<last>", compact(EXAMPLE[FEATURES[-1]])),
        ("<colon>", ":" if dumps is compact else ": "),
    ]:
        old = old.replace(placeholder, text)
        new = new.replace(placeholder, text)
    assert old in body
    body = body.replace(old, new, 1).encode()
    assert read_laid_out(body) is None
    assert_read_as_pydantic_reads(body)


def test_a_compact_body_skips_the_json_parse():
    if LAYOUT is None:
        pytest.skip("a feature name holds a digit, dot or minus sign")
    # The example, and the same in whole numbers, sent as JSON integers.
    as_int = {name: math.ceil(value) for name, value in EXAMPLE.items()}
    batch = {"items": [EXAMPLE, as_int]}
    body = compact(batch).encode()
    laid_out, parsed = read_laid_out(body), read_parsed(body)
    assert laid_out is not None and laid_out.rows == parsed.rows
    assert laid_out.batch.tobytes() == parsed.batch.tobytes()
    # Any other layout is parsed.
    for other in (json.dumps(batch), json.dumps(batch, indent=2)):
        assert read_laid_out(other.encode()) is None
        assert batch_rows(other.encode()).rows == laid_out.rows


def test_a_digit_in_a_feature_name_leaves_every_body_to_the_parse():
    assert compact_layout(["width_2", "height"]) is None
    assert compact_layout(["width", "height"]) is not None


def test_a_valid_batch_takes_the_fast_path():
    assert FAST_PATH, (
        "a field of Item has a type or constraint other than bounds, or a "
        "validator: Pydantic reads every /batch-predict body"
    )
    # The same in whole numbers, sent as JSON integers.
    whole = {name: float(math.ceil(value)) for name, value in EXAMPLE.items()}
    as_int = {name: int(value) for name, value in whole.items()}
    body = json.dumps({"items": [EXAMPLE, as_int]})
    rows, batch = batch_rows(body.encode())
    assert rows == [ROW_OF(Item(**EXAMPLE)), ROW_OF(Item(**whole))]
    assert all(type(v) is float for row in rows for v in row)
    assert batch.dtype == np.float32 and batch.shape == (2, len(FEATURES))
    assert np.array_equal(batch, as_batch(rows))


@pytest.mark.parametrize(
    "schema, bounds",
    [
        (
            {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
            Bounds(0, True, 30, False),
        ),
        (
            {"type": "number", "minimum": -5, "exclusiveMaximum": 5},
            Bounds(-5, False, 5, True),
        ),
        ({"type": "number", "title": "Any"}, Bounds()),
        ({"type": "integer", "minimum": 0}, None),
        ({"type": "number", "multipleOf": 0.5}, None),
        ({"type": "number", "minimum": 5, "exclusiveMinimum": 0}, None),
        ({"anyOf": [{"type": "number"}, {"type": "null"}]}, None),
    ],
)
def test_fast_path_reads_only_the_bounds_it_can_check(schema, bounds):
    """Any other type or constraint (the fast path would miss it) turns
    the fast path off: Pydantic then reads every batch."""
    assert feature_bounds(schema) == bounds


def test_a_validator_of_its_own_turns_the_fast_path_off():
    class Checked(Item):
        @field_validator(FEATURES[0])
        @classmethod
        def never_negative(cls, value: float) -> float:
            return value

    assert not has_validators(Item) and has_validators(Checked)
