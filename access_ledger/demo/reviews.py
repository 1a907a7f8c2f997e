"""Access reviews, recorded as `access-ledger review` records them: campaigns, decisions, close and remediation."""

from __future__ import annotations

from typing import Any

from access_ledger.demo.catalogue import _r
from access_ledger.demo.shape import DAY
from projections.permissions import PermissionState
from projections.reviews import Campaign, decision_event, population, population_sha256, removals, route


class _Reviews:
    """The engine's verbs for access review campaigns."""

    def track_permissions(self) -> None:
        """Keep the ledger's permission state from the first event on (campaigns need it)."""
        self.mirror = PermissionState()

    def review_start(
        self,
        name: str,
        tenants: list[str],
        reviewer: str,
        actor: str,
        reason: str,
        due_days: int,
        reviewers: tuple[str, ...] = (),
        fallback: str | None = None,
    ) -> None:
        """Start a campaign today; its population is fixed when the event is written, at its position."""
        if self.mirror is None:
            raise AssertionError("a history with campaigns calls track_permissions() before its first event")
        self.change(
            "ReviewStarted",
            actor,
            reason,
            campaign=name,
            tenants=tenants,
            reviewer=reviewer,
            reviewers=list(reviewers),
            fallback_reviewer=fallback,
            privileged_only=False,
            due=self.instant(self.day + due_days, 0),
            as_of_position=0,
            items=0,
            population_sha256="",
        )

    def _fix_population(self, ev: dict[str, Any]) -> None:
        """Count, hash and route the campaign's items as projections.reviews does at the event's position."""
        assert self.mirror is not None
        items = population(self.mirror, ev["at"], ev["tenants"], ev["privileged_only"])
        route(items, self.mirror, ev["reviewer"], ev["reviewers"], ev.get("fallback_reviewer"))
        stuck = [r for r in items if r["conflicted"]]
        if stuck:
            raise AssertionError(f"campaign {ev['campaign']}: no reviewer may decide {stuck[0]}")
        ev.update(as_of_position=self.n, items=len(items), population_sha256=population_sha256(items))
        self.reviews[ev["campaign"]] = (Campaign(ev["campaign"], self.n + 1, ev), items)

    def review_items(self, name: str, reviewer: str) -> list[dict[str, Any]]:
        return [r for r in self.reviews[name][1] if r["reviewer"] == reviewer]

    def review_decide(
        self, name: str, reviewer: str, decisions: list[tuple[int, str, str]], sec: int, gap: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """`reviewer` decides (item, decision, reason) today from `sec` on, `gap` seconds apart (a range).

        Decisions change no permission, so they are written among the afternoon's usage.
        """
        c, items = self.reviews[name]
        out = []
        for item, decision, reason in decisions:
            if sec >= DAY:
                raise AssertionError(f"{reviewer}'s decisions run past midnight")
            ev = decision_event(c, items, item, decision, reason, reviewer)
            r = items[item - 1]
            if decision == "revoke" and r["via"] is None:
                self.revoking.add((r["role"], r["principal"], r["tenant"] or "", r["resource"] or ""))
            ev["id"] = self._next_id("chg")
            c.decisions[item] = ev
            self.extra_usage.append((sec, ev))
            out.append(ev)
            sec += gap[0] + _r(self.rng, gap[1] - gap[0] + 1)
        return out

    def review_close(self, name: str, actor: str, reason: str, *, auto_revoke: bool = True) -> None:
        """Close the campaign (undecided items stay exceptions); with auto_revoke its removals follow at once."""
        c, _ = self.reviews[name]
        c.close = self.change(
            "ReviewClosed", actor, reason, campaign=name, undecided="exception", auto_revoke=auto_revoke
        )
        if auto_revoke:
            self.review_remove(name, actor)

    def review_remove(self, name: str, actor: str, spare: frozenset[str] = frozenset()) -> None:
        """Record the removals that carry out the campaign's revocations (but those of `spare` principals)."""
        assert self.mirror is not None
        c, items = self.reviews[name]
        for ev in removals(c, [r for r in items if r["principal"] not in spare], "exception", self.mirror, actor):
            if ev["type"] == "RoleUnassigned":
                key = (ev["role"], ev["principal"], ev.get("tenant") or "", ev.get("resource") or "")
                if key in self.w.held:  # not removed earlier today
                    self.unassign(key, actor, ev["reason"])
                    self.revoked[key] = self.day
            elif ev["member"] in self.w.members[ev["team"]]:
                self.remove_member(ev["team"], ev["member"], actor, ev["reason"])
