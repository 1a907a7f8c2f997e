"""People and teams: hiring, service accounts, (de)activation, team membership, leavers."""

from __future__ import annotations

from typing import Any


class _People:
    """The engine's verbs for people and teams (every change goes through the engine, so the model and the log agree)."""

    def create_user(self, name: str, actor: str, reason: str) -> str:
        p = f"user:{name}"
        self.change("UserCreated", actor, reason, user=name, email=f"{name}@acme.example")
        self.w.active[p] = True
        self.people.append(p)
        self._active = None
        self.rota.appendleft(p)
        self.sc.principals.append(p)
        return p

    def create_service_account(self, name: str, actor: str, reason: str) -> str:
        p = f"service_account:{name}"
        self.change("ServiceAccountCreated", actor, reason, service_account=name)
        self.w.active[p] = True
        self.services.append(p)
        self.rota.appendleft(p)
        self.sc.principals.append(p)
        return p

    def set_active(self, p: str, active: bool, actor: str, reason: str) -> dict[str, Any]:
        kind, name = p.split(":", 1)
        word = "Reactivated" if active else "Deactivated"
        etype = ("User" if kind == "user" else "ServiceAccount") + word
        ev = self.change(etype, actor, reason, **{kind: name})
        self.w.active[p] = active
        self.w.forget(p)
        self._active = None
        if active:
            self.rota.appendleft(p)
        return ev

    def create_team(self, team: str, actor: str, reason: str) -> None:
        self.change("TeamCreated", actor, reason, team=team)
        self.w.members[team] = set()

    def add_member(self, team: str, p: str, actor: str, reason: str) -> None:
        self.change("TeamMemberAdded", actor, reason, team=team, member=p)
        self.w.members[team].add(p)
        self.w.teams_of.setdefault(p, set()).add(team)
        self.w.forget(p)

    def remove_member(self, team: str, p: str, actor: str, reason: str) -> None:
        self.change("TeamMemberRemoved", actor, reason, team=team, member=p)
        self.w.members[team].discard(p)
        self.w.teams_of[p].discard(team)
        self.w.forget(p)

    def offboard(self, p: str, actor: str, reason: str, *, keep_grants: bool = False) -> dict[str, Any]:
        """A leaver: grants and memberships removed first (unless kept), then the account deactivated."""
        if not keep_grants:
            for key in self.holds(p):
                self.unassign(key, actor, reason)
            for team in sorted(self.w.teams_of.get(p, ())):
                self.remove_member(team, p, actor, reason)
        return self.set_active(p, False, actor, reason)

    def terminate(self, p: str) -> None:
        """HR ends `p`'s contract at midnight today: nothing of theirs is used from now on."""
        self.sc.terminations.append((p, self.instant(self.day, 0)))
        self.silence(p)

    def silence(self, p: str) -> None:
        """From today on, `p` uses nothing (the dormant admin)."""
        self.quiet.add(p)
        self._active = None

    def active_people(self) -> list[str]:
        if self._active is None:
            self._active = [p for p in self.people if self.w.active[p] and p not in self.quiet]
        return self._active
