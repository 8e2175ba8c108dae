"""Request and response models. /predict mirrors Hugging Face text-embeddings-inference."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

MAX_INPUTS = 100_000  # texts in one request's list (TEXTCLF_MAX_CLIENT_BATCH is checked after)
MAX_TOP_K = 10_000
Inputs = StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_INPUTS)]

# What /predict and /embed take. The schema documents what the handlers require (a text with a
# non-space character, a list with at least one text); the handlers answer 400 `empty` for the
# rest, so validation itself is unchanged.
_TEXT_SCHEMA = {"type": "string", "minLength": 1, "pattern": r"\S"}
Text = Annotated[StrictStr, WithJsonSchema(_TEXT_SCHEMA)]
ClassifyInputs = Text | Annotated[list[StrictStr], Field(max_length=MAX_INPUTS), WithJsonSchema(
    {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1, "maxItems": MAX_INPUTS})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    inputs: ClassifyInputs = Field(description="one text, or a list of texts")
    raw_scores: StrictBool = Field(False, description="return logits instead of probabilities")
    truncate: StrictBool = Field(True, description="cut texts to the model's token limit; "
                                 "false: a longer text is refused with 422")
    truncation_direction: Annotated[str, Field(pattern="^(right|left|Right|Left)$")] = "right"
    top_k: Annotated[StrictInt, Field(ge=1, le=MAX_TOP_K)] | None = Field(
        None, description="only the k best labels (default: all)")


class LabelScore(BaseModel):
    label: str
    score: float


class WordsRequest(Strict):
    words: Annotated[list[StrictStr], Field(min_length=1, max_length=1000)]
    normalize: StrictBool = Field(False, description="unit-length vectors")
    neighbors: Annotated[StrictInt, Field(ge=0, le=100)] = Field(
        0, description="add the k nearest vocabulary words by cosine similarity")


class TextsRequest(Strict):
    inputs: ClassifyInputs = Field(description="text(s) to turn into pooled LSTM feature vectors")
    normalize: StrictBool = Field(False, description="unit-length vectors")
    truncate: StrictBool = True


class Neighbor(BaseModel):
    word: str
    score: float


class WordVector(BaseModel):
    word: str = Field(description="the word as asked for")
    token: str = Field(description="the word after the tokenizer's normalisation")
    id: int
    in_vocab: bool
    vector: list[float]
    neighbors: list[Neighbor]


class WordsResponse(BaseModel):
    dim: int
    vectors: list[WordVector]


class TokenizeRequest(Strict):
    inputs: Inputs


class TokenInfo(BaseModel):
    id: int
    text: str
    unk: bool
    special: bool = False
    start: int = Field(description="offset of the first character in the input")
    stop: int = Field(description="offset one past the last character in the input")


class ErrorBody(BaseModel):
    error: str
    error_type: str


class Health(BaseModel):
    status: str
    model_version: str | None = None


class JSONObject(RootModel[dict[str, Any]]):
    """Any JSON object; the handler decides which request model it is."""
