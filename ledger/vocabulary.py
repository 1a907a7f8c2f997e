"""The access-control vocabulary: resource types, actions, permissions, references and presets."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from ledger.errors import ValidationError

TENANT_TYPES: tuple[str, ...] = (
    "action",
    "artifact",
    "artifact_version",
    "code_repository",
    "event_source",
    "flavor",
    "model",
    "model_version",
    "pipeline",
    "pipeline_run",
    "pipeline_deployment",
    "pipeline_build",
    "run_template",
    "service",
    "run_metadata",
    "secret",
    "service_account",
    "service_connector",
    "stack",
    "stack_component",
    "tag",
    "trigger",
    "trigger_execution",
)
ORG_TYPES: tuple[str, ...] = ("organization", "tenant", "member", "team", "role", "billing")
ACTIONS: tuple[str, ...] = (
    "create",
    "read",
    "update",
    "delete",
    "share",
    "read_secret_value",
    "prune",
    "client",
    "promote",
    "backup_restore",
)
OSS_ACTIONS: tuple[str, ...] = ("read", "write", "me")

SCOPES = ("organization", "tenant")
PRINCIPAL_KINDS = ("user", "team", "service_account")
PRESETS = ("zenml-pro", "zenml-oss", "zenml-oss-098")
MAX_NAME = 200
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Characters a name may not hold although they are not format characters (Unicode category Cf):
#: they show as nothing (fillers, grapheme joiner, variation selectors, blank braille pattern).
_INVISIBLE = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0]
    + list(range(0x180B, 0x1810))
    + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)
#: Bidirectional marks, embeddings, overrides and isolates: they reorder how a name is shown.
_BIDI = frozenset([0x061C, 0x200E, 0x200F] + list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A)))


def nfkc(text: str) -> str:
    """The NFKC form of a name: the form stored, so that look-alike spellings (fullwidth letters,
    ligatures, compatibility digits) are one name. ASCII is its own NFKC form (the common case, free)."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _char_problem(value: str) -> str | None:
    """Why a (NFKC) name may not be used because of one of its characters, naming its code point."""
    if value.isascii():
        match = CONTROL.search(value)
        return None if match is None else f"contains the control character U+{ord(match.group()):04X}"
    for ch in value:
        code = ord(ch)
        if code < 0x80:
            if CONTROL.match(ch):
                return f"contains the control character U+{code:04X}"
            continue
        category = unicodedata.category(ch)
        label = unicodedata.name(ch, "")
        shown = f"U+{code:04X}" + (f" ({label})" if label else "")
        if category == "Cc":
            return f"contains the control character {shown}"
        if code in _BIDI:
            return f"contains {shown}, a bidirectional control character (it changes how the name is displayed)"
        if category == "Cs":
            return f"contains {shown}, which is not a character (was the text valid UTF-8?)"
        if category in ("Cf", "Zl", "Zp", "Co") or code in _INVISIBLE:
            return f"contains {shown}, an invisible or non-printing character"
    return None


@lru_cache(maxsize=1 << 16)
def _name_problem(value: str) -> str | None:
    if not value:
        return "must be a non-empty name"
    if len(value) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if value != value.strip():
        return "has leading or trailing white space"
    return _char_problem(value)


