"""Request and response models: the constraints live in the types.

Measurements are centimetres; the bounds are generous for irises (the data
set spans 0.1-7.9 cm) and reject what cannot be a flower: zero, negative,
NaN, infinity, strings, booleans and null.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The order the model was trained on (the CSV header, label excluded).
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

Centimetres = Annotated[
    float,
    Field(gt=0, le=30, allow_inf_nan=False, strict=True, examples=[5.1]),
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
