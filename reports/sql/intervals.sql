-- Bring the interval tables up to date with the events at positions ($lo, $hi]: for every key those
-- events touch (a principal, a team member, an assignment, ...), the key's rows are deleted and
-- rebuilt from all of its events. Role tables are small and rebuilt whole when any role event came in.
-- Runs in the same transaction that records intervals_position = $hi.

CREATE OR REPLACE TEMP TABLE batch AS
SELECT * FROM events
WHERE position > $lo AND position <= $hi
  AND type NOT IN ('ResourceAccessed', 'ConnectorSecretAccessed');

-- principal_status ---------------------------------------------------------------------------------
DELETE FROM principal_status
WHERE principal IN (SELECT subject FROM batch WHERE type IN (
    'UserCreated', 'UserDeactivated', 'UserReactivated',
    'ServiceAccountCreated', 'ServiceAccountDeactivated', 'ServiceAccountReactivated'));

INSERT INTO principal_status
SELECT subject, split_part(subject, ':', 1),
       CASE WHEN type IN ('UserDeactivated', 'ServiceAccountDeactivated') THEN 'deactivated' ELSE 'active' END,
       "at", lead("at") OVER w, position, lead(position) OVER w, type, actor, reason
FROM events
WHERE type IN ('UserCreated', 'UserDeactivated', 'UserReactivated',
               'ServiceAccountCreated', 'ServiceAccountDeactivated', 'ServiceAccountReactivated')
  AND subject IN (SELECT subject FROM batch WHERE type IN (
      'UserCreated', 'UserDeactivated', 'UserReactivated',
      'ServiceAccountCreated', 'ServiceAccountDeactivated', 'ServiceAccountReactivated'))
WINDOW w AS (PARTITION BY subject ORDER BY position);

-- tenants ------------------------------------------------------------------------------------------
DELETE FROM tenants
WHERE tenant IN (SELECT tenant FROM batch WHERE type IN ('TenantCreated', 'TenantRenamed', 'TenantDeleted'));

INSERT INTO tenants
SELECT tenant,
       arg_max(display_name, position) FILTER (WHERE display_name IS NOT NULL),
       min("at") FILTER (WHERE type = 'TenantCreated'),
       max("at") FILTER (WHERE type = 'TenantDeleted'),
       min(position) FILTER (WHERE type = 'TenantCreated'),
       max(position) FILTER (WHERE type = 'TenantDeleted'),
       arg_min(actor, position) FILTER (WHERE type = 'TenantCreated'),
       arg_max(actor, position) FILTER (WHERE type = 'TenantDeleted')
FROM events
WHERE type IN ('TenantCreated', 'TenantRenamed', 'TenantDeleted')
  AND tenant IN (SELECT tenant FROM batch WHERE type IN ('TenantCreated', 'TenantRenamed', 'TenantDeleted'))
GROUP BY tenant;

-- teams --------------------------------------------------------------------------------------------
DELETE FROM teams WHERE team IN (SELECT team FROM batch WHERE type IN ('TeamCreated', 'TeamDeleted'));

INSERT INTO teams
SELECT team,
       min("at") FILTER (WHERE type = 'TeamCreated'),
       max("at") FILTER (WHERE type = 'TeamDeleted'),
       min(position) FILTER (WHERE type = 'TeamCreated'),
       max(position) FILTER (WHERE type = 'TeamDeleted'),
       arg_min(actor, position) FILTER (WHERE type = 'TeamCreated'),
       arg_max(actor, position) FILTER (WHERE type = 'TeamDeleted')
FROM events
WHERE type IN ('TeamCreated', 'TeamDeleted')
  AND team IN (SELECT team FROM batch WHERE type IN ('TeamCreated', 'TeamDeleted'))
GROUP BY team;

-- memberships --------------------------------------------------------------------------------------
DELETE FROM memberships m
WHERE EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('TeamMemberAdded', 'TeamMemberRemoved')
              AND b.team = m.team AND b.member = m.member);

INSERT INTO memberships
SELECT team, member, "at", next_at, position, next_position, actor, reason
FROM (
    SELECT e.*, lead("at") OVER w AS next_at, lead(position) OVER w AS next_position
    FROM events e
    WHERE type IN ('TeamMemberAdded', 'TeamMemberRemoved')
      AND EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('TeamMemberAdded', 'TeamMemberRemoved')
                  AND b.team = e.team AND b.member = e.member)
    WINDOW w AS (PARTITION BY team, member ORDER BY position)
)
WHERE type = 'TeamMemberAdded';

