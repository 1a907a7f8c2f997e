"""The events of DESIGN section 4: their shapes, validation of JSONL lines, and canonical form.

An event is handled as a plain dict in canonical form: keys `type`, `at`, `actor`, then the
event's own fields in the documented order, then `reason` and `id`; absent optional fields
are left out. That dict, encoded by `encode`, is both what the ledger stores and one line of
the JSONL interchange format.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic import ValidationError as PydanticError

from ledger.errors import IntegrityFailure, ValidationError
from ledger.timeutil import canonical
from ledger.tokens import TOKEN_SCOPES
from ledger.vocabulary import check_name, nfkc, split_principal, split_resource

MAX_TEXT = 2000
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(value: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    if _TEXT_CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


def _name(value: str) -> str:
    try:
        return check_name(value, "name")
    except ValidationError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None


def _principal(value: str) -> str:
    value = nfkc(value)
    try:
        split_principal(value)
    except ValidationError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None
    return value


def _member(value: str) -> str:
    value = _principal(value)
    if value.split(":", 1)[0] == "team":
        raise ValueError("teams cannot be members of teams")
    return value


def _actor(value: str) -> str:
    return value if value == "system" else _principal(value)


def _resource(value: str) -> str:
    value = nfkc(value)
    try:
        split_resource(value)
    except ValidationError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None
    return value


def _instant(value: str) -> str:
    try:
        return canonical(value)
    except ValidationError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None


def _permission(value: str) -> str:
    if value.count(":") != 1 or not all(value.split(":")):
        raise ValueError(f"{value!r} is not TYPE:ACTION")
    return value


Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_text)]
Principal = Annotated[str, AfterValidator(_principal)]
Member = Annotated[str, AfterValidator(_member)]
Actor = Annotated[str, AfterValidator(_actor)]
Resource = Annotated[str, AfterValidator(_resource)]
Instant = Annotated[str, AfterValidator(_instant)]
Permission = Annotated[str, AfterValidator(_permission)]
Permissions = Annotated[list[Permission], Field(max_length=500)]


class _Event(BaseModel):
    # Built on first use: a change command needs one model, not all of them (CLI start-up time).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)
    at: Instant
    actor: Actor
    reason: Text | None = None
    id: Annotated[str, AfterValidator(_name)] | None = None


class OrganizationCreated(_Event):
    type: Literal["OrganizationCreated"]
    name: Name
    preset: Literal["zenml-pro", "zenml-oss", "zenml-oss-098"]
    # Present (and true) only on a ledger that refuses unauthorised changes (DESIGN section 3): one spelling.
    enforce_authority: Literal[True] | None = None


class TenantCreated(_Event):
    type: Literal["TenantCreated"]
    tenant: Name
    display_name: Text | None = None


class TenantRenamed(_Event):
    type: Literal["TenantRenamed"]
    tenant: Name
    display_name: Text


class TenantDeleted(_Event):
    type: Literal["TenantDeleted"]
    tenant: Name


class UserCreated(_Event):
    type: Literal["UserCreated"]
    user: Name
    email: Text | None = None


class UserDeactivated(_Event):
    type: Literal["UserDeactivated"]
    user: Name


class UserReactivated(_Event):
    type: Literal["UserReactivated"]
    user: Name


class ServiceAccountCreated(_Event):
    type: Literal["ServiceAccountCreated"]
    service_account: Name


class ServiceAccountDeactivated(_Event):
    type: Literal["ServiceAccountDeactivated"]
    service_account: Name


class ServiceAccountReactivated(_Event):
    type: Literal["ServiceAccountReactivated"]
    service_account: Name


class TeamCreated(_Event):
    type: Literal["TeamCreated"]
    team: Name


class TeamDeleted(_Event):
    type: Literal["TeamDeleted"]
    team: Name


class TeamMemberAdded(_Event):
    type: Literal["TeamMemberAdded"]
    team: Name
    member: Member


class TeamMemberRemoved(_Event):
    type: Literal["TeamMemberRemoved"]
    team: Name
    member: Member


class RoleCreated(_Event):
    type: Literal["RoleCreated"]
    role: Name
    scope: Literal["organization", "tenant"]
    base: Name | None = None
    permissions: Permissions
    description: Text | None = None


class RolePermissionsChanged(_Event):
    type: Literal["RolePermissionsChanged"]
    role: Name
    add: Permissions = []
    remove: Permissions = []


class RoleDeleted(_Event):
    type: Literal["RoleDeleted"]
    role: Name


class RoleAssigned(_Event):
    type: Literal["RoleAssigned"]
    role: Name
    principal: Principal
    tenant: Name | None = None
    resource: Resource | None = None
    expires_at: Instant | None = None


class RoleUnassigned(_Event):
    type: Literal["RoleUnassigned"]
    role: Name
    principal: Principal
    tenant: Name | None = None
    resource: Resource | None = None


class ConnectorRegistered(_Event):
    type: Literal["ConnectorRegistered"]
    connector: Name
    tenant: Name
    connector_type: Name | None = None


class ConnectorDeleted(_Event):
    type: Literal["ConnectorDeleted"]
    connector: Name
    tenant: Name


class ConnectorSecretAccessed(_Event):
    type: Literal["ConnectorSecretAccessed"]
    connector: Name
    tenant: Name
    principal: Principal
    outcome: Literal["allowed", "denied"]
    context: Text | None = None


class ResourceAccessed(_Event):
    type: Literal["ResourceAccessed"]
    principal: Principal
    tenant: Name | None = None
    resource: Resource
    action: Name
    outcome: Literal["allowed", "denied"]


def _reviewer_for(value: str) -> str:
    team, sep, reviewer = value.partition("=")
    if not sep or not team.startswith("team:"):
        raise ValueError(f"{value!r} is not team:NAME=PRINCIPAL")
    return f"{_principal(team)}={_principal(reviewer)}"


ReviewerFor = Annotated[str, AfterValidator(_reviewer_for)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ReviewStarted(_Event):
    type: Literal["ReviewStarted"]
    campaign: Name
    tenants: Annotated[list[Name], Field(min_length=1, max_length=500)]
    reviewer: Principal
    reviewers: Annotated[list[ReviewerFor], Field(max_length=500)] = []
    fallback_reviewer: Principal | None = None
    privileged_only: bool = False
    due: Instant | None = None
    as_of_position: Annotated[int, Field(ge=0)]
    items: Annotated[int, Field(ge=0)]
    population_sha256: Sha256


BatchId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class ReviewDecided(_Event):
    type: Literal["ReviewDecided"]
    campaign: Name
    item: Annotated[int, Field(ge=1)]
    decision: Literal["keep", "revoke"]
    reviewer: Principal
    #: A decision recorded from a file (`review decide --batch`): the batch it came in and the file's SHA-256.
    batch: BatchId | None = None
    batch_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _batch_whole(self) -> ReviewDecided:
        if (self.batch is None) != (self.batch_sha256 is None):
            raise ValueError("batch and batch_sha256 go together: give both or neither")
        return self


class ReviewReassigned(_Event):
    type: Literal["ReviewReassigned"]
    campaign: Name
    items: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=100_000)]
    reviewer: Principal


class ReviewClosed(_Event):
    type: Literal["ReviewClosed"]
    campaign: Name
    undecided: Literal["revoke", "keep", "exception"]
    auto_revoke: bool


_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _token_id(value: str) -> str:
    # A token is `ID.SECRET`: its id must never hold the dot, nor anything a header cannot carry.
    if not _TOKEN_ID.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a token id (1-64 letters, digits, - or _)")
    return value


TokenId = Annotated[str, AfterValidator(_token_id)]


class TokenIssued(_Event):
    type: Literal["TokenIssued"]
    token_id: TokenId
    principal: Principal
    scopes: Annotated[list[Literal[TOKEN_SCOPES]], Field(min_length=1, max_length=len(TOKEN_SCOPES))]  # type: ignore[valid-type]
    expires_at: Instant | None = None
    secret_sha256: Sha256


class TokenRevoked(_Event):
    type: Literal["TokenRevoked"]
    token_id: TokenId


class TokenUsed(_Event):
    """The service's record of a token's first use (once per token, by its principal)."""

    type: Literal["TokenUsed"]
    token_id: TokenId


# -- what a ZenML server's sync records beyond the events above (any writer may record them too) --------


class ConnectorChanged(_Event):
    """A connector's attributes as they are now (all of them, each time): who owns it, how it authenticates."""

    type: Literal["ConnectorChanged"]
    connector: Name
    tenant: Name
    owner: Principal | None = None
    connector_type: Name | None = None
    auth_method: Name | None = None
    resource_types: Annotated[list[Name], Field(max_length=100)] = []
    expires_at: Instant | None = None
    labels: Annotated[list[Text], Field(max_length=100)] = []


