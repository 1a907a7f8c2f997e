"""Authority of a change (DESIGN section 3): the rules saying which permission each change needs of its actor.

The rules are data, one TOML file per preset in ledger/rules/ (a user may give another to `audit
authority --rules`). They live on the write side because a ledger created with `init
--enforce-authority` applies them to every write (ledger.model); the audit (reports/sql/authority.sql)
applies the same rules to the recorded history. Plain Python and tomllib only: this is on the
write path's imports.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ledger.errors import ValidationError

#: The change events judged (every event but the organization's creation, usage facts and review events).
CHANGE_TYPES: tuple[str, ...] = (
    "TenantCreated",
    "TenantRenamed",
    "TenantDeleted",
    "UserCreated",
    "UserDeactivated",
    "UserReactivated",
    "ServiceAccountCreated",
    "ServiceAccountDeactivated",
    "ServiceAccountReactivated",
    "TeamCreated",
    "TeamDeleted",
    "TeamMemberAdded",
    "TeamMemberRemoved",
    "RoleCreated",
    "RolePermissionsChanged",
    "RoleDeleted",
    "RoleAssigned",
    "RoleUnassigned",
    "ConnectorRegistered",
    "ConnectorDeleted",
    "ConnectorChanged",
    "ApiKeyCreated",
    "ApiKeyRotated",
    "ApiKeyDeactivated",
    "ApiKeyReactivated",
    "ApiKeyDeleted",
    "ProjectCreated",
    "ProjectDeleted",
    "FindingAccepted",
    "FindingSuppressed",
    "SuppressionRuleAdded",
    "FindingReopened",
)
#: The change events that name a tenant (where a rule `in = ["tenant"]` looks).
WITH_TENANT = frozenset(
    {
        "TenantCreated",
        "TenantRenamed",
        "TenantDeleted",
        "RoleAssigned",
        "RoleUnassigned",
        "ConnectorRegistered",
        "ConnectorDeleted",
        "ConnectorChanged",
        "ProjectCreated",
        "ProjectDeleted",
    }
)
PLACES = ("organization", "tenant")
MAX_RULES_BYTES = 1 << 20


class RulesError(ValidationError):
    """An authority rules file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Rule:
    event: str
    permission: str  # TYPE:ACTION, no wildcards
    places: tuple[str, ...]  # "organization" and/or "tenant"
    description: str = ""

    @property
    def type(self) -> str:
        return self.permission.split(":", 1)[0]

    @property
    def action(self) -> str:
        return self.permission.split(":", 1)[1]


@dataclass(frozen=True)
class Rules:
    preset: str
    by_event: dict[str, Rule]
    source: str


@dataclass(frozen=True, slots=True)
class Need:
    """What one change needs of its actor: the permission, in the organization and/or the tenant, on the resource."""

    event: str
    permission: str
    in_organization: bool
    tenant: str | None
    resource: str | None  # the resource a narrowed assignment must be narrowed to, to count

    def describe(self) -> str:
        places = (["the organization"] if self.in_organization else []) + (
            [f"tenant {self.tenant!r}"] if self.tenant is not None else []
        )
        return f"{self.permission} in " + " or in ".join(places)


def rules_file(preset: str) -> str:
    return f"authority-{preset}.toml"


def default_rules_text(preset: str) -> str:
    try:
        return resources.files("ledger").joinpath("rules", rules_file(preset)).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"rules: no authority rules ship for the preset {preset!r}") from None


