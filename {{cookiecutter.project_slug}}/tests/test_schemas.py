"""The fast path of /batch-predict accepts only what the schema accepts.

`batch_rows` may hand a body to Pydantic that it could have read itself,
but it must never accept a body BatchRequest refuses, nor read other rows.
"""

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.api.schemas import (
    FEATURES,
    BatchRequest,
    batch_rows,
)
from {{ cookiecutter.package_name }}.predict import as_batch, row_reader

ROW_OF = row_reader(FEATURES)

# Values on both sides of every bound, and of every type JSON has.
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 30, 30.0, 30.000001, 31, 5]),
    st.integers(-(10**400), 10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.floats(0.1, 29), max_size=2),
)
good_values = st.floats(min_value=0.01, max_value=30)
keys = st.sampled_from([*FEATURES, "colour", "Sepal_length"])
good_item = st.fixed_dictionaries({name: good_values for name in FEATURES})
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


def one_off(value) -> dict:
    """A batch of one item, good but for its last field."""
    return {"items": [{**dict.fromkeys(FEATURES, 5.1), FEATURES[-1]: value}]}


@settings(max_examples=600, deadline=None)
@given(bodies)
@example(one_off(31)).via("the upper bound")
@example(one_off(30.000001)).via("just over it")
@example(one_off(0.0)).via("the lower bound")
@example(one_off(True)).via("a boolean")
def test_fast_path_accepts_only_what_the_schema_accepts(body):
    encoded = json.dumps(body).encode()
    fast = batch_rows(encoded)
    if fast is not None:
        assert fast.rows == pydantic_rows(encoded)
        assert all(type(v) is float for row in fast.rows for v in row)
        assert np.array_equal(fast.batch, as_batch(fast.rows))


@pytest.mark.parametrize(
    "literal", ["NaN", "Infinity", "-Infinity", "1e999", "true", '"5"']
)
def test_literals_json_dumps_will_not_write_go_to_pydantic(literal):
    fields = [f'"{FEATURES[0]}": {literal}']
    fields += [f'"{name}": 5.1' for name in FEATURES[1:]]
    body = '{"items": [' + "{" + ", ".join(fields) + "}" + "]}"
    assert batch_rows(body.encode()) is None
    assert pydantic_rows(body.encode()) is None


def test_a_valid_batch_takes_the_fast_path():
    item = dict.fromkeys(FEATURES, 5.1)
    body = json.dumps({"items": [item, {**item, FEATURES[0]: 3}]})
    others = (5.1,) * (len(FEATURES) - 1)
    rows, batch = batch_rows(body.encode())
    assert rows == [(5.1, *others), (3.0, *others)]
    assert batch.dtype == np.float32 and batch.shape == (2, len(FEATURES))
    assert np.array_equal(batch, as_batch(rows))
