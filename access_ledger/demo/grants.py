"""Roles and grants: roles built on the predefined ones, assignments (time-bound ones revoked when they expire), tenants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from access_ledger.demo.catalogue import RoleSpec
from access_ledger.demo.shape import CHANGES_FROM, DAY
from access_ledger.demo.world import Key, _epoch

if TYPE_CHECKING:
    from access_ledger.demo.engine import _Engine


class _Grants:
    """The engine's verbs for roles, assignments and tenants."""

    def create_role(self, spec: RoleSpec, actor: str, reason: str) -> None:
        self.change(
            "RoleCreated",
            actor,
            reason,
            role=spec.name,
            scope="tenant",
            base=spec.base,
            permissions=list(spec.permissions),
            description=spec.description,
        )
        w = self.w
        w.base[spec.name], w.perms[spec.name], w.scope[spec.name] = spec.base, set(spec.permissions), "tenant"
        w.uses[spec.name] = tuple(tuple(u.split(":")) for u in spec.uses)  # type: ignore[misc]

    def change_role(
        self, role: str, actor: str, reason: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()
    ) -> None:
        self.change("RolePermissionsChanged", actor, reason, role=role, add=list(add), remove=list(remove))
        self.w.perms[role] = (self.w.perms[role] | set(add)) - set(remove)
        kept = [u for u in self.w.uses[role] if ":".join(u) not in remove]
        self.w.uses[role] = tuple(kept)
        self.w.forget()

    def assign(
        self,
        role: str,
        p: str,
        tenant: str | None,
        actor: str,
        reason: str | None,
        resource: str | None = None,
        days: int | None = None,
    ) -> dict[str, Any]:
        expires = self.first_day + (self.day + days) * DAY + CHANGES_FROM if days else None
        ev = self.change(
            "RoleAssigned",
            actor,
            reason,
            role=role,
            principal=p,
            tenant=tenant,
            resource=resource,
            expires_at=_epoch(expires, 0) if expires else None,
        )
        key = (role, p, tenant or "", resource or "")
        self.grant_events[key] = ev
        self.w.held[key] = expires
        self.w.by_holder.setdefault(p, set()).add(key)
        self.w.holders[role] += 1
        self.w.forget(p)
        return ev

    def unassign(self, key: Key, actor: str, reason: str) -> dict[str, Any]:
        role, p, tenant, resource = key
        ev = self.change(
            "RoleUnassigned", actor, reason, role=role, principal=p, tenant=tenant or None, resource=resource or None
        )
        if key in self.revoking:
            # Whoever removes it carries the review's revocation out: not granted again within 30 days
            # (audit reviews would say regranted-after-revoke, a finding nobody planted).
            self.revoking.discard(key)
            self.revoked[key] = self.day
        del self.w.held[key]
        self.w.by_holder[p].discard(key)
        self.w.holders[role] -= 1
        self.w.forget(p)
        return ev

    def holds(self, p: str) -> list[Key]:
        return sorted(self.w.by_holder.get(p, ()))

    def revoke_on_expiry(self, key: Key, reason: str) -> None:
        expires = self.w.held[key]
        assert expires is not None
        day = (expires - self.first_day) // DAY

        def revoke(e: _Engine) -> None:
            if key in e.w.held:
                e.unassign(key, "service_account:access-bot", reason)

        self.on(day, revoke)

    def create_tenant(self, tenant: str, display: str, actor: str, reason: str) -> None:
        self.change("TenantCreated", actor, reason, tenant=tenant, display_name=display)
        self.w.tenants.add(tenant)
        self.w.connectors[tenant] = []
