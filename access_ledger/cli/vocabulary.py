"""`access-ledger vocabulary`: the resource types, actions and predefined roles of each preset."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from access_ledger.cli.common import Format, FormatOption, OutOption, emit, fail

COLUMNS = ["preset", "kind", "name", "scope", "permissions", "description"]


def register(app: typer.Typer) -> None:
    app.command("vocabulary")(vocabulary)


def vocabulary_rows(preset: str) -> list[dict[str, Any]]:
    """One row per resource type, action and predefined role of a preset, as a custom role may name them."""
    from ledger.vocabulary import predefined_roles
    from ledger.vocabulary import vocabulary as vocab

    v = vocab(preset)
    rows: list[dict[str, Any]] = []
    for scope in ("organization", "tenant"):
        for t in v.types_for(scope):
            rows.append(
                {"preset": preset, "kind": "type", "name": t, "scope": scope, "permissions": "", "description": ""}
            )
    for a in v.actions:
        rows.append({"preset": preset, "kind": "action", "name": a, "scope": "", "permissions": "", "description": ""})
    for r in predefined_roles(preset).values():
        rows.append(
            {
                "preset": preset,
                "kind": "role",
                "name": r.name,
                "scope": r.scope,
                "permissions": " ".join(r.permissions),
                "description": r.description,
            }
        )
    return rows


def vocabulary(
    preset: Annotated[
        str | None, typer.Option("--preset", help="One preset (default: every preset this version knows).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only types, actions or roles: type, action or role.")
    ] = None,
    fmt: FormatOption = Format.table,
    out: OutOption = None,
) -> None:
    """The resource types, actions and predefined roles (with their permissions) of each preset: what a custom
    role's TYPE:ACTION permissions, `check`, `who-can` and `what-can` may name."""
    from ledger.vocabulary import PRESETS

    if preset is not None and preset not in PRESETS:
        fail(f"--preset: {preset!r} is not one of {', '.join(PRESETS)}")
    if kind is not None and kind not in ("type", "action", "role"):
        fail(f"--kind: {kind!r} is not one of type, action, role")
    rows = [r for p in ([preset] if preset else PRESETS) for r in vocabulary_rows(p) if kind in (None, r["kind"])]
    emit(
        rows,
        fmt,
        out,
        COLUMNS,
        title="vocabulary" + (f" of the {preset} preset" if preset else ""),
        caption="a custom role's permission is TYPE:ACTION of its scope; * stands for any type or any action",
    )