class _ApiKeyEvent(_Event):
    service_account: Name
    api_key: Name


class ApiKeyCreated(_ApiKeyEvent):
    type: Literal["ApiKeyCreated"]


class ApiKeyRotated(_ApiKeyEvent):
    type: Literal["ApiKeyRotated"]
    #: The server's own record of the rotation (the event's `at` may be later: the ledger never goes back in time).
    rotated_at: Instant


class ApiKeyDeactivated(_ApiKeyEvent):
    type: Literal["ApiKeyDeactivated"]


class ApiKeyReactivated(_ApiKeyEvent):
    type: Literal["ApiKeyReactivated"]


class ApiKeyDeleted(_ApiKeyEvent):
    type: Literal["ApiKeyDeleted"]


class ApiKeyUsed(_ApiKeyEvent):
    """A usage fact: the server says the key was last used to log in at `last_login`."""

    type: Literal["ApiKeyUsed"]
    last_login: Instant


class ProjectCreated(_Event):
    type: Literal["ProjectCreated"]
    project: Name
    tenant: Name


class ProjectDeleted(_Event):
    type: Literal["ProjectDeleted"]
    project: Name
    tenant: Name


# -- the lifecycle of audit findings (issue 29): triage decisions, in the chain --------------------


def _finding_id(value: str) -> str:
    from ledger.findings import FINDING_ID

    if not FINDING_ID.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a finding id (F- and 16 hex digits)")
    return value


