"""A population from counts (LARGE, HUGE, the benchmarks): the same kinds of people, grants and incidents, at random."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from access_ledger.demo.cast import TENANTS
from access_ledger.demo.catalogue import FAMILIES, FIRST, LAST, PROJECTS, SAFE_EXTRAS, SEED_ROLES, RoleSpec, _r
from access_ledger.demo.shape import DAY, LAUNCH, ORG

if TYPE_CHECKING:
    from access_ledger.demo.engine import _Engine


# -- a population from counts (the benchmarks) ---------------------------------------------------


class _Population:
    """Users, tenants, roles and assignments in the numbers asked for; the same incidents, planted at random."""

    def __init__(self, e: _Engine):
        self.e = e
        s = e.shape
        self.rng = random.Random(s.seed + 1)
        self.n_users = max(20, s.users)
        self.n_tenants = max(3, s.tenants)
        self.n_roles = max(len(SEED_ROLES), s.roles)
        self.n_assign = s.assignments or self.n_users * 8
        self.family: dict[str, str] = {}
        self.tenants_of: dict[str, list[str]] = {}
        self.family_roles: dict[str, list[str]] = {f: list(r) for f, (_, r) in FAMILIES.items()}
        self.team_of: dict[str, str] = {}
        self.team_tenants: dict[str, list[str]] = {}
        self.team_family: dict[str, str] = {}
        self.hires: list[int] = []
        self.grants_per_day = 0.0
        self.owed = 0.0
        self.planted: set[str] = set()
        self.names: set[str] = set()
        self.leaver = ""
        self.reviewing: set[str] = set()

    def expected_changes(self) -> int:
        # Review decisions: about three in four assignments are in force at the Q4 review.
        return int(self.n_users * 2 + self.n_assign * 1.95 + self.n_tenants * 5 + self.n_roles)

    def _name(self) -> str:
        rng = self.rng
        base = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}{n}"
        self.names.add(name)
        return name

    def setup(self) -> None:
        e, rng, admin = self.e, self.rng, self.e.admin
        e.track_permissions()
        tenants = list(TENANTS)
        envs = ("dev", "staging", "prod")
        i = 0
        while len(tenants) < self.n_tenants:
            word = PROJECTS[i % len(PROJECTS)] + ("" if i < len(PROJECTS) * 3 else str(i // (len(PROJECTS) * 3)))
            tenants.append(f"{word}-{envs[(i // len(PROJECTS)) % 3]}")
            i += 1
        self.tenants = tenants
        variants: list[RoleSpec] = []
        seeds = [r for r in SEED_ROLES if r.family in FAMILIES]
        for k in range(self.n_roles - len(SEED_ROLES)):
            seed = seeds[k % len(seeds)]
            extras = tuple(sorted(set(rng.sample(SAFE_EXTRAS, rng.randint(1, 3)))))
            name = f"{seed.name}_{PROJECTS[(k // len(seeds)) % len(PROJECTS)]}{k // (len(seeds) * len(PROJECTS)) or ''}"
            variants.append(
                RoleSpec(
                    name,
                    seed.name,
                    extras,
                    f"{seed.description.split(':')[0]} ({name})",
                    seed.uses + extras,
                    seed.family,
                )
            )
            self.family_roles[seed.family].append(name)
        self.variants = variants
        initial = int(self.n_users * 0.85)
        hire_days = sorted(rng.randrange(1, e.shape.days - 10) for _ in range(self.n_users - initial))
        n_teams = max(len(FAMILIES), self.n_users // 25)
        fam_names = list(FAMILIES)
        fam_weights = [FAMILIES[f][0] for f in fam_names]

        def day0(e: _Engine) -> None:
            e.change("OrganizationCreated", "system", LAUNCH, name=ORG, preset="zenml-pro")
            e.create_user("priya", "system", "IT-100 bootstrap administrator")
            e.assign("org_admin", admin, None, "system", "IT-100 bootstrap administrator")
            e.create_service_account("access-bot", admin, "SEC-112 expiry of time-bound grants")
            e.assign(
                "org_editor",
                "service_account:access-bot",
                None,
                admin,
                "SEC-112 removes time-bound grants when they expire",
            )
            for t in tenants:
                e.create_tenant(t, t.replace("-", " ").title(), admin, "IT-101 tenant of the ML platform")
                e.register_connector(f"aws-{t}", t, "aws", "system", "PLAT-10 cloud account of the tenant")
            for spec in SEED_ROLES + tuple(variants):
                e.create_role(spec, admin, "SEC-110 roles of the access policy")
            for k in range(n_teams):
                fam = fam_names[k % len(fam_names)]
                team = f"{PROJECTS[(k // len(fam_names)) % len(PROJECTS)]}-{fam}{k // (len(PROJECTS) * len(fam_names)) or ''}"
                e.create_team(team, admin, "IT-102 teams from the org chart")
                self.team_family[team] = fam
                start = (k * 3) % len(tenants)
                self.team_tenants[team] = [tenants[(start + j) % len(tenants)] for j in range(3)]
            # A CI service account per project group of tenants, with its connector.
            for j, t in enumerate(tenants):
                s = e.create_service_account(f"ci-{t}", admin, "PLAT-20 CI service account")
                fam = "deploy" if t.endswith(("prod", "production", "staging")) else "science"
                role = self.family_roles[fam][j % len(self.family_roles[fam])]
                e.assign(role, s, t, admin, "PLAT-20 CI service account")
                e.assign(
                    "connector_consumer",
                    s,
                    t,
                    admin,
                    "PLAT-21 pipeline credentials",
                    resource=f"service_connector/aws-{t}",
                )
                e.jobs[s] = [(t, f"aws-{t}")]
            for k in range(initial):  # the first hires fill every team, so that none is empty
                team = list(self.team_family)[k] if k < n_teams else None
                fam = self.team_family[team] if team else rng.choices(fam_names, fam_weights)[0]
                self._hire(e, fam, "IT-103 initial import from the directory", team)
            # Every custom role has a holder: its family's teams hold it somewhere.
            teams_by_family: dict[str, list[str]] = {}
            for team, fam in self.team_family.items():
                teams_by_family.setdefault(fam, []).append(team)
            for spec in SEED_ROLES + tuple(variants):
                if e.w.holders[spec.name] == 0 and spec.family in teams_by_family:
                    team = rng.choice(teams_by_family[spec.family])
                    key = (spec.name, f"team:{team}", self.team_tenants[team][0], "")
                    if key not in e.w.held:
                        e.assign(spec.name, f"team:{team}", key[2], admin, "SEC-115 team role")

        e.on(0, day0)
        for d in hire_days:
            e.on(
                d,
                lambda e: self._hire(
                    e, rng.choices(fam_names, fam_weights)[0], f"HR-{rng.randrange(1000, 9999)} onboarding"
                ),
            )
        self.grants_per_day = -1.0
        self._plan_incidents()

    def _hire(self, e: _Engine, family: str, why: str, team: str | None = None) -> str:
        rng = self.rng
        p = e.create_user(self._name(), e.admin, why)
        if team is None:
            team = rng.choice([t for t, f in self.team_family.items() if f == family])
        e.add_member(team, p, e.admin, why)
        self.family[p], self.team_of[p] = family, team
        self.tenants_of[p] = self.team_tenants[team] + [rng.choice(self.tenants) for _ in range(2)]
        for _ in range(4):
            self._grant(p, why)
        return p

    def _grant(self, p: str, why: str, days: int | None = None) -> bool:
        e, rng = self.e, self.rng
        roles = self.family_roles[self.family[p]]
        role = roles[0] if rng.random() < 0.5 else rng.choice(roles)
        if role == "data_science_lead" and rng.random() < 0.7:
            role = "data_scientist"
        tenant = rng.choice(self.tenants_of[p])
        key = (role, p, tenant, "")
        if key in e.w.held or tenant not in e.w.tenants or e.day - e.revoked.get(key, -DAY) <= 31:
            return False
        if days and e.day + days >= e.shape.days:
            # It would expire on the day the history ends, before that day's changes are written:
            # expired and never revoked, a finding nobody planted. End it on the last day instead.
            days = e.shape.days - 1 - e.day
            if days < 1:
                return False
        e.assign(role, p, tenant, e.admin, why, days=days)
        if days:
            e.revoke_on_expiry(key, f"{why}: time-bound grant ended")
        return True

    def daily(self) -> None:
        """Ordinary changes: new grants, some time-bound, role changes, leavers."""
        e, rng = self.e, self.rng
        if e.day == 0:
            return
        if self.grants_per_day < 0:  # day 1: what day 0 did not assign is spread over the year
            self.grants_per_day = max(0, self.n_assign - e.sc.counts["RoleAssigned"]) / max(1, e.shape.days - 1)
        people = [p for p in e.active_people() if p in self.family and p not in self.planted]
        if not people:
            return
        self.owed += self.grants_per_day
        for _ in range(int(4 * self.grants_per_day) + 4):
            if self.owed < 1:
                break
            p = rng.choice(people)
            r = rng.random()
            ticket = f"REQ-{rng.randrange(10_000, 99_999)}"
            if r < 0.1:
                granted = self._grant(p, f"{ticket} temporary access", days=rng.choice((3, 7, 14, 30)))
            elif r < 0.3:
                granted = False
                held = [k for k in e.holds(p) if k[2] and e.w.held[k] is None]
                if len(held) > 1:
                    key = rng.choice(held)
                    if e.w.holders[key[0]] > 1:
                        e.unassign(key, e.admin, f"{ticket} access no longer needed")
                        granted = self._grant(p, f"{ticket} role change")
            else:
                granted = self._grant(p, ticket)
            self.owed -= granted
        if rng.random() < 0.02 * max(1.0, len(people) / 500) and len(people) > 30:
            p = rng.choice(people)
            team = self.team_of[p]
            if len(e.w.members[team]) > 1 and all(e.w.holders[k[0]] > 1 for k in e.holds(p)):
                e.terminate(p)
                e.offboard(p, e.admin, f"HR-{rng.randrange(1000, 9999)} leaver: access removed")

    def _plan_incidents(self) -> None:
        e, days, admin = self.e, self.e.shape.days, self.e.admin

        def person(e: _Engine, family: str, need: Callable[[str], bool] = lambda p: True) -> str:
            """The first active person of the family not already in an incident (hired if none)."""
            found = next(
                (
                    p
                    for p in e.people
                    if self.family.get(p) == family and e.w.active[p] and p not in self.planted and need(p)
                ),
                None,
            )
            p = found or self._hire(e, family, "IT-103 onboarding")
            self.planted.add(p)
            return p

        def expired(e: _Engine) -> None:
            p = person(e, "science")
            t = next(t for t in self.tenants if ("data_engineer", p, t, "") not in e.w.held)
            ev = e.assign("data_engineer", p, t, admin, "DATA-77 backfill", days=14)
            e.incident(
                "expired-grant-not-revoked",
                ev,
                p,
                t,
                "data_engineer for a backfill expired 14 days later and was never removed",
                role="data_engineer",
            )

        def dormant(e: _Engine) -> None:
            p = person(e, "platform")
            ev = e.assign("system_administrator", p, "production", admin, "SEC-131 platform on-call admin")
            e.silence(p)
            e.incident(
                "dormant-admin",
                ev,
                p,
                "production",
                "holds system_administrator in production and has used nothing since",
                role="system_administrator",
            )

        def sod(e: _Engine) -> None:
            p = person(e, "data")
            t = next(k[2] for k in e.holds(p) if k[2] and e.w.held[k] is None)  # where they build pipelines
            ev = e.assign("ml_engineer", p, t, admin, "DATA-310 release help")
            e.incident(
                "sod-conflict",
                ev,
                p,
                t,
                "a data engineer who was also given ml_engineer (model_version:promote)",
                role="ml_engineer",
            )

        def self_grant(e: _Engine) -> None:
            p = person(e, "platform")
            e.assign("org_editor", p, None, admin, "SEC-121 platform on-call lead manages members")
            ev = e.assign("system_administrator", p, "staging", p, "PLAT-88 hotfix")
            e.incident(
                "self-grant",
                ev,
                p,
                "staging",
                "granted themself system_administrator in staging",
                role="system_administrator",
            )
            e.on(
                e.day + 3,
                lambda e: e.unassign(
                    ("system_administrator", p, "staging", ""), admin, "PLAT-88 review: self-granted admin removed"
                ),
            )

        def no_reason(e: _Engine) -> None:
            p = person(e, "analysis")
            t = self.tenants_of[p][0]
            ev = e.assign("viewer", p, t, admin, None) if ("viewer", p, t, "") not in e.w.held else None
            e.incident(
                "change-without-reason", ev, p, t, "viewer assigned with no ticket or justification", role="viewer"
            )

        def leaver(e: _Engine) -> None:
            p = person(e, "science", lambda q: len(e.w.members[self.team_of[q]]) > 1)
            self.leaver = p
            e.terminate(p)
            ev = e.offboard(p, admin, "HR-588 leaver", keep_grants=True)
            e.incident(
                "deactivated-with-grants",
                ev,
                p,
                None,
                "deactivated as a leaver; roles and team membership never removed",
            )

        def breach(e: _Engine) -> None:
            p = person(
                e,
                "analysis",
                lambda q: (
                    not e.w.allows(
                        q,
                        "production",
                        "service_connector",
                        "read_secret_value",
                        "service_connector/aws-production",
                        e.day_start + DAY - 1,
                    )
                ),
            )
            e.unauthorised_read(p, "production", "aws-production", "local notebook")

        def late_leaver(e: _Engine) -> None:
            p = person(e, "analysis", lambda q: len(e.w.members[self.team_of[q]]) > 1)
            e.terminate(p)

            def deactivate(e: _Engine) -> None:
                ev = e.offboard(p, admin, "HR-760 leaver: access removed")
                e.incident("late-leaver", ev, p, None, "deactivated four days after HR ended the contract (SLA 24 h)")

            e.on(e.day + 4, deactivate)

        def unauthorised(e: _Engine) -> None:
            p, colleague = person(e, "analysis"), person(e, "science")
            t = self.tenants_of[colleague][0]
            ev = e.assign("admin", colleague, t, p, "helping a colleague debug a run")
            e.incident(
                "unauthorised-change",
                ev,
                p,
                t,
                "holds only viewer-level roles and assigned admin to a colleague; granting roles needs member:update",
                role="admin",
            )
            e.on(
                e.day + 1,
                lambda e: e.unassign(
                    ("admin", colleague, t, ""), admin, "SEC-190 grant made without authority reverted"
                ),
            )

        def by_leaver(e: _Engine) -> None:
            p = person(e, "analysis", lambda q: len(e.w.members[self.team_of[q]]) > 1)
            e.terminate(p)
            e.offboard(p, admin, "HR-590 leaver: access removed")

            def grant(e: _Engine) -> None:
                colleague = person(e, "science")
                t = self.tenants_of[colleague][0]
                ev = e.assign("admin", colleague, t, p, "handover before leaving")
                e.incident(
                    "change-by-leaver",
                    ev,
                    p,
                    t,
                    "a leaver's deactivated account assigned admin to a colleague",
                    role="admin",
                )
                e.on(
                    e.day + 1,
                    lambda e: e.unassign(
                        ("admin", colleague, t, ""), admin, "SEC-191 grant by a leaver's account reverted"
                    ),
                )

            e.on(e.day + 5, grant)

        for frac, action in (
            (0.27, expired),
            (0.3, unauthorised),
            (0.4, dormant),
            (0.45, by_leaver),
            (0.52, sod),
            (0.62, self_grant),
            (0.68, no_reason),
            (0.74, leaver),
            (0.82, breach),
            (0.88, late_leaver),
        ):
            e.on(int(days * frac), action)
        self._plan_reviews(person)

    def _plan_reviews(self, person: Callable[..., str]) -> None:
        """Q3: the production tenant, rubber-stamped by its reviewer. Q4: every tenant, one reviewer per
        team, each revoking something; the platform carries the revocations out, all but the leaver's."""
        e, days, admin = self.e, self.e.shape.days, self.e.admin
        afternoon = 12 * 3600
        q3, q4 = int(days * 0.55), int(days * 0.78)

        def q3_start(e: _Engine) -> None:
            stamper, fallback = person(e, "deploy"), person(e, "platform")
            e.review_start(
                "Q3-production",
                ["production"],
                stamper,
                admin,
                "SEC-400 quarterly access review of production",
                due_days=30,
                fallback=fallback,
            )

            def rubber_stamp(e: _Engine) -> None:
                mine = [(r["item"], "keep", "ok") for r in e.review_items("Q3-production", stamper)]
                decided = e.review_decide("Q3-production", stamper, mine, afternoon, gap=(1, 2))
                e.incident(
                    "rubber-stamp-review",
                    decided[0],
                    stamper,
                    "production",
                    f"kept all {len(decided)} of the items of Q3-production one or two seconds apart",
                )
                theirs = [
                    (r["item"], "keep", f"{r['role']} is needed in production")
                    for r in e.review_items("Q3-production", fallback)
                ]
                e.review_decide("Q3-production", fallback, theirs, afternoon + 3 * 3600, gap=(120, 300))

            e.on(e.day + 2, rubber_stamp)
            e.on(e.day + 7, lambda e: e.review_close("Q3-production", admin, "SEC-400 review complete"))

        e.on(q3, q3_start)

        def q4_start(e: _Engine) -> None:
            default, fallback = person(e, "platform"), person(e, "platform")
            reviewers = {}
            for team in sorted(e.w.members):
                member = next((m for m in sorted(e.w.members[team]) if e.w.active[m] and m not in self.planted), None)
                if member is not None:
                    reviewers[team] = member
                    self.reviewing.add(member)
                    self.planted.add(member)  # no changes of theirs while they review
            e.review_start(
                "Q4-all-tenants",
                sorted(e.w.tenants),
                default,
                admin,
                "SEC-450 quarterly access review of every tenant",
                due_days=30,
                reviewers=tuple(f"team:{t}={r}" for t, r in reviewers.items()),
                fallback=fallback,
            )
            e.on(e.day + 2, lambda e: self._q4_decisions(sorted({default, fallback, *reviewers.values()})))

        e.on(q4, q4_start)
        e.on(
            q4 + 20,
            lambda e: e.review_close(
                "Q4-all-tenants",
                admin,
                "SEC-450 review complete; the platform applies the revocations",
                auto_revoke=False,
            ),
        )
        e.on(q4 + 22, lambda e: e.review_remove("Q4-all-tenants", admin, spare=frozenset({self.leaver})))

    def _q4_decisions(self, reviewers: list[str]) -> None:
        """Each reviewer decides their items, at most 300 a day, a minute or so apart: keeps, the leaver's
        access revoked, and one more revocation each that changes nothing else (a role of several, held
        by others too; never a pipeline's credentials)."""
        e = self.e
        leaver_decision: dict[str, Any] | None = None
        incidents = self.planted - self.reviewing
        for reviewer in reviewers:
            items = e.review_items("Q4-all-tenants", reviewer)
            spare = next(
                (
                    r["item"]
                    for r in items
                    if r["via"] is None
                    and r["principal"] != self.leaver
                    and r["principal"] not in incidents
                    and r["role"] != "connector_consumer"
                    and e.w.holders[r["role"]] > 1
                    and len(e.holds(r["principal"])) > 1
                ),
                None,
            )
            decisions = [
                (r["item"], "revoke", "left the company")
                if r["principal"] == self.leaver
                else (r["item"], "revoke", "no longer needed")
                if r["item"] == spare
                else (r["item"], "keep", f"{r['role']} in {r['tenant']} is needed")
                for r in items
            ]
            for n in range(0, len(decisions), 300):

                def decide(
                    e: _Engine, batch: list[tuple[int, str, str]] = decisions[n : n + 300], reviewer: str = reviewer
                ) -> None:
                    nonlocal leaver_decision
                    for ev in e.review_decide(
                        "Q4-all-tenants", reviewer, batch, 12 * 3600 + _r(e.rng, 1800), gap=(20, 90)
                    ):
                        if ev["reason"] == "left the company" and leaver_decision is None:
                            leaver_decision = ev
                            e.incident(
                                "revocation-not-carried-out",
                                ev,
                                self.leaver,
                                None,
                                "Q4-all-tenants revoked the leaver's access; the platform never removed it",
                            )

                e.on(e.day + 1 + n // 300, decide)