-- assignments --------------------------------------------------------------------------------------
DELETE FROM assignments a
WHERE EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('RoleAssigned', 'RoleUnassigned')
              AND b.role = a.role AND b.principal = a.principal
              AND b.tenant IS NOT DISTINCT FROM a.tenant AND b.resource IS NOT DISTINCT FROM a.resource);

INSERT INTO assignments
SELECT role, principal, tenant, resource, expires_at, "at", next_at, position, next_position, actor, reason
FROM (
    SELECT e.*, lead("at") OVER w AS next_at, lead(position) OVER w AS next_position
    FROM events e
    WHERE type IN ('RoleAssigned', 'RoleUnassigned')
      AND EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('RoleAssigned', 'RoleUnassigned')
                  AND b.role = e.role AND b.principal = e.principal
                  AND b.tenant IS NOT DISTINCT FROM e.tenant AND b.resource IS NOT DISTINCT FROM e.resource)
    WINDOW w AS (PARTITION BY role, principal, tenant, resource ORDER BY position)
)
WHERE type = 'RoleAssigned';

-- connectors ---------------------------------------------------------------------------------------
DELETE FROM connectors c
WHERE EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('ConnectorRegistered', 'ConnectorDeleted')
              AND b.tenant = c.tenant AND b.connector = c.connector);

INSERT INTO connectors
SELECT connector, tenant, connector_type, "at", next_at, position, next_position
FROM (
    SELECT e.*, lead("at") OVER w AS next_at, lead(position) OVER w AS next_position
    FROM events e
    WHERE type IN ('ConnectorRegistered', 'ConnectorDeleted')
      AND EXISTS (SELECT 1 FROM batch b WHERE b.type IN ('ConnectorRegistered', 'ConnectorDeleted')
                  AND b.tenant = e.tenant AND b.connector = e.connector)
    WINDOW w AS (PARTITION BY tenant, connector ORDER BY position)
)
WHERE type = 'ConnectorRegistered';

-- roles: rebuilt whole when any role event (or the organization, which brings the predefined roles)
-- is in the batch ------------------------------------------------------------------------------------
CREATE OR REPLACE TEMP TABLE roles_touched AS
SELECT count(*) > 0 AS touched FROM batch
WHERE type IN ('OrganizationCreated', 'RoleCreated', 'RolePermissionsChanged', 'RoleDeleted');

DELETE FROM roles WHERE (SELECT touched FROM roles_touched);

INSERT INTO roles
SELECT role, scope, base, false, description, "at", next_at, position, next_position, actor, reason
FROM (
    SELECT e.*, lead("at") OVER w AS next_at, lead(position) OVER w AS next_position
    FROM events e
    WHERE type IN ('RoleCreated', 'RoleDeleted')
    WINDOW w AS (PARTITION BY role ORDER BY position)
)
WHERE type = 'RoleCreated' AND (SELECT touched FROM roles_touched)
UNION ALL
SELECT DISTINCT p.role, p.scope, NULL, true, p.description, e."at", NULL::TIMESTAMP, e.position, NULL::BIGINT,
       e.actor, 'predefined role of the ' || e.preset || ' preset'
FROM events e JOIN predefined_roles p ON p.preset = e.preset
WHERE e.type = 'OrganizationCreated' AND (SELECT touched FROM roles_touched);

DELETE FROM role_permissions WHERE (SELECT touched FROM roles_touched);

INSERT INTO role_permissions
WITH ops AS (
    SELECT role, unnest(permissions) AS permission, 1 AS ord, position, "at" FROM events WHERE type = 'RoleCreated'
    UNION ALL
    SELECT role, unnest("remove"), 0, position, "at" FROM events WHERE type = 'RolePermissionsChanged'
    UNION ALL
    SELECT role, unnest("add"), 1, position, "at" FROM events WHERE type = 'RolePermissionsChanged'
), seq AS (
    -- Within one change, removals come before additions (as the ledger applies them).
    SELECT *, lead("at") OVER w AS next_at, lead(position) OVER w AS next_position
    FROM ops
    WINDOW w AS (PARTITION BY role, permission ORDER BY position, ord)
)
SELECT s.role, s.permission, s."at",
       CASE WHEN r.to_position IS NOT NULL AND (s.next_position IS NULL OR r.to_position < s.next_position)
            THEN r.valid_to ELSE s.next_at END,
       s.position,
       CASE WHEN r.to_position IS NOT NULL AND (s.next_position IS NULL OR r.to_position < s.next_position)
            THEN r.to_position ELSE s.next_position END
