"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI at /docs).

Requests are strict: unknown fields, wrong JSON types (``"5"`` for a number, ``true`` for a
number), NaN/inf and out-of-range values are rejected with 422 naming the field. List bounds
are the constants of :mod:`serving.config`, so the limits served and the limits documented
in OpenAPI are the same numbers.

What the OpenAPI schema accepts, validation accepts, and the reverse: numbers fed to the
model are bounded to float32 (``|x| < 3.4e38``, declared as exclusive bounds); an integer
field takes ``71.0`` (JSON Schema counts it as an integer) but never ``true``; id patterns
are matched with Python's ``re``, as JSON Schema tools in Python (schemathesis, jsonschema)
match them, with ``$`` and ``.`` guarded where their meaning differs between engines. The
fraud feature names are only known once a version is loaded:
``serving.api`` pins them into the served OpenAPI then (:func:`pin_fraud_features`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
)

from serving.config import MAX_K, MAX_RECENT_ITEMS, MAX_TRANSACTIONS
from serving.errors import LIST_TAG, SINGLE_TAG

Decision = Literal["approve", "review", "decline"]
Strategy = Literal["personal", "recent_items", "popularity"]

# python-re: the Rust engine has no look-ahead, and JSON Schema tools written in Python
# (schemathesis, jsonschema) match patterns with ``re``, so both sides agree exactly.
_STRICT = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")
# No control characters, no leading or trailing space. Explicit code-point ranges, not
# ``\s``/``\S``/``.``, whose meaning differs between regex engines (Python counts \x1c-\x1f
# as whitespace, a schema-driven generator may not; ``.`` excludes \r in ECMA): what the
# schema accepts, validation accepts. ``(?!\n)`` because ``$`` also matches before a final
# newline in Python.
ID_PATTERN = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?(?!\n)$"
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]
FeatureName = Annotated[str, Field(min_length=1, max_length=128)]
# Everything the model reads is float32: a larger finite number would become inf there.
FLOAT32_LIMIT = 3.4e38
Float32 = Annotated[float, Field(allow_inf_nan=False, gt=-FLOAT32_LIMIT, lt=FLOAT32_LIMIT)]
Probability = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]


def _integral(value: Any) -> Any:
    """``71.0`` -> ``71``: JSON Schema's ``integer`` includes it (``true`` stays refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]

MAX_FEATURES = 512


class RecommendRequest(BaseModel):
    """Top-k items for one user."""

    model_config = _STRICT

    user_id: Id = Field(description="the shop's user id (unknown users get a cold-start answer)")
    recent_item_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_RECENT_ITEMS,
        description="items the user bought or put in the basket lately, oldest first; they "
                    "extend a known user's history and are the whole query of a new user")
    k: Integer = Field(default=20, ge=1, le=MAX_K, description="how many items to return")
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
    amount: Float32 = Field(description="transaction amount (negative for refunds)")
    features: dict[FeatureName, Float32] = Field(
        default_factory=dict, max_length=MAX_FEATURES,
        description="numeric feature columns by name: exactly the served version's "
                    "fraud_features, all of them (GET /version lists them; this schema names "
                    "them once a version is loaded)")


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
    score: float = Field(description="ranking score, higher first: the version's "
                                     "ShopStreamModel.pool_scores (two towers + popularity "
                                     "and repeat terms + its ranking-time terms, over the "
                                     "temperature; not a probability), or popularity share "
                                     "for strategy=popularity")


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
    fraud_probability: Probability
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
    skipped: dict[str, str] = Field(
        default_factory=dict,
        description="versions that failed to load, with why; 'latest.json' while the "
                    "store's pointer cannot be followed")
    poll_interval_s: float
    rss_mib: float | None = None
    pointer_error: str | None = Field(
        default=None, description="why the store's latest.json cannot be followed (also listed "
                                  "under skipped['latest.json']); the replica keeps serving "
                                  "`version`, but no newer version loads")
    error_counts: dict[str, int] = Field(
        default_factory=dict, description="per key of skipped: failed load attempts of a "
                                          "version, or polls that met the pointer error")
    canary: dict[str, Any] | None = Field(
        default=None, description="the store's canary as this replica follows it (version, "
                                  "fraction, mode, loaded, counts of canary answers and "
                                  "shadow comparisons); null without one")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "degraded"] = Field(
        description="ok: every deployment serves a version and follows the store; loading: "
                    "one has no version yet; degraded: one cannot follow the store's "
                    "latest.json (it keeps serving its version; see skipped)")
    deployments: dict[str, ReplicaStatus] | None = Field(
        default=None, description="per-replica detail: only with the valid bearer token, "
                                  "or when no token is configured")


class VersionResponse(BaseModel):
    deployments: dict[str, ReplicaStatus]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def pin_fraud_features(openapi: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A copy of the app's OpenAPI in which ``Transaction.features`` must hold exactly
    ``names`` (the loaded version's fraud_features), so that every body the schema accepts
    is one the served model scores."""
    out = copy.deepcopy(openapi)
    transaction = out["components"]["schemas"]["Transaction"]
    features = transaction["properties"]["features"]
    value = features.pop("additionalProperties", {"type": "number"})
    for key in ("propertyNames", "maxProperties", "default"):
        features.pop(key, None)
    features.update(properties={name: dict(value) for name in names},
                    required=list(names), additionalProperties=False)
    if names:
        transaction["required"] = sorted({*transaction.get("required", []), "features"})
    return out