def _rule_id(value: str) -> str:
    from ledger.findings import RULE_ID

    if not RULE_ID.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a suppression rule id (R- and 16 hex digits)")
    return value


def _cause(value: str) -> str:
    from ledger.findings import CAUSE

    if len(value) > 20_000 or not CAUSE.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a cause (p:POSITIONS or d: and 16 hex digits)")
    return value


FindingRef = Annotated[str, AfterValidator(_finding_id)]
RuleRef = Annotated[str, AfterValidator(_rule_id)]
AuditName = Literal["least-privilege", "secrets", "sod", "hygiene", "reviews", "leavers", "authority"]


class _FindingDecision(_Event):
    """A decision about one finding: its id and the parts the id is computed from (checked on write)."""

    finding: FindingRef
    audit: AuditName
    kind: Name
    principal: Text | None = None
    scope: Text | None = None
    cause: Annotated[str, AfterValidator(_cause)]
    until: Instant | None = None

    @model_validator(mode="after")
    def _id_matches(self) -> _FindingDecision:
        from ledger.findings import finding_id

        if self.reason is None or not self.reason.strip():
            raise ValueError("reason: a triage decision needs a reason")
        if finding_id(self.audit, self.kind, self.principal, self.scope, self.cause) != self.finding:
            raise ValueError(f"finding: {self.finding} is not the id of the finding these fields describe")
        return self


class FindingAccepted(_FindingDecision):
    type: Literal["FindingAccepted"]


class FindingSuppressed(_FindingDecision):
    type: Literal["FindingSuppressed"]


class SuppressionRuleAdded(_Event):
    """Every finding of one kind about one principal (in one tenant, or anywhere) is suppressed."""

    type: Literal["SuppressionRuleAdded"]
    rule: RuleRef
    audit: AuditName
    kind: Name
    principal: Principal
    tenant: Name | None = None
    until: Instant | None = None

    @model_validator(mode="after")
    def _id_matches(self) -> SuppressionRuleAdded:
        from ledger.findings import rule_id

        if self.reason is None or not self.reason.strip():
            raise ValueError("reason: a suppression rule needs a reason")
        if rule_id(self.audit, self.kind, self.principal, self.tenant) != self.rule:
            raise ValueError(f"rule: {self.rule} is not the id of the rule these fields describe")
        return self


