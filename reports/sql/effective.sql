-- Shared by the audits (created on every connection, so the warehouse file stays plain tables).
-- DESIGN section 3 as range predicates over the interval tables.

-- An instant as the ledger writes it: UTC, `Z`, microseconds only when there are some.
CREATE OR REPLACE TEMP MACRO iso(ts) AS
    CASE WHEN ts IS NULL THEN NULL
         WHEN microsecond(ts) % 1000000 = 0 THEN strftime(ts, '%Y-%m-%dT%H:%M:%SZ')
         ELSE strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') END;

-- The connector a grant scoped to `service_connector/NAME` is scoped to (NULL for other resources): a
-- connector-secret read is a use of read_secret_value on that resource.
CREATE OR REPLACE TEMP MACRO connector_of(resource) AS
    CASE WHEN resource LIKE 'service_connector/%' THEN substr(resource, length('service_connector/') + 1) END;

-- Word w (0-7) of a 512-bit set holding bit `bit`: the bit's place in that word, or 0 (also for NULL).
CREATE OR REPLACE TEMP MACRO pair_word(bit, w) AS
    CASE WHEN bit // 64 = w THEN (1::UBIGINT << (bit % 64)) ELSE 0::UBIGINT END;

-- Does the interval [vf, vt) contain t?
CREATE OR REPLACE TEMP MACRO holds_at(vf, vt, t) AS vf <= t AND (vt IS NULL OR t < vt);

-- Does a granted permission TYPE:ACTION (either part may be *) cover resource type rt and action ac?
CREATE OR REPLACE TEMP MACRO covers(ptype, paction, rt, ac) AS (ptype = '*' OR ptype = rt) AND (paction = '*' OR paction = ac);

-- Every path by which a user or service account holds a permission at instant t: one row per
-- (principal, tenant, permission, resource scope, assignment, team it comes through, role in the chain
-- that owns the permission). tenant NULL = the organization. Each component of the path comes with the
-- interval it holds in and the events that opened (and, if any, will close) it.
CREATE OR REPLACE TEMP MACRO effective_at(t) AS TABLE
WITH active AS (
    SELECT principal, valid_from, valid_to, from_position, to_position
    FROM principal_status
    WHERE status = 'active' AND holds_at(valid_from, valid_to, t)
), holders AS (
    SELECT a.principal, a.principal AS holder, NULL::VARCHAR AS via_team,
           a.valid_from AS status_from, a.valid_to AS status_to, a.from_position AS status_position,
           a.to_position AS status_end_position,
           NULL::TIMESTAMP AS member_from, NULL::TIMESTAMP AS member_to,
           NULL::BIGINT AS member_position, NULL::BIGINT AS member_end_position,
           NULL::TIMESTAMP AS team_to, NULL::BIGINT AS team_end_position
    FROM active a
    UNION ALL
    SELECT a.principal, 'team:' || m.team, m.team,
           a.valid_from, a.valid_to, a.from_position, a.to_position,
           greatest(m.valid_from, tm.valid_from), m.valid_to, m.from_position, m.to_position,
           tm.valid_to, tm.to_position
    FROM active a
    JOIN memberships m ON m.member = a.principal AND holds_at(m.valid_from, m.valid_to, t)
    JOIN teams tm ON tm.team = m.team AND holds_at(tm.valid_from, tm.valid_to, t)
), held AS (
    SELECT g.*, tn.valid_from AS tenant_from, tn.valid_to AS tenant_to, tn.from_position AS tenant_position,
           tn.to_position AS tenant_end_position
    FROM assignments g
    LEFT JOIN tenants tn ON tn.tenant = g.tenant
    WHERE holds_at(g.valid_from, g.valid_to, t)
      AND (g.expires_at IS NULL OR t < g.expires_at)
      AND (g.tenant IS NULL OR holds_at(tn.valid_from, tn.valid_to, t))
)
SELECT h.principal,
       g.tenant,
       rg.permission,
       rg.permission_type,
       rg.permission_action,
       g.resource AS resource_scope,
       g.role,
       h.via_team,
       rg.from_role,
       rg.depth,
       g.expires_at,
       g.valid_from AS granted_at,
       g.actor AS granted_by,
       g.reason AS grant_reason,
       g.from_position AS assignment_position,
       h.member_position,
       rg.permission_position,
       -- Since when this path has held without a break, and the positions of the events behind it.
       greatest(h.status_from, h.member_from, g.valid_from, g.tenant_from, rg.valid_from) AS since,
       least(h.status_to, h.member_to, h.team_to, g.valid_to, g.expires_at, g.tenant_to, rg.valid_to) AS until,
       list_filter([g.from_position, h.member_position, rg.permission_position], lambda x: x IS NOT NULL) AS positions,
       -- For `changes`: what opened each component (and what will close it).
       [{'at': h.status_from, 'position': h.status_position},
        {'at': h.member_from, 'position': h.member_position},
        {'at': g.valid_from, 'position': g.from_position},
        {'at': g.tenant_from, 'position': g.tenant_position},
        {'at': rg.valid_from, 'position': rg.from_position}] AS starts,
       [{'at': h.status_to, 'position': h.status_end_position},
        {'at': h.member_to, 'position': h.member_end_position},
        {'at': h.team_to, 'position': h.team_end_position},
        {'at': g.valid_to, 'position': g.to_position},
        {'at': g.expires_at, 'position': NULL::BIGINT},
        {'at': g.tenant_to, 'position': g.tenant_end_position},
        {'at': rg.valid_to, 'position': rg.to_position}] AS ends
FROM holders h
JOIN held g ON g.principal = h.holder
JOIN role_grants rg ON rg.role = g.role AND holds_at(rg.valid_from, rg.valid_to, t)
WHERE g.resource IS NULL OR rg.permission_type IN ('*', split_part(g.resource, '/', 1));

-- Usage: resource accesses and connector-secret reads as (principal, tenant, resource type, resource,
-- action, outcome); a secret read is read_secret_value on service_connector/NAME.
CREATE OR REPLACE TEMP VIEW usage AS
SELECT position, "at", type, principal, tenant, resource_type,
       CASE WHEN type = 'ConnectorSecretAccessed' THEN 'service_connector/' || connector ELSE resource END AS resource,
       CASE WHEN type = 'ConnectorSecretAccessed' THEN 'read_secret_value' ELSE action END AS action,
       outcome
FROM events
WHERE type IN ('ResourceAccessed', 'ConnectorSecretAccessed');