def parse_rules(text: str, source: str = "rules") -> Rules:
    """Rules from TOML text: `preset`, then [[rule]] tables with events, permission and in."""
    from ledger.vocabulary import PRESETS, vocabulary

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"preset", "rule"}
    if unknown:
        raise RulesError(f"{source}: unknown top-level key {sorted(unknown)[0]!r} (keys: preset, rule)")
    preset = data.get("preset")
    if preset not in PRESETS:
        raise RulesError(f"{source}: preset must be one of {', '.join(PRESETS)}")
    vocab = vocabulary(preset)
    raw = data.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise RulesError(f"{source}: rules must be [[rule]] tables")
    keys = {"events", "permission", "in", "description"}
    by_event: dict[str, Rule] = {}
    for n, entry in enumerate(raw, 1):
        where = f"{source}: rule {n}"
        extra = set(entry) - keys
        if extra:
            raise RulesError(f"{where}: unknown field {sorted(extra)[0]!r} (fields: {', '.join(sorted(keys))})")
        events, perm, places = entry.get("events"), entry.get("permission"), entry.get("in")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise RulesError(f"{where}: events must be a list of change event types")
        if not isinstance(perm, str) or perm.count(":") != 1 or not all(perm.split(":")) or "*" in perm:
            raise RulesError(f"{where}: permission {perm!r} is not TYPE:ACTION (no wildcards in rules)")
        rtype, action = perm.split(":")
        if rtype not in vocab.all_types:
            raise RulesError(f"{where}: permission {perm!r}: {rtype!r} is not a resource type of the {preset} preset")
        if action not in vocab.actions:
            raise RulesError(f"{where}: permission {perm!r}: {action!r} is not an action of the {preset} preset")
        if (
            not isinstance(places, list)
            or not places
            or any(p not in PLACES for p in places)
            or len(set(places)) != len(places)
        ):
            raise RulesError(f"{where}: in must list organization and/or tenant")
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise RulesError(f"{where}: description must be text")
        for event in events:
            if event not in CHANGE_TYPES:
                raise RulesError(f"{where}: {event!r} is not a change event (one of {', '.join(CHANGE_TYPES)})")
            if event in by_event:
                raise RulesError(f"{where}: {event} already has a rule")
            if places == ["tenant"] and event not in WITH_TENANT:
                raise RulesError(f"{where}: {event} names no tenant: in must include organization")
            by_event[event] = Rule(event, perm, tuple(places), description)
    missing = [t for t in CHANGE_TYPES if t not in by_event]
    if missing:
        # A change without a rule would pass unjudged: every one must say what it needs.
        raise RulesError(f"{source}: no rule for {', '.join(missing)} (every change event needs one)")
    return Rules(preset, by_event, source)


@cache
def default_rules(preset: str) -> Rules:
    """The shipped rules of a preset (what an enforcing ledger applies)."""
    return parse_rules(default_rules_text(preset), f"default ({rules_file(preset)})")


def load_rules(path: str | Path | None, preset: str | None) -> Rules:
    """The rules of a file (or the preset's shipped rules); a file written for another preset is refused
    (preset None: any preset, for a check before the ledger's is known)."""
    if path is None:
        if preset is None:
            raise RulesError("rules: no file given and no preset to take the shipped rules of")
        return default_rules(preset)
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_RULES_BYTES + 1)
    except FileNotFoundError:
        raise RulesError(f"rules: no file {p}") from None
    except OSError as exc:
        raise RulesError(f"rules: cannot read {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_RULES_BYTES:
        raise RulesError(f"rules: {p} is larger than {MAX_RULES_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RulesError(f"rules: {p} is not UTF-8 text") from None
    rules = parse_rules(text, str(p))
    if preset is not None and rules.preset != preset:
        raise RulesError(f"{p}: the rules are for the {rules.preset} preset; this ledger uses {preset}")
    return rules


def need(rules: Rules, ev: dict[str, Any]) -> Need | None:
    """What the change `ev` needs of its actor, or None when nothing is asked (system, a non-change event)."""
    rule = rules.by_event.get(ev["type"])
    if rule is None or ev["actor"] == "system":
        return None
    tenant = ev.get("tenant") if "tenant" in rule.places else None
    connector = ev.get("connector")
    return Need(
        ev["type"],
        rule.permission,
        "organization" in rule.places or tenant is None,
        tenant,
        f"{rule.type}/{connector}" if connector is not None else None,
    )


def instant_key(text: str) -> str:
    """A canonical instant that sorts as time does (the text form leaves out zero microseconds)."""
    return text if "." in text else text[:-1] + ".000000Z"
