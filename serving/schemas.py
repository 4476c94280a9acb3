"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI at /docs).

Requests are strict: unknown fields, wrong JSON types (``"5"`` for a number, ``true`` for a
number), NaN/inf and out-of-range values are rejected with 422 naming the field. List bounds
are the constants of :mod:`serving.config`, so the limits served and the limits documented
in OpenAPI are the same numbers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from serving.config import MAX_K, MAX_RECENT_ITEMS, MAX_TRANSACTIONS
from serving.errors import LIST_TAG, SINGLE_TAG

Decision = Literal["approve", "review", "decline"]
Strategy = Literal["personal", "recent_items", "popularity"]

_STRICT = ConfigDict(extra="forbid", strict=True)
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")]
FeatureName = Annotated[str, Field(min_length=1, max_length=128)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

MAX_FEATURES = 512


class RecommendRequest(BaseModel):
    """Top-k items for one user."""

    model_config = _STRICT

    user_id: Id = Field(description="the shop's user id (unknown users get a cold-start answer)")
    recent_item_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_RECENT_ITEMS,
        description="items the user bought or put in the basket lately, oldest first; they "
                    "extend a known user's history and are the whole query of a new user")
    k: int = Field(default=20, ge=1, le=MAX_K, description="how many items to return")
    exclude_purchased: bool = Field(
        default=False, description="leave out items in the user's history and "
                                   "recent_item_ids (off by default: a user's own past "
                                   "items are often the best answer, and the model ranks "
                                   "them exactly as evaluation does)")


class Transaction(BaseModel):
    """One payment to score. ``features`` are the numeric columns the model was trained on
    (``GET /version`` lists them), by name."""

    model_config = _STRICT

    txn_id: Id | None = Field(default=None, description="echoed back")
    user_id: Id | None = Field(default=None, description="the paying user, if known")
    item_id: Id | None = Field(default=None, description="the item bought, if any")
    amount: Finite = Field(description="transaction amount (negative for refunds)")
    features: dict[FeatureName, Finite] = Field(
        default_factory=dict, max_length=MAX_FEATURES,
        description="numeric feature columns by name, exactly the model's fraud_features")


def _shape(value: Any) -> str:
    return LIST_TAG if isinstance(value, list) else SINGLE_TAG


class FraudRequest(RootModel[Annotated[
        Annotated[Transaction, Tag(SINGLE_TAG)]
        | Annotated[list[Transaction], Field(min_length=1, max_length=MAX_TRANSACTIONS),
                  Tag(LIST_TAG)],
        Discriminator(_shape)]]):
    """One transaction object, or a JSON array of 1..max_transactions of them."""

    @property
    def transactions(self) -> list[Transaction]:
        return list(self.root) if isinstance(self.root, list) else [self.root]

    @property
    def is_list(self) -> bool:
        return isinstance(self.root, list)


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="model score (dot product), or popularity share for "
                                     "strategy=popularity")


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    strategy: Strategy = Field(description="personal: a known user; recent_items: a new user "
                                           "ranked from recent_item_ids; popularity: neither")
    model_version: str


class Thresholds(BaseModel):
    review: float
    decline: float
    basis: str


class FraudResult(BaseModel):
    txn_id: str | None
    fraud_probability: float
    decision: Decision


class FraudResponse(FraudResult):
    """The answer to a single transaction."""

    model_version: str
    thresholds: Thresholds


class FraudListResponse(BaseModel):
    """The answer to a list of transactions, in request order."""

    results: list[FraudResult]
    model_version: str
    thresholds: Thresholds


class ReplicaStatus(BaseModel):
    """What one model replica serves."""

    deployment: str
    replica: str
    ready: bool
    version: str | None
    loaded_at: str | None = Field(description="UTC time the version was swapped in")
    window: str | None = None
    n_items: int | None = None
    fraud_features: list[str] | None = None
    skipped: dict[str, str] = Field(default_factory=dict,
                                    description="versions that failed to load, with why")
    poll_interval_s: float
    rss_mib: float | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "loading"]
    deployments: dict[str, ReplicaStatus]


class VersionResponse(BaseModel):
    deployments: dict[str, ReplicaStatus]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