class FindingReopened(_Event):
    """A finding (or a suppression rule) is open again: the earlier decision no longer holds."""

    type: Literal["FindingReopened"]
    finding: FindingRef | None = None
    rule: RuleRef | None = None

    @model_validator(mode="after")
    def _one(self) -> FindingReopened:
        if (self.finding is None) == (self.rule is None):
            raise ValueError("finding: give a finding or a rule to reopen, not both")
        if self.reason is None or not self.reason.strip():
            raise ValueError("reason: reopening needs a reason")
        return self


MODELS: tuple[type[_Event], ...] = (
    OrganizationCreated,
    TenantCreated,
    TenantRenamed,
    TenantDeleted,
    UserCreated,
    UserDeactivated,
    UserReactivated,
    ServiceAccountCreated,
    ServiceAccountDeactivated,
    ServiceAccountReactivated,
    TeamCreated,
    TeamDeleted,
    TeamMemberAdded,
    TeamMemberRemoved,
    RoleCreated,
    RolePermissionsChanged,
    RoleDeleted,
    RoleAssigned,
    RoleUnassigned,
    ConnectorRegistered,
    ConnectorDeleted,
    ConnectorSecretAccessed,
    ResourceAccessed,
    ReviewStarted,
    ReviewDecided,
    ReviewReassigned,
    ReviewClosed,
    TokenIssued,
    TokenRevoked,
    TokenUsed,
    ConnectorChanged,
    ApiKeyCreated,
    ApiKeyRotated,
    ApiKeyDeactivated,
    ApiKeyReactivated,
    ApiKeyDeleted,
    ApiKeyUsed,
    ProjectCreated,
    ProjectDeleted,
    FindingAccepted,
    FindingSuppressed,
    SuppressionRuleAdded,
    FindingReopened,
)
FINDING_TYPES = frozenset({"FindingAccepted", "FindingSuppressed", "SuppressionRuleAdded", "FindingReopened"})
EVENT_TYPES: dict[str, type[_Event]] = {m.__name__: m for m in MODELS}
#: The event's own fields in documented order, per type (excluding type/at/actor/reason/id).
FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(f for f in model.model_fields if f not in ("type", "at", "actor", "reason", "id"))
    for name, model in EVENT_TYPES.items()
}
USAGE_TYPES = frozenset({"ConnectorSecretAccessed", "ResourceAccessed"})
#: The event types with a list among their fields (every other field is a text). One missing here
#: would only make parse_json re-parse its lines to look for repeated keys, never miss one.
_WITH_LISTS = frozenset({"RoleCreated", "RolePermissionsChanged", "ReviewStarted", "TokenIssued", "ConnectorChanged"})


@cache
def _adapter() -> TypeAdapter[Any]:
    """The validator of any event line (built once, when first needed)."""
    # A Union over the tuple of models built above: `X | Y` cannot be spelt for a tuple.
    return TypeAdapter(Annotated[Union[MODELS], Field(discriminator="type")])  # type: ignore[valid-type]  # noqa: UP007


def _problem(exc: PydanticError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if str(p) not in EVENT_TYPES]
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{loc[-1]}: unknown field (the ledger stores only the documented fields, never secret values)"
    if kind == "missing":
        return f"{'.'.join(loc)}: required field is missing"
    if kind == "union_tag_invalid":
        got = err.get("ctx", {}).get("tag", "?")
        return f"type: {got!r} is not an event type"
    if kind == "union_tag_not_found":
        return "type: required field is missing"
    if kind == "model_attributes_type" or kind == "model_type":
        return "line is not a JSON object"
    msg = err["msg"]
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        return "line is not a JSON object"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    field = ".".join(loc) if loc else "line"
    return f"{field}: {msg}"