def check_name(value: str, what: str) -> str:
    """Return the NFKC form of `value` if that is a usable name, else raise ValidationError.

    A name is an identifier people compare by eye: it is normalised (NFKC) before it is checked
    and stored, and refused if it holds a character that shows as nothing or reorders the text.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{what}: must be a non-empty name")
    value = nfkc(value)
    problem = _name_problem(value)
    if problem is not None:
        raise ValidationError(f"{what}: {problem}")
    return value


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What one preset allows: resource types per scope and actions."""

    preset: str
    tenant_types: tuple[str, ...]
    org_types: tuple[str, ...]
    actions: tuple[str, ...]

    def types_for(self, scope: str) -> tuple[str, ...]:
        return self.org_types if scope == "organization" else self.tenant_types

    @property
    def all_types(self) -> tuple[str, ...]:
        return self.tenant_types + self.org_types

    def parse_permission(self, text: str, scope: str, what: str = "permission") -> str:
        """Validate `TYPE:ACTION` for a role of `scope`; `*` may stand for either part."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise ValidationError(f"{what}: {text!r} is not TYPE:ACTION")
        rtype, action = text.split(":")
        if rtype != "*" and rtype not in self.types_for(scope):
            raise ValidationError(f"{what}: {rtype!r} is not a {scope} resource type of the {self.preset} preset")
        if action != "*" and action not in self.actions:
            raise ValidationError(f"{what}: {action!r} is not an action of the {self.preset} preset")
        return text

    def check_action(self, action: str, what: str = "action") -> str:
        if action not in self.actions:
            raise ValidationError(f"{what}: {action!r} is not an action of the {self.preset} preset")
        return action

    def parse_resource(self, text: str, what: str = "resource") -> tuple[str, str]:
        """Split `TYPE/ID`, checking the type is known."""
        rtype, rid = split_resource(text, what)
        if rtype not in self.all_types:
            raise ValidationError(f"{what}: {rtype!r} is not a resource type of the {self.preset} preset")
        return rtype, rid


def split_resource(text: str, what: str = "resource") -> tuple[str, str]:
    """Split `TYPE/ID`."""
    if not isinstance(text, str):
        raise ValidationError(f"{what}: {text!r} is not TYPE/ID")
    result = _split_resource(text)
    if isinstance(result, str):
        raise ValidationError(f"{what}: {result}")
    return result


@lru_cache(maxsize=1 << 16)
def _split_resource(text: str) -> tuple[str, str] | str:
    if "/" not in text:
        return f"{text!r} is not TYPE/ID"
    rtype, rid = text.split("/", 1)
    return _name_problem(rid) or (rtype, rid)


def split_principal(text: str, what: str = "principal") -> tuple[str, str]:
    """Split `user:NAME`, `team:NAME` or `service_account:NAME`."""
    if not isinstance(text, str):
        raise ValidationError(f"{what}: {text!r} is not user:NAME, team:NAME or service_account:NAME")
    result = _split_principal(text)
    if isinstance(result, str):
        raise ValidationError(f"{what}: {result}")
    return result


@lru_cache(maxsize=1 << 16)
def _split_principal(text: str) -> tuple[str, str] | str:
    kind, sep, name = text.partition(":")
    if not sep or kind not in PRINCIPAL_KINDS:
        return f"{text!r} is not user:NAME, team:NAME or service_account:NAME"
    return _name_problem(name) or (kind, name)


def permission_matches(permission: str, rtype: str, action: str) -> bool:
    """True if a granted `TYPE:ACTION` (with wildcards) covers (rtype, action)."""
    ptype, paction = permission.split(":", 1)
    return (ptype == "*" or ptype == rtype) and (paction == "*" or paction == action)


@dataclass(frozen=True, slots=True)
class PredefinedRole:
    name: str
    scope: str
    permissions: tuple[str, ...]
    description: str


def _zenml_pro_roles() -> tuple[PredefinedRole, ...]:
    editor_types = ("tenant", "member", "team")
    org_editor = tuple(f"{t}:{a}" for t in editor_types for a in ("create", "read", "update", "share"))
    org_editor += ("organization:read",)
    org_viewer = tuple(f"{t}:read" for t in ORG_TYPES if t != "billing")
    editor = tuple(f"*:{a}" for a in ("create", "read", "share"))
    return (
        PredefinedRole(
            "org_admin",
            "organization",
            tuple(f"{t}:*" for t in ORG_TYPES),
            "Full control over the organization, its members, tenants and billing",
        ),
        PredefinedRole("org_editor", "organization", org_editor, "Manage tenants, members and teams; no billing"),
        PredefinedRole(
            "org_viewer", "organization", org_viewer, "Read the organization's tenants, members, teams and roles"
        ),
        PredefinedRole("admin", "tenant", ("*:*",), "Full control over a tenant"),
        PredefinedRole(
            "editor",
            "tenant",
            editor,
            "Create, read and share everything in a tenant; no update, delete or secret values",
        ),
        PredefinedRole("viewer", "tenant", ("*:read",), "Read everything in a tenant"),
    )


def _zenml_oss_roles() -> tuple[PredefinedRole, ...]:
    return (
        PredefinedRole("admin", "organization", ("*:read", "*:write", "*:me"), "Read, write and manage own account"),
        PredefinedRole("guest", "organization", ("*:read", "*:me"), "Read and manage own account"),
    )


def _zenml_oss_098_roles() -> tuple[PredefinedRole, ...]:
    # What a ZenML 0.98 OSS server enforces: no roles, only `is_admin` (user management) and, for every
    # active account, everything in the server; a connector's secret is modelled per connector
    # (`connector_user`, assigned by the sync to its team of all accounts, scoped to the connector), so a
    # deleted connector grants nothing.
    member = tuple(f"{t}:*" for t in TENANT_TYPES if t != "service_connector") + ("service_connector:create",)
    return (
        PredefinedRole("admin", "organization", ("*:*",), "A ZenML admin: manages users and service accounts"),
        PredefinedRole("member", "tenant", member, "Any active ZenML account: everything but a connector's use"),
        PredefinedRole(
            "connector_user",
            "tenant",
            ("service_connector:*",),
            "Any active ZenML account, per connector: read, use and read the secret values of it",
        ),
    )


VOCABULARIES: dict[str, Vocabulary] = {
    "zenml-pro": Vocabulary("zenml-pro", TENANT_TYPES, ORG_TYPES, ACTIONS),
    "zenml-oss": Vocabulary("zenml-oss", TENANT_TYPES, ORG_TYPES, OSS_ACTIONS),
    "zenml-oss-098": Vocabulary("zenml-oss-098", TENANT_TYPES, ORG_TYPES, ACTIONS),
}
PREDEFINED: dict[str, tuple[PredefinedRole, ...]] = {
    "zenml-pro": _zenml_pro_roles(),
    "zenml-oss": _zenml_oss_roles(),
    "zenml-oss-098": _zenml_oss_098_roles(),
}


def vocabulary(preset: str) -> Vocabulary:
    try:
        return VOCABULARIES[preset]
    except KeyError:
        raise ValidationError(f"preset: {preset!r} is not one of {', '.join(PRESETS)}") from None


def predefined_roles(preset: str) -> dict[str, PredefinedRole]:
    vocabulary(preset)
    return {r.name: r for r in PREDEFINED[preset]}
