"""A realistic year of an ML platform's access history, for the demo and for examples.

The organization of ZenML's access-management guide: research, staging and production
tenants; the seed scenario's roles built on the predefined ones; teams, CI service accounts,
cloud connectors; onboarding, role changes, leavers, time-bound grants, secret reads by
pipelines and people, resource usage; and a few incidents an auditor should find.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ledger.timeutil import format_instant

TENANTS = {"research": "Research", "staging": "Staging", "production": "Production"}
ROLES: list[tuple[str, str, list[str], str]] = [
    ("data_scientist", "editor", ["pipeline_run:delete", "run_template:create"], "Data Scientist"),
    ("data_science_lead", "data_scientist", ["model_version:promote", "pipeline:update", "pipeline:delete"],
     "Data Science Lead"),
    ("ml_engineer", "editor", ["pipeline_deployment:create", "model_version:promote", "stack:update",
                               "service:update"], "ML Engineer"),
    ("data_engineer", "viewer", ["artifact:create", "artifact_version:create", "pipeline:create"],
     "Data Engineer"),
    ("research_analyst", "viewer", ["run_metadata:create"], "Research Analyst"),
    ("product_manager", "viewer", ["model:share", "tag:create"], "Product Manager"),
    ("mlops_platform_engineer", "editor", ["service_connector:*", "stack:*", "stack_component:*", "flavor:*"],
     "MLOps Platform Engineer"),
    ("system_administrator", "admin", [], "System Administrator"),
]
PEOPLE: dict[str, tuple[str, list[tuple[str, str]]]] = {
    # name: (team, [(role, tenant), ...])
    "amara": ("research", [("data_science_lead", "research"), ("data_scientist", "staging")]),
    "bjorn": ("research", [("data_scientist", "research")]),
    "chen": ("research", [("data_scientist", "research")]),
    "dilnoza": ("research", [("research_analyst", "research")]),
    "emeka": ("platform", [("mlops_platform_engineer", "staging"), ("mlops_platform_engineer", "production")]),
    "farah": ("platform", [("ml_engineer", "staging"), ("ml_engineer", "production")]),
    "goran": ("platform", [("system_administrator", "production")]),
    "hana": ("data-eng", [("data_engineer", "research"), ("data_engineer", "production")]),
    "ivan": ("data-eng", [("data_engineer", "staging")]),
    "jun": ("product", [("product_manager", "production")]),
    "kofi": ("research", [("data_scientist", "research")]),
    "lucia": ("platform", [("ml_engineer", "production")]),
}


@dataclass
class Incident:
    """A planted finding: what it is, who, where, and the event id that makes it."""

    kind: str
    principal: str
    where: str
    event_id: str
    detail: str


@dataclass
class Sample:
    events: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    moments: dict[str, str] = field(default_factory=dict)  # names for instants the demo asks about


def year(end: datetime, seed: int = 2026) -> Sample:
    """Events of the year before `end`, in time order, as canonical dicts."""
    rng = random.Random(seed)
    out = Sample()
    start = (end - timedelta(days=365)).replace(hour=8, minute=0, second=0, microsecond=0)
    clock = [start]
    counter = [0]

    def at(days: float = 0.0) -> str:
        clock[0] = (clock[0] + timedelta(days=max(0.0, days))).replace(microsecond=0)
        return format_instant(clock[0])

    def ev(kind: str, actor: str, reason: str | None = "auto", **fields: Any) -> dict[str, Any]:
        counter[0] += 1
        event = {"type": kind, "at": format_instant(clock[0]), "actor": actor,
                 **{k: v for k, v in fields.items() if v is not None}}
        if reason == "auto":
            reason = f"ACCESS-{1000 + counter[0]}"
        if reason:
            event["reason"] = reason
        event["id"] = f"demo-{counter[0]}"
        out.events.append(event)
        return event

    admin = "user:goran"
    ev("OrganizationCreated", "system", None, name="acme-ml", preset="zenml-pro")
    ev("UserCreated", "system", "bootstrap administrator", user="goran", email="goran@acme.example")
    ev("RoleAssigned", "system", "bootstrap administrator", role="org_admin", principal=admin)
    for tenant, display in TENANTS.items():
        ev("TenantCreated", admin, tenant=tenant, display_name=display)
    for role, base, perms, description in ROLES:
        ev("RoleCreated", admin, role=role, scope="tenant", base=base, permissions=perms, description=description)
    dormant = ev("RoleAssigned", admin, "bootstrap administrator", role="system_administrator", principal=admin,
                 tenant="production")
    for team in ("research", "platform", "data-eng", "product"):
        ev("TeamCreated", admin, team=team)
    for sa in ("ci-deployer", "nightly-training"):
        ev("ServiceAccountCreated", admin, service_account=sa)
    for connector, tenant, kind in (("gcp-research", "research", "gcp"), ("aws-staging", "staging", "aws"),
                                    ("aws-prod", "production", "aws")):
        ev("ConnectorRegistered", "user:goran", connector=connector, tenant=tenant, connector_type=kind)
    ev("RoleAssigned", admin, role="ml_engineer", principal="service_account:ci-deployer", tenant="production")
    ev("RoleAssigned", admin, role="ml_engineer", principal="service_account:ci-deployer", tenant="staging")
    ev("RoleAssigned", admin, role="data_scientist", principal="service_account:nightly-training",
       tenant="research")
    ev("RoleAssigned", admin, role="viewer", principal="team:research", tenant="staging")

    # Onboarding over the first months.
    for name, (team, grants) in PEOPLE.items():
        if name == "goran":
            ev("TeamMemberAdded", admin, team=team, member=f"user:{name}")
            continue
        at(rng.uniform(2, 9))
        ev("UserCreated", admin, user=name, email=f"{name}@acme.example")
        ev("TeamMemberAdded", admin, team=team, member=f"user:{name}")
        for role, tenant in grants:
            ev("RoleAssigned", admin, role=role, principal=f"user:{name}", tenant=tenant)

    # Months of work: secret reads by pipelines and people, resource usage, some changes.
    def usage(days: int) -> None:
        for _ in range(days):
            at(1)
            for _ in range(rng.randint(2, 5)):
                ev("ConnectorSecretAccessed", "system", None, connector="aws-prod", tenant="production",
                   principal="service_account:ci-deployer", outcome="allowed",
                   context=f"deployment run {rng.randint(1000, 9999)}")
            ev("ConnectorSecretAccessed", "system", None, connector="gcp-research", tenant="research",
               principal="service_account:nightly-training", outcome="allowed", context="nightly training")
            for name in rng.sample(sorted(PEOPLE), 5):
                if name in gone or name == "goran":  # goran never uses his access: the dormant admin
                    continue
                _, grants = PEOPLE[name]
                role, tenant = grants[0]
                action, rtype = rng.choice([("read", "model"), ("read", "pipeline_run"), ("create", "pipeline_run"),
                                            ("read", "artifact_version")])
                ev("ResourceAccessed", "system", None, principal=f"user:{name}", tenant=tenant,
                   resource=f"{rtype}/{rng.choice(['fraud-detector', 'churn', 'recsys'])}", action=action,
                   outcome="allowed")
            if rng.random() < 0.3:
                ev("ConnectorSecretAccessed", "system", None, connector="aws-prod", tenant="production",
                   principal="user:emeka", outcome="allowed", context="rotating credentials")

    gone: set[str] = set()
    usage(60)
    out.moments["spring"] = format_instant(clock[0])
    # A time-bound grant for an incident review, revoked on time.
    ev("RoleAssigned", admin, "INC-204 incident review", role="viewer", principal="user:chen", tenant="production",
       expires_at=format_instant(clock[0] + timedelta(days=7)))
    usage(10)
    ev("RoleUnassigned", admin, "INC-204 closed", role="viewer", principal="user:chen", tenant="production")
    # A time-bound grant that expires and is never revoked (incident: expired grant never revoked).
    expiring = ev("RoleAssigned", admin, "QA-77 load test", role="ml_engineer", principal="user:kofi",
                  tenant="staging", expires_at=format_instant(clock[0] + timedelta(days=14)))
    out.incidents.append(Incident("expired-grant-not-revoked", "user:kofi", "staging", expiring["id"],
                                  "ml_engineer in staging expired and was never unassigned"))
    usage(30)
    # A separation-of-duties conflict: a data engineer given promotion rights (SoD: pipeline:create + promote).
    conflict = ev("RoleAssigned", admin, "DATA-310 release help", role="ml_engineer", principal="user:hana",
                  tenant="production")
    out.incidents.append(Incident("sod-conflict", "user:hana", "production", conflict["id"],
                                  "data engineer who can create pipelines and promote model versions"))
    usage(30)
    # A self-grant by the platform engineer (actor == principal).
    self_grant = ev("RoleAssigned", "user:emeka", "PLAT-88 hotfix", role="system_administrator",
                    principal="user:emeka", tenant="staging")
    out.incidents.append(Incident("self-grant", "user:emeka", "staging", self_grant["id"],
                                  "emeka granted himself system_administrator"))
    usage(20)
    # A change with no reason.
    no_reason = ev("RoleAssigned", admin, None, role="data_scientist", principal="user:dilnoza", tenant="staging")
    out.incidents.append(Incident("change-without-reason", "user:dilnoza", "staging", no_reason["id"],
                                  "assignment recorded without a reason"))
    usage(25)
    # A leaver deactivated, grants left behind.
    ev("UserDeactivated", admin, "HR-512 leaver", user="bjorn")
    gone.add("bjorn")
    usage(20)
    # A secret read by someone not authorised at that instant (the platform reported it as allowed).
    out.moments["breach"] = format_instant(clock[0])
    breach = ev("ConnectorSecretAccessed", "system", None, connector="aws-prod", tenant="production",
                principal="user:ivan", outcome="allowed", context="local notebook")
    out.incidents.append(Incident("unauthorised-secret-read", "user:ivan", "production", breach["id"],
                                  "read the aws-prod credentials without any role in production"))
    usage(40)
    # A dormant admin: goran holds system_administrator in production but is never seen using anything.
    out.incidents.append(Incident("dormant-admin", admin, "production", dormant["id"],
                                  "system_administrator in production, no recorded use"))
    # Lucia moves from ML engineering to the research team lead role.
    ev("RoleUnassigned", admin, "HR-540 role change", role="ml_engineer", principal="user:lucia", tenant="production")
    ev("RoleAssigned", admin, "HR-540 role change", role="data_science_lead", principal="user:lucia",
       tenant="research")
    usage(max(1, (end - clock[0]).days - 2))
    out.moments["end"] = format_instant(clock[0])
    return out