def canonical_dict(model: _Event) -> dict[str, Any]:
    """The event as a dict in canonical key order, optional fields left out when absent."""
    d = model.__dict__
    out: dict[str, Any] = {"type": d["type"], "at": d["at"], "actor": d["actor"]}
    for f in FIELDS[d["type"]]:
        v = d[f]
        if v is not None:
            out[f] = v
    if d["reason"] is not None:
        out["reason"] = d["reason"]
    if d["id"] is not None:
        out["id"] = d["id"]
    return out


class DuplicateKey(ValidationError):
    """A JSON object names the same key twice: which of its values was meant cannot be told."""


class NestedTooDeep(ValidationError):
    """A JSON line nested deeper than any event or question can be."""


NESTED_TOO_DEEP = "line is nested too deeply (JSON arrays and objects within each other)"


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook of json.loads: the object as a dict, or DuplicateKey."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def load_json(text: str | bytes) -> Any:
    """Parse one JSON line strictly: a key given twice in any object is refused (json and orjson keep
    the last one silently, so `{"user": "alice", "user": "mallory"}` would mean mallory), and so is
    nesting deeper than the parser's recursion limit (one clear error, not a RecursionError)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except RecursionError:
        raise NestedTooDeep(NESTED_TOO_DEEP) from None
    except ValueError:  # JSONDecodeError, invalid UTF-8, an integer of more than 4300 digits
        raise ValidationError("line is not valid JSON") from None


def _refuse_duplicate_keys(line: str | bytes) -> None:
    """Raise DuplicateKey if some object of the (valid JSON) line names a key twice."""
    try:
        load_json(line)
    except DuplicateKey:
        raise
    except ValidationError:
        pass  # what the line's other problem is, the event validator says


def parse_json(line: str | bytes) -> dict[str, Any]:
    """Validate one JSONL line; return the event in canonical form or raise ValidationError.

    Duplicate keys: the validator keeps the last value of a repeated key, so its result alone
    cannot tell. What can, for the price of counting one byte: the line's quotes, halved, are at
    least its string tokens, which are its keys plus its string values; a valid event has no nested
    objects, each string value the model holds came from one token, and each key is one field the
    model saw. So if quotes / 2 - string values equals the number of fields given, no key is
    repeated (the common case: no second parse); otherwise (a repeated key, or escaped quotes in
    a text) the line is parsed again, exactly, to find out.
    """
    try:
        model = _adapter().validate_json(line)
    except PydanticError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            if "recursion limit" in err.get("msg", ""):
                raise NestedTooDeep(NESTED_TOO_DEEP) from None
            raise ValidationError("line is not valid JSON") from None
        _refuse_duplicate_keys(line)  # a repeated key is the line's first problem, nested or not
        raise ValidationError(_problem(exc)) from None
    event = canonical_dict(model)
    strings = len(event)  # every value is a text, or a list of texts (permissions), or the one flag below
    if event["type"] == "OrganizationCreated" and "enforce_authority" in event:
        strings -= 1  # `true` has no quotes
    if event["type"] in _WITH_LISTS:
        strings += sum(len(v) - 1 for v in event.values() if type(v) is list)
    quotes = line.count('"') if isinstance(line, str) else line.count(b'"')
    if quotes // 2 - strings != len(model.__pydantic_fields_set__):  # model_fields_set, without the property
        _refuse_duplicate_keys(line)
    return event


def parse_obj(obj: dict[str, Any]) -> dict[str, Any]:
    """Validate an event given as a dict (from a command); return its canonical form."""
    try:
        model_class = EVENT_TYPES.get(obj.get("type")) if isinstance(obj, dict) else None
        if model_class is not None:
            model = model_class.model_validate(obj)
        else:
            model = _adapter().validate_python(obj)
    except PydanticError as exc:
        raise ValidationError(_problem(exc)) from None
    return canonical_dict(model)


def encode(event: dict[str, Any]) -> bytes:
    """Canonical bytes of an event: compact JSON, keys in canonical order."""
    return orjson.dumps(event)


def decode(data: bytes | str) -> dict[str, Any]:
    """The event in stored bytes. Bytes that hold no event (edited in the database) end in one line."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = None
    if type(event) is not dict or type(event.get("type")) is not str:
        raise IntegrityFailure(
            f"a stored event is not an event ({data[:40]!r}): the log was tampered with; run `access-ledger verify`"
        )
    return event
