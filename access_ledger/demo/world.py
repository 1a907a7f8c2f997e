"""The organization as the generator sees it while it writes (who exists, who holds what), and its clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from access_ledger.demo.catalogue import PREDEFINED_USES


def _epoch(day_start: int, sec: int) -> str:
    return datetime.fromtimestamp(day_start + sec, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CLOCK: list[str] = []


def _clock() -> list[str]:
    """'HH:MM:SSZ' of every second of a day (formatting each event's time costs more than the rest)."""
    if not _CLOCK:
        _CLOCK.extend(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60))
    return _CLOCK


# -- the world ---------------------------------------------------------------------------------

Key = tuple[str, str, str, str]  # (role, principal, tenant or "", resource or "")


class _World:
    """The organization as the generator sees it: who exists, who holds what, what each may do."""

    def __init__(self) -> None:
        from ledger.vocabulary import predefined_roles

        self.base: dict[str, str | None] = {}
        self.perms: dict[str, set[str]] = {}
        self.uses: dict[str, tuple[tuple[str, str], ...]] = {}
        self.scope: dict[str, str] = {}
        for r in predefined_roles("zenml-pro").values():
            self.base[r.name], self.perms[r.name], self.scope[r.name] = None, set(r.permissions), r.scope
            self.uses[r.name] = tuple(tuple(u.split(":")) for u in PREDEFINED_USES[r.name])  # type: ignore[misc]
        self.active: dict[str, bool] = {}  # users and service accounts
        self.members: dict[str, set[str]] = {}  # team -> members
        self.teams_of: dict[str, set[str]] = {}
        self.held: dict[Key, int | None] = {}  # -> expires (epoch) or None
        self.by_holder: dict[str, set[Key]] = {}
        self.tenants: set[str] = set()
        self.connectors: dict[str, list[str]] = {}
        self.holders: Counter[str] = Counter()
        self._eff: dict[str, frozenset[str]] = {}
        self._usable: dict[str, list[tuple[str | None, str | None, tuple[tuple[str, str], ...], int | None]]] = {}

    def effective(self, role: str) -> frozenset[str]:
        got = self._eff.get(role)
        if got is None:
            base = self.base[role]
            got = frozenset(self.perms[role] | (self.effective(base) if base else set()))
            self._eff[role] = got
        return got

    def allows(self, principal: str, tenant: str | None, rtype: str, action: str, resource: str, t: int) -> bool:
        """DESIGN section 3's check, on the generator's own model."""
        if not self.active.get(principal, False) or (tenant is not None and tenant not in self.tenants):
            return False
        holders = [principal] + [f"team:{x}" for x in self.teams_of.get(principal, ())]
        for holder in holders:
            for key in self.by_holder.get(holder, ()):
                role, _, kt, kr = key
                expires = self.held[key]
                if (kt or None) != tenant or (expires is not None and t >= expires):
                    continue
                if kr and kr != resource:
                    continue
                for perm in self.effective(role):
                    pt, pa = perm.split(":")
                    if (pt in ("*", rtype)) and (pa in ("*", action)) and (not kr or pt in ("*", kr.split("/")[0])):
                        return True
        return False

    def usable(self, principal: str) -> list[tuple[str | None, str | None, tuple[tuple[str, str], ...], int | None]]:
        """(tenant, resource scope, typical uses, expires) of every assignment the principal holds."""
        got = self._usable.get(principal)
        if got is None:
            got = []
            holders = [principal] + [f"team:{x}" for x in sorted(self.teams_of.get(principal, ()))]
            for holder in holders:
                for key in sorted(self.by_holder.get(holder, ())):
                    role, _, tenant, resource = key
                    uses = self.uses[role]
                    if resource:
                        rtype = resource.split("/")[0]
                        uses = tuple(u for u in uses if u[0] == rtype)
                    if uses:
                        got.append((tenant or None, resource or None, uses, self.held[key]))
            self._usable[principal] = got
        return got

    def forget(self, principal: str | None = None) -> None:
        if principal is None:
            self._usable.clear()
            self._eff.clear()
        elif principal.startswith("team:"):
            for m in self.members.get(principal[5:], ()):
                self._usable.pop(m, None)
        else:
            self._usable.pop(principal, None)
