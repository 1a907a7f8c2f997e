"""Separation-of-duties rules: a TOML file of conflicting permission pairs (a default set ships)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.errors import RulesError

if TYPE_CHECKING:
    from reports.warehouse import Warehouse

DEFAULT_RULES = "default_sod.toml"
_KEYS = {"id", "title", "description", "left", "right"}


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    description: str
    left: str
    right: str


def default_rules_text() -> str:
    return resources.files("reports").joinpath("rules", DEFAULT_RULES).read_text(encoding="utf-8")


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """Rules from TOML text: [[rule]] tables with id, left, right (TYPE:ACTION), title?, description?."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"rule"}
    if unknown:
        raise RulesError(f"{source}: unknown top-level key {sorted(unknown)[0]!r} (rules are [[rule]] tables)")
    raw = data.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise RulesError(f"{source}: rules must be [[rule]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, entry in enumerate(raw, 1):
        where = f"{source}: rule {n}"
        extra = set(entry) - _KEYS
        if extra:
            raise RulesError(f"{where}: unknown field {sorted(extra)[0]!r} (fields: {', '.join(sorted(_KEYS))})")
        for key in ("id", "left", "right"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise RulesError(f"{where}: {key} is required and must be text")
        for key in ("title", "description"):
            if key in entry and not isinstance(entry[key], str):
                raise RulesError(f"{where}: {key} must be text")
        rule_id = entry["id"]
        if rule_id in seen:
            raise RulesError(f"{where}: id {rule_id!r} is used twice")
        seen.add(rule_id)
        for side in ("left", "right"):
            perm = entry[side]
            if perm.count(":") != 1 or not all(perm.split(":")) or "*" in perm:
                raise RulesError(f"{where}: {side} {perm!r} is not TYPE:ACTION (no wildcards in rules)")
        rules.append(
            Rule(rule_id, entry.get("title", rule_id), entry.get("description", ""), entry["left"], entry["right"])
        )
    return rules


def load_rules(path: str | Path | None) -> tuple[list[Rule], str]:
    """The rules of a file (or the shipped default set) and how to name their source."""
    if path is None:
        return parse_rules(default_rules_text(), DEFAULT_RULES), f"default ({DEFAULT_RULES})"
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"rules: no file {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"rules: cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_rules(text, str(p)), str(p)


def check_rules(rules: list[Rule], preset: str, source: str, *, strict: bool) -> list[dict[str, Any]]:
    """Rows for the sod_rules table; unknown types or actions are an error (strict) or leave the rule out."""
    from ledger.vocabulary import vocabulary

    vocab = vocabulary(preset)
    rows = []
    for rule in rules:
        row: dict[str, Any] = {"rule": rule.id, "title": rule.title, "description": rule.description}
        usable = True
        for side, perm in (("left", rule.left), ("right", rule.right)):
            rtype, action = perm.split(":")
            problem = None
            if rtype not in vocab.all_types:
                problem = f"{rtype!r} is not a resource type of the {preset} preset"
            elif action not in vocab.actions:
                problem = f"{action!r} is not an action of the {preset} preset"
            if problem:
                if strict:
                    raise RulesError(f"{source}: rule {rule.id!r}: {side} {perm!r}: {problem}")
                usable = False
            row.update(
                {
                    f"{side}_permission": perm,
                    f"{side}_type": rtype,
                    f"{side}_action": action,
                    f"{side}_scope": "organization" if rtype in vocab.org_types else "tenant",
                }
            )
        if usable:
            rows.append(row)
    return rows


_COLUMNS = (
    "rule",
    "title",
    "description",
    "left_permission",
    "left_type",
    "left_action",
    "left_scope",
    "right_permission",
    "right_type",
    "right_action",
    "right_scope",
)


def install_rules(wh: Warehouse, path: str | Path | None) -> str:
    """Create the temporary table sod_rules that sod.sql reads; return the rules' source."""
    import pyarrow as pa

    rules, source = load_rules(path)
    found = wh.con.execute("SELECT preset FROM events WHERE type = 'OrganizationCreated'").fetchall()
    rows = check_rules(rules, found[0][0], source, strict=path is not None) if found else []
    rules_table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in _COLUMNS})
    wh.con.register("rules_table", rules_table)  # (the warehouse's connection resolves no Python variables)
    try:
        wh.con.execute("CREATE OR REPLACE TEMP TABLE sod_rules AS SELECT * FROM rules_table")
    finally:
        wh.con.unregister("rules_table")
    return source