FROM seq s
JOIN roles r ON r.role = s.role AND NOT r.predefined
    AND r.from_position <= s.position AND (r.to_position IS NULL OR s.position < r.to_position)
WHERE s.ord = 1 AND (SELECT touched FROM roles_touched)
UNION ALL
SELECT p.role, p.permission, r.valid_from, NULL, r.from_position, NULL
FROM roles r
JOIN events e ON e.position = r.from_position AND e.type = 'OrganizationCreated'
JOIN predefined_roles p ON p.preset = e.preset AND p.role = r.role
WHERE r.predefined AND (SELECT touched FROM roles_touched);

DELETE FROM role_chain WHERE (SELECT touched FROM roles_touched);

INSERT INTO role_chain
WITH RECURSIVE chain(role, ancestor, depth, valid_from, valid_to, from_position, to_position,
                     ancestor_position, seen) AS (
    SELECT role, role, 0, valid_from, valid_to, from_position, to_position, from_position, [role]
    FROM roles
    WHERE (SELECT touched FROM roles_touched)
    UNION ALL
    -- The base is the incarnation live when the role was created: it cannot be deleted while the
    -- role lives, so it covers the role's whole life.
    SELECT c.role, b.role, c.depth + 1, c.valid_from, c.valid_to, c.from_position, c.to_position,
           b.from_position, list_append(c.seen, b.role)
    FROM chain c
    JOIN roles a ON a.role = c.ancestor AND a.from_position = c.ancestor_position
    JOIN roles b ON b.role = a.base AND b.from_position < a.from_position
        AND (b.to_position IS NULL OR a.from_position < b.to_position)
    WHERE NOT list_contains(c.seen, b.role) AND c.depth < 1000
)
SELECT role, ancestor, depth, valid_from, valid_to, from_position, to_position, ancestor_position FROM chain;

DELETE FROM role_grants WHERE (SELECT touched FROM roles_touched);

INSERT INTO role_grants
SELECT c.role, p.permission, split_part(p.permission, ':', 1), split_part(p.permission, ':', 2),
       c.ancestor, c.depth,
       greatest(c.valid_from, p.valid_from),
       CASE WHEN c.to_position IS NULL THEN p.valid_to
            WHEN p.to_position IS NULL THEN c.valid_to
            ELSE least(c.valid_to, p.valid_to) END,
       greatest(c.from_position, p.from_position),
       CASE WHEN c.to_position IS NULL THEN p.to_position
            WHEN p.to_position IS NULL THEN c.to_position
            ELSE least(c.to_position, p.to_position) END,
       p.from_position
FROM role_chain c
JOIN role_permissions p ON p.role = c.ancestor
    AND (c.to_position IS NULL OR p.from_position < c.to_position)
    AND (p.to_position IS NULL OR c.from_position < p.to_position)
WHERE (SELECT touched FROM roles_touched);

DROP TABLE batch;
DROP TABLE roles_touched;

-- usage_totals --------------------------------------------------------------------------------------
-- The new uses summed per key, then merged with the totals of the principals they are about.
CREATE OR REPLACE TEMP TABLE new_usage AS
SELECT principal, coalesce(tenant, '') AS tenant_key, resource_type,
       CASE WHEN type = 'ConnectorSecretAccessed' THEN 'read_secret_value' ELSE action END AS action, outcome,
       min("at") AS first_at, max("at") AS last_at, max(position) AS last_position, count(*) AS uses
FROM events
WHERE position > $lo AND position <= $hi AND type IN ('ResourceAccessed', 'ConnectorSecretAccessed')
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE merged_usage AS
SELECT principal, tenant_key, resource_type, action, outcome, min(first_at) AS first_at, max(last_at) AS last_at,
       max(last_position) AS last_position, sum(uses)::BIGINT AS uses
FROM (SELECT * FROM usage_totals WHERE principal IN (SELECT principal FROM new_usage)
      UNION ALL
      SELECT * FROM new_usage)
GROUP BY ALL;

DELETE FROM usage_totals WHERE principal IN (SELECT principal FROM new_usage);
INSERT INTO usage_totals SELECT * FROM merged_usage;
DROP TABLE new_usage;
DROP TABLE merged_usage;
