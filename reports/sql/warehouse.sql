-- The warehouse's tables. Every table below `events` is derived from it (see intervals.sql) and is
-- rebuilt, key by key, from the events alone; intervals are [valid_from, valid_to): a fact holds at t
-- when valid_from <= t AND (valid_to IS NULL OR t < valid_to), with each bound's event position beside it.

CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row. `position`: events synced (committed with them); `chain_link`: the ledger's hash-chain link
-- at that position, which commits to every event up to it, to recognise the ledger next time; `intervals_position`: how far the interval tables
-- have been brought (committed with them).
CREATE TABLE IF NOT EXISTS sync_state (
    id INTEGER PRIMARY KEY,
    position BIGINT NOT NULL,
    chain_link VARCHAR,
    intervals_position BIGINT NOT NULL,
    synced_at TIMESTAMP
);

-- The flat event table: one row per event, one column per field of DESIGN section 4, plus two derived
-- columns: `subject` (the principal, team member or team a change event is about) and `resource_type`
-- (of a usage event; service_connector for a connector-secret access).
CREATE TABLE IF NOT EXISTS events (
    position BIGINT NOT NULL,
    type VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    reason VARCHAR,
    id VARCHAR,
    name VARCHAR,
    preset VARCHAR,
    tenant VARCHAR,
    display_name VARCHAR,
    "user" VARCHAR,
    email VARCHAR,
    service_account VARCHAR,
    team VARCHAR,
    member VARCHAR,
    role VARCHAR,
    scope VARCHAR,
    base VARCHAR,
    permissions VARCHAR[],
    description VARCHAR,
    "add" VARCHAR[],
    "remove" VARCHAR[],
    principal VARCHAR,
    resource VARCHAR,
    expires_at TIMESTAMP,
    connector VARCHAR,
    connector_type VARCHAR,
    outcome VARCHAR,
    context VARCHAR,
    action VARCHAR,
    token_id VARCHAR,
    scopes VARCHAR[],
    api_key VARCHAR,
    rotated_at TIMESTAMP,
    last_login TIMESTAMP,
    owner VARCHAR,
    auth_method VARCHAR,
    resource_types VARCHAR[],
    labels VARCHAR[],
    project VARCHAR,
    finding VARCHAR,
    audit VARCHAR,
    kind VARCHAR,
    cause VARCHAR,
    "until" TIMESTAMP,
    rule VARCHAR,
    subject VARCHAR,
    resource_type VARCHAR
);

-- What the presets define (filled from ledger.vocabulary when the warehouse is created).
CREATE TABLE IF NOT EXISTS predefined_roles (
    preset VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    description VARCHAR,
    permission VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS vocabulary (
    preset VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    action VARCHAR NOT NULL
);

-- Users and service accounts: one row per stretch of one status (active | deactivated).
CREATE TABLE IF NOT EXISTS principal_status (
    principal VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    event VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    reason VARCHAR
);

-- Tenants and teams: from creation to deletion (names are never reused).
CREATE TABLE IF NOT EXISTS tenants (
    tenant VARCHAR NOT NULL,
    display_name VARCHAR,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    created_by VARCHAR,
    deleted_by VARCHAR
);

CREATE TABLE IF NOT EXISTS teams (
    team VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    created_by VARCHAR,
    deleted_by VARCHAR
);

-- Team memberships, from TeamMemberAdded to TeamMemberRemoved (a deleted team's memberships stay
-- here; queries end their effect at the team's valid_to).
CREATE TABLE IF NOT EXISTS memberships (
    team VARCHAR NOT NULL,
    member VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    actor VARCHAR NOT NULL,
    reason VARCHAR
);

-- Role incarnations (a deleted role's name may be used again): predefined roles from the
-- OrganizationCreated event, custom roles from RoleCreated to RoleDeleted.
CREATE TABLE IF NOT EXISTS roles (
    role VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    base VARCHAR,
    predefined BOOLEAN NOT NULL,
    description VARCHAR,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    actor VARCHAR NOT NULL,
    reason VARCHAR
);

-- A role's own permissions over time.
CREATE TABLE IF NOT EXISTS role_permissions (
    role VARCHAR NOT NULL,
    permission VARCHAR NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT
);

-- Each role incarnation with itself (depth 0) and its base roles (depth 1, 2, ...).
CREATE TABLE IF NOT EXISTS role_chain (
    role VARCHAR NOT NULL,
    ancestor VARCHAR NOT NULL,
    depth INTEGER NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    ancestor_position BIGINT NOT NULL
);

-- Effective permissions of each role with inheritance: own plus every base's, live. `from_role` is the
-- role in the chain that owns the permission; `permission_position` the event that gave it to that role.
CREATE TABLE IF NOT EXISTS role_grants (
    role VARCHAR NOT NULL,
    permission VARCHAR NOT NULL,
    permission_type VARCHAR NOT NULL,
    permission_action VARCHAR NOT NULL,
    from_role VARCHAR NOT NULL,
    depth INTEGER NOT NULL,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    permission_position BIGINT NOT NULL
);

-- Role assignments, from RoleAssigned to RoleUnassigned; expires_at ends their effect without an event.
CREATE TABLE IF NOT EXISTS assignments (
    role VARCHAR NOT NULL,
    principal VARCHAR NOT NULL,
    tenant VARCHAR,
    resource VARCHAR,
    expires_at TIMESTAMP,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT,
    actor VARCHAR NOT NULL,
    reason VARCHAR
);

CREATE TABLE IF NOT EXISTS connectors (
    connector VARCHAR NOT NULL,
    tenant VARCHAR NOT NULL,
    connector_type VARCHAR,
    valid_from TIMESTAMP NOT NULL,
    valid_to TIMESTAMP,
    from_position BIGINT NOT NULL,
    to_position BIGINT
);

-- Uses (resource accesses and connector-secret reads) summed per principal, tenant ('' for the
-- organization), resource type, action and outcome over every event up to intervals_position; brought
-- up to date in the same transaction as the interval tables (intervals.sql). An audit at or after the
-- newest event reads these few hundred thousand rows instead of the year's millions of uses.
CREATE TABLE IF NOT EXISTS usage_totals (
    principal VARCHAR NOT NULL,
    tenant_key VARCHAR NOT NULL,
    resource_type VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    first_at TIMESTAMP NOT NULL,
    last_at TIMESTAMP NOT NULL,
    last_position BIGINT NOT NULL,
    uses BIGINT NOT NULL
);
