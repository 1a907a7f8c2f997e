"""The acme-ml story (SMALL): named people, dated events, the incidents planted by hand, two quarterly reviews."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from access_ledger.demo.catalogue import SEED_ROLES, _r
from access_ledger.demo.shape import LAUNCH, ORG

if TYPE_CHECKING:
    from access_ledger.demo.engine import _Engine


# -- the acme-ml story -------------------------------------------------------------------------

TENANTS = {"research": "Research", "staging": "Staging", "production": "Production"}
CAST: dict[str, tuple[str, list[tuple[str, str]], int]] = {
    # name: (team, [(role, tenant), ...], day hired)
    "amara": ("research", [("data_science_lead", "research"), ("data_scientist", "staging")], 1),
    "bjorn": ("research", [("data_scientist", "research"), ("data_scientist", "staging")], 2),
    "chen": ("research", [("data_scientist", "research")], 3),
    "kofi": ("research", [("data_scientist", "research")], 5),
    "dilnoza": ("research", [("research_analyst", "research")], 8),
    "rafael": ("research", [("research_analyst", "research")], 12),
    "emeka": ("platform", [("mlops_platform_engineer", "staging"), ("mlops_platform_engineer", "production")], 1),
    "farah": ("platform", [("ml_engineer", "staging"), ("ml_engineer", "production")], 2),
    "lucia": ("platform", [("ml_engineer", "production")], 4),
    "otto": ("platform", [("system_administrator", "production"), ("system_administrator", "staging")], 1),
    "hana": ("data-eng", [("data_engineer", "research"), ("data_engineer", "production")], 3),
    "ivan": ("data-eng", [("data_engineer", "staging")], 6),
    "noor": ("data-eng", [("data_engineer", "production"), ("data_engineer", "staging")], 9),
    "jun": ("product", [], 4),
    "sven": ("platform", [("mlops_platform_engineer", "research"), ("mlops_platform_engineer", "staging")], 150),
    "mei": ("research", [("data_scientist", "research")], 200),
    "olga": ("product", [], 280),  # before the Q4 review: joined its team, reviewed in it
}


class _AcmeCast:
    """The scripted story of acme-ml (SMALL): named people, dated events, the incidents planted by hand."""

    def __init__(self, e: _Engine):
        self.e = e

    def expected_changes(self) -> int:
        return 320  # with the reviews' decisions

    def daily(self) -> None:
        pass

    def setup(self) -> None:
        e = self.e
        admin = e.admin
        on = e.on
        e.track_permissions()

        def day0(e: _Engine) -> None:
            e.change("OrganizationCreated", "system", LAUNCH, name=ORG, preset="zenml-pro")
            e.create_user("priya", "system", "IT-100 bootstrap administrator")
            e.assign("org_admin", admin, None, "system", "IT-100 bootstrap administrator")
            for tenant, display in TENANTS.items():
                e.create_tenant(tenant, display, admin, "IT-101 tenants of the ML platform")
            for spec in SEED_ROLES:
                e.create_role(spec, admin, "SEC-110 roles of the access policy v1")
            e.create_service_account("access-bot", admin, "SEC-112 expiry of time-bound grants")
            e.assign(
                "org_editor",
                "service_account:access-bot",
                None,
                admin,
                "SEC-112 removes time-bound grants when they expire",
            )
            for team in ("research", "platform", "data-eng", "product"):
                e.create_team(team, admin, "IT-102 teams from the org chart")
            for conn, tenant, kind in (
                ("gcp-research", "research", "gcp"),
                ("aws-staging", "staging", "aws"),
                ("aws-prod", "production", "aws"),
                ("s3-datalake", "production", "aws"),
            ):
                e.register_connector(conn, tenant, kind, "system", "PLAT-10 cloud accounts of the platform")
            e.assign("viewer", "team:research", "staging", admin, "SEC-113 researchers follow staging runs")
            e.assign("viewer", "team:platform", "research", admin, "SEC-113 platform supports research")
            e.assign("product_manager", "team:product", "production", admin, "SEC-114 product follows production")
            e.assign("product_manager", "team:product", "staging", admin, "SEC-114 product follows production")
            e.assign("org_viewer", "team:product", None, admin, "SEC-114 product sees the tenants")
            for sa, grants, jobs in (
                (
                    "ci-deployer",
                    [("ml_engineer", "staging"), ("ml_engineer", "production")],
                    [("staging", "aws-staging"), ("production", "aws-prod")],
                ),
                ("nightly-training", [("data_scientist", "research")], [("research", "gcp-research")]),
                ("feature-etl", [("data_engineer", "production")], [("production", "s3-datalake")]),
                ("jenkins-legacy", [("ml_engineer", "staging")], [("staging", "aws-staging")]),
            ):
                s = e.create_service_account(sa, admin, "PLAT-20 CI service account")
                for role, tenant in grants:
                    e.assign(role, s, tenant, admin, "PLAT-20 CI service account")
                for tenant, conn in jobs:
                    e.assign(
                        "connector_consumer",
                        s,
                        tenant,
                        admin,
                        "PLAT-21 pipeline credentials",
                        resource=f"service_connector/{conn}",
                    )
                e.jobs[s] = jobs

        on(0, day0)

        ticket = iter(range(200, 10_000))
        for name, (team, grants, day) in CAST.items():

            def hire(e: _Engine, name: str = name, team: str = team, grants: list[tuple[str, str]] = grants) -> None:
                why = f"HR-{next(ticket)} onboarding"
                p = e.create_user(name, admin, why)
                e.add_member(team, p, admin, why)
                for role, tenant in grants:
                    e.assign(role, p, tenant, admin, why)

            on(day, hire)
        on(14, lambda e: e.assign("org_editor", "user:amara", None, admin, "SEC-120 research lead manages her team"))
        on(20, lambda e: e.assign("org_editor", "user:emeka", None, admin, "SEC-121 platform lead manages members"))

        # Clean time-bound grants, revoked when they expire.
        def incident_review(e: _Engine) -> None:
            e.assign("viewer", "user:chen", "production", admin, "INC-204 incident review", days=7)
            e.revoke_on_expiry(("viewer", "user:chen", "production", ""), "INC-204 closed: time-bound grant ended")

        on(40, incident_review)

        def migration(e: _Engine) -> None:
            e.assign("system_administrator", "user:farah", "staging", admin, "CHG-1182 database migration", days=2)
            e.revoke_on_expiry(("system_administrator", "user:farah", "staging", ""), "CHG-1182 done")

        on(95, migration)

        def break_glass(e: _Engine) -> None:
            why = "INC-330 break-glass: check the production credentials"
            e.assign(
                "connector_consumer",
                "user:emeka",
                "production",
                admin,
                why,
                resource="service_connector/aws-prod",
                days=1,
            )
            e.revoke_on_expiry(
                ("connector_consumer", "user:emeka", "production", "service_connector/aws-prod"),
                "INC-330 closed: break-glass access ended",
            )
            e.secret_read("user:emeka", "production", "aws-prod", "INC-330 verifying the rotated key")
            e.secret_read("user:emeka", "production", "aws-prod", "INC-330 verifying the rotated key")

        on(205, break_glass)

        def launch_review(e: _Engine) -> None:
            e.assign("viewer", "user:amara", "production", admin, "MODEL-77 launch review", days=30)
            e.revoke_on_expiry(("viewer", "user:amara", "production", ""), "MODEL-77 launch review ended")

        on(130, launch_review)

        # The access policy evolves.
        on(
            60,
            lambda e: e.change_role(
                "data_scientist", admin, "SEC-140 scientists annotate model versions", add=("model_version:update",)
            ),
        )
        on(
            180,
            lambda e: e.change_role(
                "ml_engineer",
                admin,
                "SEC-171 least privilege: services are not deleted by hand",
                remove=("service:delete",),
            ),
        )
        on(
            240,
            lambda e: e.change_role(
                "product_manager", admin, "PM-12 product managers curate tags", add=("tag:update",)
            ),
        )

        def retire_jenkins(e: _Engine) -> None:
            e.offboard("service_account:jenkins-legacy", admin, "PLAT-45 Jenkins retired")

        on(75, retire_jenkins)
        on(
            110,
            lambda e: e.change(
                "TenantRenamed",
                admin,
                "IT-130 region in the name",
                tenant="production",
                display_name="Production (eu-west-1)",
            ),
        )

        def rafael_leaves(e: _Engine) -> None:
            e.terminate("user:rafael")
            e.offboard("user:rafael", admin, "HR-512 leaver: access removed")

        on(120, rafael_leaves)

        # A hackathon tenant, used for a month and cleaned up before deletion.
        def hackathon(e: _Engine) -> None:
            e.create_tenant("llm-hackathon", "LLM hackathon", admin, "IT-160 hackathon tenant")
            e.register_connector("openai-sandbox", "llm-hackathon", "openai", "system", "IT-160 hackathon tenant")
            e.assign("editor", "team:research", "llm-hackathon", admin, "IT-160 hackathon tenant")
            e.assign("mlops_platform_engineer", "user:emeka", "llm-hackathon", admin, "IT-160 hackathon tenant")

        on(165, hackathon)

        def end_hackathon(e: _Engine) -> None:
            for key in sorted(k for k in e.w.held if k[2] == "llm-hackathon"):
                e.unassign(key, admin, "IT-161 hackathon over")
            e.change(
                "ConnectorDeleted",
                "system",
                "IT-161 hackathon over",
                connector="openai-sandbox",
                tenant="llm-hackathon",
            )
            e.w.connectors["llm-hackathon"] = []
            e.change("TenantDeleted", admin, "IT-161 hackathon over", tenant="llm-hackathon")
            e.w.tenants.discard("llm-hackathon")
            e.w.forget()

        on(196, end_hackathon)

        # Parental leave: deactivated and back, grants kept meanwhile.
        on(150, lambda e: e.set_active("user:noor", False, admin, "HR-601 parental leave"))
        on(238, lambda e: e.set_active("user:noor", True, admin, "HR-601 back from leave"))

        # A role change: lucia moves from ML engineering to lead a research group.
        def lucia_moves(e: _Engine) -> None:
            why = "HR-540 role change: ML engineering to research lead"
            e.unassign(("ml_engineer", "user:lucia", "production", ""), admin, why)
            e.remove_member("platform", "user:lucia", admin, why)
            e.add_member("research", "user:lucia", admin, why)
            e.assign("data_science_lead", "user:lucia", "research", admin, why)

        on(215, lucia_moves)

        # -- the planted incidents --
        def expired(e: _Engine) -> None:
            ev = e.assign("data_engineer", "user:kofi", "production", admin, "DATA-77 backfill", days=14)
            e.incident(
                "expired-grant-not-revoked",
                ev,
                "user:kofi",
                "production",
                "data_engineer in production for the DATA-77 backfill expired 14 days later and was never removed",
                role="data_engineer",
            )

        on(100, expired)

        def dormant(e: _Engine) -> None:
            e.silence("user:otto")
            e.incident(
                "dormant-admin",
                e.grant_events[("system_administrator", "user:otto", "production", "")],
                "user:otto",
                "production",
                f"holds system_administrator in production and staging; has used nothing since {e.instant(e.day)[:10]}",
                role="system_administrator",
            )
            e.sc.moments["dormant_since"] = e.instant(e.day)

        on(160, dormant)

        def sod(e: _Engine) -> None:
            ev = e.assign("ml_engineer", "user:hana", "production", admin, "DATA-310 release help")
            e.incident(
                "sod-conflict",
                ev,
                "user:hana",
                "production",
                "a data engineer (pipeline:create) who was also given ml_engineer (model_version:promote)",
                role="ml_engineer",
            )

        on(190, sod)

        def self_grant(e: _Engine) -> None:
            ev = e.assign("system_administrator", "user:emeka", "production", "user:emeka", "PLAT-88 hotfix")
            e.incident(
                "self-grant",
                ev,
                "user:emeka",
                "production",
                "emeka granted himself system_administrator in production",
                role="system_administrator",
            )

        on(228, self_grant)
        on(
            231,
            lambda e: e.unassign(
                ("system_administrator", "user:emeka", "production", ""),
                admin,
                "PLAT-88 review: self-granted admin removed",
            ),
        )

        def no_reason(e: _Engine) -> None:
            ev = e.assign("data_scientist", "user:dilnoza", "staging", admin, None)
            e.incident(
                "change-without-reason",
                ev,
                "user:dilnoza",
                "staging",
                "data_scientist in staging assigned with no ticket or justification",
                role="data_scientist",
            )

        on(250, no_reason)

        def leaver(e: _Engine) -> None:
            e.terminate("user:bjorn")
            ev = e.offboard("user:bjorn", admin, "HR-588 leaver", keep_grants=True)
            e.incident(
                "deactivated-with-grants",
                ev,
                "user:bjorn",
                None,
                "deactivated as a leaver; his roles and team membership were never removed",
            )

        on(270, leaver)

        on(300, lambda e: e.unauthorised_read("user:ivan", "production", "aws-prod", "local notebook"))

        def unauthorised(e: _Engine) -> None:
            ev = e.assign("admin", "user:chen", "staging", "user:jun", "helping chen debug a staging run")
            e.incident(
                "unauthorised-change",
                ev,
                "user:jun",
                "staging",
                "jun, who holds only viewer-level roles, assigned admin in staging to chen; granting roles "
                "needs member:update",
                role="admin",
            )

        on(140, unauthorised)
        on(
            141,
            lambda e: e.unassign(
                ("admin", "user:chen", "staging", ""), admin, "SEC-190 grant made without authority reverted"
            ),
        )

        def by_leaver(e: _Engine) -> None:
            ev = e.assign("admin", "user:dilnoza", "research", "user:rafael", "handover before leaving")
            e.incident(
                "change-by-leaver",
                ev,
                "user:rafael",
                "research",
                "rafael's account, deactivated when he left on day 120, assigned admin in research to dilnoza",
                role="admin",
            )

        on(126, by_leaver)
        on(
            127,
            lambda e: e.unassign(
                ("admin", "user:dilnoza", "research", ""), admin, "SEC-191 grant by a leaver's account reverted"
            ),
        )

        self.reviews()

        # The last quarter: a hire, a late leaver, more time-bound access.
        def q4_hire(e: _Engine) -> None:
            why = "HR-702 onboarding"
            p = e.create_user("tomas", admin, why)
            e.add_member("data-eng", p, admin, why)
            e.assign("data_engineer", p, "staging", admin, why)
            e.assign("data_engineer", p, "research", admin, why)

        on(310, q4_hire)

        # HR ended mei's contract on day 322; IT deactivated her four days later (the SLA is 24 h).
        on(322, lambda e: e.terminate("user:mei"))

        def late_leaver(e: _Engine) -> None:
            ev = e.offboard("user:mei", admin, "HR-760 leaver: access removed")
            e.incident(
                "late-leaver",
                ev,
                "user:mei",
                None,
                f"HR ended her contract on {e.instant(322, 0)}; her account was deactivated four days later (SLA 24 h)",
            )

        on(326, late_leaver)

        def oncall(e: _Engine) -> None:
            e.assign("viewer", "user:chen", "production", admin, "INC-412 on-call shadowing", days=7)
            e.revoke_on_expiry(("viewer", "user:chen", "production", ""), "INC-412 on-call week ended")

        on(326, oncall)
        on(340, lambda e: e.assign("viewer", "team:product", "research", admin, "PM-30 product follows experiments"))

        def launch(e: _Engine) -> None:
            e.assign("ml_engineer", "user:farah", "research", admin, "MODEL-91 shadow deployment", days=14)
            e.revoke_on_expiry(("ml_engineer", "user:farah", "research", ""), "MODEL-91 shadow deployment done")

        on(346, launch)

    def reviews(self) -> None:
        """Two quarterly access reviews: Q3 of production, rubber-stamped by its reviewer; Q4 of every
        tenant, decided with care, whose revocations the platform carries out (all but a leaver's)."""
        admin, on = self.e.admin, self.e.on
        afternoon = 14 * 3600

        def q3_start(e: _Engine) -> None:
            e.review_start(
                "Q3-production",
                ["production"],
                "user:farah",
                admin,
                "SEC-400 quarterly access review of production",
                due_days=30,
                fallback="user:emeka",
            )

        on(200, q3_start)

        def q3_rubber_stamp(e: _Engine) -> None:
            mine = [(r["item"], "keep", "ok") for r in e.review_items("Q3-production", "user:farah")]
            decided = e.review_decide("Q3-production", "user:farah", mine, afternoon + 1717, gap=(1, 2))
            e.incident(
                "rubber-stamp-review",
                decided[0],
                "user:farah",
                "production",
                f"kept all {len(decided)} of her items of Q3-production within a minute, one or two seconds apart",
            )

        on(203, q3_rubber_stamp)

        def q3_fallback(e: _Engine) -> None:
            theirs = [
                (r["item"], "keep", f"{r['role']} deploys the production models")
                for r in e.review_items("Q3-production", "user:emeka")
            ]
            e.review_decide("Q3-production", "user:emeka", theirs, afternoon + 600, gap=(240, 600))

        on(204, q3_fallback)
        on(210, lambda e: e.review_close("Q3-production", admin, "SEC-400 review complete"))

        def q4_start(e: _Engine) -> None:
            e.review_start(
                "Q4-all-tenants",
                ["production", "research", "staging"],
                "user:emeka",
                admin,
                "SEC-450 quarterly access review of every tenant",
                due_days=21,
                reviewers=("team:research=user:amara", "team:data-eng=user:noor"),
                fallback="user:sven",
            )

        on(285, q4_start)
        revoke = {
            ("user:amara", "data_scientist", "staging"): "leads research now; staging runs go through the team",
            ("user:hana", "data_engineer", "research"): "works on the production pipelines only",
            ("user:sven", "mlops_platform_engineer", "research"): "research is supported through the "
            "platform team's viewer role",
        }

        def decide(r: dict[str, Any]) -> tuple[int, str, str]:
            if r["principal"] == "user:bjorn":
                return r["item"], "revoke", "left the company (HR-588)"
            why = revoke.get((r["principal"], r["role"], r["tenant"]))
            if why:
                return r["item"], "revoke", why
            return r["item"], "keep", f"{r['role']} in {r['tenant']} is needed for current work"

        for day, reviewer in ((287, "user:amara"), (288, "user:noor"), (290, "user:emeka"), (292, "user:sven")):

            def q4_decide(e: _Engine, reviewer: str = reviewer) -> None:
                decided = e.review_decide(
                    "Q4-all-tenants",
                    reviewer,
                    [decide(r) for r in e.review_items("Q4-all-tenants", reviewer)],
                    afternoon + _r(e.rng, 3600),
                    gap=(150, 900),
                )
                left = next(
                    (
                        ev
                        for ev in decided
                        if ev["decision"] == "revoke"
                        and e.reviews["Q4-all-tenants"][1][ev["item"] - 1]["principal"] == "user:bjorn"
                    ),
                    None,
                )
                if left is not None:
                    e.incident(
                        "revocation-not-carried-out",
                        left,
                        "user:bjorn",
                        "research",
                        "Q4-all-tenants revoked the leaver's access; the platform never removed it",
                    )

            on(day, q4_decide)

        # The platform applies the revocations itself (no auto-revoke) and the ledger records them, all
        # but the leaver's, still in force at the due date.
        on(
            297,
            lambda e: e.review_close(
                "Q4-all-tenants",
                admin,
                "SEC-450 review complete; the platform applies the revocations",
                auto_revoke=False,
            ),
        )
        on(300, lambda e: e.review_remove("Q4-all-tenants", admin, spare=frozenset({"user:bjorn"})))
