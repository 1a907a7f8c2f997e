"""Connectors and their use: secret reads by people and pipelines, resource usage, denied attempts."""

from __future__ import annotations

import math
from typing import Any

from access_ledger.demo.catalogue import _ids_for, _r
from access_ledger.demo.shape import CHANGES_TO, DAY, ORG, ROTA_DAYS
from access_ledger.demo.world import _epoch


class _Usage:
    """The engine's verbs for connectors, and the day's usage of what each principal may do."""

    def register_connector(self, name: str, tenant: str, ctype: str, actor: str, reason: str) -> None:
        self.change("ConnectorRegistered", actor, reason, connector=name, tenant=tenant, connector_type=ctype)
        self.w.connectors[tenant].append(name)

    def secret_read(self, p: str, tenant: str, connector: str, context: str) -> None:
        """A person reads a connector's credentials today, as their roles allow."""
        sec = CHANGES_TO + _r(self.rng, 4 * 3600)
        if not self.w.allows(
            p, tenant, "service_connector", "read_secret_value", f"service_connector/{connector}", self.day_start + sec
        ):
            raise AssertionError(f"secret read by {p} would not be authorised")
        ev = {
            "type": "ConnectorSecretAccessed",
            "at": None,
            "actor": "system",
            "connector": connector,
            "tenant": tenant,
            "principal": p,
            "outcome": "allowed",
            "context": context,
            "id": self._next_id("use"),
        }
        self.extra_usage.append((sec, ev))

    def unauthorised_read(self, p: str, tenant: str, connector: str, context: str) -> None:
        sec = CHANGES_TO + self.rng.randrange(DAY - CHANGES_TO)
        if self.w.allows(
            p, tenant, "service_connector", "read_secret_value", f"service_connector/{connector}", self.day_start + sec
        ):
            raise AssertionError(f"planted unauthorised read by {p} would be authorised")
        ev = {
            "type": "ConnectorSecretAccessed",
            "at": None,
            "actor": "system",
            "connector": connector,
            "tenant": tenant,
            "principal": p,
            "outcome": "allowed",
            "context": context,
            "id": self._next_id("use"),
        }
        self.extra_usage.append((sec, ev))
        self.incident(
            "unauthorised-secret-read",
            ev,
            p,
            tenant,
            f"read the credentials of {connector} with no role allowing it (reported as allowed)",
        )
        self.sc.moments["breach"] = _epoch(self.day_start, sec)

    def _usage(
        self,
        lo: int,
        hi: int,
        share: float,
        services_only: bool = False,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Usage in [lo, hi) of today: service-account runs, every account at least weekly, people at random.

        Authorisation is judged at the block's start: changes happen only between blocks, and a
        time-bound grant ends at 08:00, the start of the change window.
        """
        budget = self.usage_per_day * share
        out: list[tuple[int, dict[str, Any]]] = []
        rng, w = self.rng, self.w
        block = (lo, hi, self.day_start + lo)
        services = [s for s in self.services if w.active[s] and s not in self.quiet and self.jobs.get(s)]
        if services:
            runs = int(budget * (1.0 if services_only else 0.45) / 2.6 + rng.random())
            for _ in range(runs):
                self._service_run(rng.choice(services), block, out)
        if services_only:
            return out
        # Every account at least monthly (new ones at once), so that only the planted admin is dormant
        # in any 90-day window.
        for _ in range(min(math.ceil(len(self.rota) / ROTA_DAYS), len(self.rota))):
            p = self.rota.popleft()
            if not w.active.get(p) or p in self.quiet:
                continue  # leaves the rota; a reactivation puts it back
            self.rota.append(p)
            self._session(p, block, out)
        active = self.active_people()
        while active and len(out) < budget:
            before = len(out)
            self._session(active[_r(rng, len(active))], block, out)
            if len(out) == before:
                budget -= 1
        if active and rng.random() < 0.04 * max(1.0, self.usage_per_day / 200):
            self._denied_attempt(rng.choice(active), block, out)
        return out

    def _pick(self, rtype: str) -> str:
        pool = self.ids.get(rtype)
        if pool is None:
            org = {
                "member": [p.split(":", 1)[1] for p in self.people[:200]],
                "team": sorted(self.w.members)[:200],
                "tenant": sorted(self.w.tenants)[:200],
                "role": sorted(self.w.uses)[:200],
                "organization": [ORG],
                "billing": [ORG],
            }
            pool = self.ids[rtype] = org.get(rtype) or _ids_for(rtype, self.rng)
        return pool[_r(self.rng, len(pool))]

    def _use(
        self,
        p: str,
        tenant: str | None,
        scope: str | None,
        rtype: str,
        action: str,
        sec: int,
        out: list[tuple[int, dict[str, Any]]],
        context: str | None = None,
    ) -> None:
        if rtype == "service_connector":
            conns = self.w.connectors.get(tenant or "", ())
            if scope:
                resource = scope
            elif conns:
                resource = f"service_connector/{conns[_r(self.rng, len(conns))]}"
            else:
                return
            if action == "read_secret_value":
                ev = {
                    "type": "ConnectorSecretAccessed",
                    "at": None,
                    "actor": "system",
                    "connector": resource.split("/", 1)[1],
                    "tenant": tenant,
                    "principal": p,
                    "outcome": "allowed",
                    "context": context
                    or self.rng.choice(
                        ("credential rotation", "debugging a stack component", "verifying connector access")
                    ),
                }
                if self.shape.ids:
                    ev["id"] = self._next_id("use")
                out.append((sec, ev))
                return
        else:
            resource = scope or f"{rtype}/{self._pick(rtype)}"
        ev = {"type": "ResourceAccessed", "at": None, "actor": "system", "principal": p}
        if tenant is not None:
            ev["tenant"] = tenant
        ev.update(resource=resource, action=action, outcome="allowed")
        if self.shape.ids:
            ev["id"] = self._next_id("use")
        out.append((sec, ev))

    def _session(self, p: str, block: tuple[int, int, int], out: list[tuple[int, dict[str, Any]]]) -> None:
        lo, hi, t = block
        entries = [e for e in self.w.usable(p) if e[3] is None or t < e[3]]
        if not entries:
            return
        rng = self.rng
        sec = lo + _r(rng, hi - lo)
        context = f"{p.split(':', 1)[1]} run {10_000 + _r(rng, 89_999)}" if p[0] == "s" else None
        for _ in range(1 + (rng.random() < 0.6) + (rng.random() < 0.3)):
            tenant, scope, uses, _ = entries[_r(rng, len(entries))]
            rtype, action = uses[_r(rng, len(uses))]
            self._use(p, tenant, scope, rtype, action, min(hi - 1, sec + _r(rng, 600)), out, context)

    def _service_run(self, s: str, block: tuple[int, int, int], out: list[tuple[int, dict[str, Any]]]) -> None:
        """A pipeline run: the service account reads its connector's credentials, then does its work."""
        lo, hi, t = block
        rng = self.rng
        sec = lo + _r(rng, hi - lo)
        tenant, connector = self.jobs[s][_r(rng, len(self.jobs[s]))]
        run = f"{s.split(':', 1)[1]} run {10_000 + _r(rng, 89_999)}"
        self._use(
            s, tenant, f"service_connector/{connector}", "service_connector", "read_secret_value", sec, out, context=run
        )
        entries = [e for e in self.w.usable(s) if e[0] == tenant and e[1] is None and (e[3] is None or t < e[3])]
        for _ in range(1 + (rng.random() < 0.6)):
            if entries:
                _, _, uses, _ = entries[_r(rng, len(entries))]
                rtype, action = uses[_r(rng, len(uses))]
                self._use(s, tenant, None, rtype, action, min(hi - 1, sec + 5 + _r(rng, 900)), out)

    def _denied_attempt(self, p: str, block: tuple[int, int, int], out: list[tuple[int, dict[str, Any]]]) -> None:
        """Someone tries what their roles do not allow, and the platform refuses: reported, not a violation."""
        lo, hi, t = block
        sec = lo + _r(self.rng, hi - lo)
        tenants = sorted({e[0] for e in self.w.usable(p) if e[0]})
        if not tenants:
            return
        tenant = self.rng.choice(tenants)
        conns = self.w.connectors.get(tenant, [])
        if conns and self.rng.random() < 0.5:
            c = self.rng.choice(conns)
            if not self.w.allows(p, tenant, "service_connector", "read_secret_value", f"service_connector/{c}", t):
                ev = {
                    "type": "ConnectorSecretAccessed",
                    "at": None,
                    "actor": "system",
                    "connector": c,
                    "tenant": tenant,
                    "principal": p,
                    "outcome": "denied",
                    "context": "notebook session",
                }
                if self.shape.ids:
                    ev["id"] = self._next_id("use")
                out.append((sec, ev))
            return
        rtype, action = self.rng.choice(
            (("model_version", "promote"), ("stack", "delete"), ("secret", "update"), ("pipeline_deployment", "delete"))
        )
        resource = f"{rtype}/{self._pick(rtype)}"
        if not self.w.allows(p, tenant, rtype, action, resource, t):
            ev = {
                "type": "ResourceAccessed",
                "at": None,
                "actor": "system",
                "principal": p,
                "tenant": tenant,
                "resource": resource,
                "action": action,
                "outcome": "denied",
            }
            if self.shape.ids:
                ev["id"] = self._next_id("use")
            out.append((sec, ev))
