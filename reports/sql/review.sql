-- review: every user's and service account's effective permissions per tenant at $at, one row per path
-- (role, through which team, resource scope, which role in the chain grants it: a permission held two
-- ways is two rows, so revoking one leaves the other in sight) and when each was last used.
-- Parameters: $at (TIMESTAMP), $principal and $tenant (VARCHAR, NULL for all), $totals (BOOLEAN: $at
-- is at or after the newest event).
-- A use is an allowed access (resource access or connector-secret read) at or before $at that the
-- permission covers, by the same principal, in the same tenant (and on the same resource, for a
-- resource-scoped grant). The ledger's times never decrease along its positions, so the last use is
-- the use with the highest position (max(position) is much cheaper than arg_max(position, at)).
WITH paths AS (
    SELECT *
    FROM effective_at($at::TIMESTAMP)
    WHERE ($principal::VARCHAR IS NULL OR principal = $principal::VARCHAR)
      AND ($tenant::VARCHAR IS NULL OR tenant = $tenant::VARCHAR)
), uses AS MATERIALIZED (
    -- $totals: $at is at or after the newest event, so the totals kept by the sync are the answer;
    -- otherwise the uses up to $at are summed here.
    SELECT principal, tenant_key, resource_type, action, last_at AS last_used, last_position, uses
    FROM usage_totals
    WHERE $totals::BOOLEAN AND outcome = 'allowed'
      AND ($principal::VARCHAR IS NULL OR principal = $principal::VARCHAR)
      AND ($tenant::VARCHAR IS NULL OR tenant_key = $tenant::VARCHAR)
    UNION ALL
    SELECT principal, coalesce(tenant, '') AS tenant_key, resource_type, action,
           max("at") AS last_used, max(position) AS last_position, count(*) AS uses
    FROM usage
    WHERE NOT $totals::BOOLEAN AND outcome = 'allowed' AND "at" <= $at::TIMESTAMP
      AND ($principal::VARCHAR IS NULL OR principal = $principal::VARCHAR)
      AND ($tenant::VARCHAR IS NULL OR tenant = $tenant::VARCHAR)
    GROUP BY ALL
), uses_by_pattern AS (
    -- Each use under the four permission patterns that cover it, so paths match it by equality
    -- (`uses` has one row per TYPE:ACTION already: only the wildcard patterns need summing).
    SELECT principal, tenant_key, resource_type || ':' || action AS permission, last_used, last_position, uses
    FROM uses
    UNION ALL
    SELECT principal, tenant_key, pattern AS permission,
           max(last_used) AS last_used, max(last_position) AS last_position, sum(uses)::BIGINT AS uses
    FROM (
        SELECT *, unnest(['*:' || action, resource_type || ':*', '*:*']) AS pattern
        FROM uses
    )
    GROUP BY principal, tenant_key, pattern
), scoped AS MATERIALIZED (
    SELECT DISTINCT principal, resource_scope, connector_of(resource_scope) AS connector
    FROM paths WHERE resource_scope IS NOT NULL
), scoped_uses AS (
    SELECT e.principal, coalesce(e.tenant, '') AS tenant_key, e.resource, e.resource_type, e.action,
           max(e."at") AS last_used, max(e.position) AS last_position, count(*) AS uses
    FROM events e
    JOIN scoped s ON s.principal = e.principal AND s.resource_scope = e.resource
    WHERE e.type = 'ResourceAccessed' AND e.outcome = 'allowed' AND e."at" <= $at::TIMESTAMP
    GROUP BY ALL
    UNION ALL
    SELECT e.principal, coalesce(e.tenant, '') AS tenant_key, s.resource_scope, e.resource_type,
           'read_secret_value', max(e."at"), max(e.position), count(*)
    FROM events e
    JOIN scoped s ON s.principal = e.principal AND s.connector = e.connector
    WHERE e.type = 'ConnectorSecretAccessed' AND e.outcome = 'allowed' AND e."at" <= $at::TIMESTAMP
    GROUP BY ALL
), scoped_by_pattern AS (
    SELECT principal, tenant_key, resource, pattern AS permission,
           max(last_used) AS last_used, max(last_position) AS last_position, sum(uses)::BIGINT AS uses
    FROM (
        SELECT *, unnest([resource_type || ':' || action, '*:' || action, resource_type || ':*', '*:*']) AS pattern
        FROM scoped_uses
    )
    GROUP BY ALL
)
SELECT p.principal AS who,
       CASE WHEN p.tenant IS NULL THEN 'organization' ELSE 'tenant:' || p.tenant END AS "where",
       p.permission AS what,
       p.tenant,
       p.resource_scope,
       p.role,
       p.via_team,
       p.from_role,
       p.since,
       p.expires_at,
       p.granted_at,
       p.granted_by,
       p.grant_reason,
       u.last_used AS last_used,
       coalesce(u.uses, 0) AS uses,
       u.last_position AS last_used_position,
       p.positions
FROM paths p
LEFT JOIN (
    SELECT principal, tenant_key, '' AS resource_key, permission, last_used, last_position, uses
    FROM uses_by_pattern
    UNION ALL
    SELECT principal, tenant_key, resource, permission, last_used, last_position, uses
    FROM scoped_by_pattern
) u ON u.principal = p.principal AND u.tenant_key = coalesce(p.tenant, '')
    AND u.resource_key = coalesce(p.resource_scope, '') AND u.permission = p.permission
ORDER BY who, p.tenant NULLS FIRST, what, p.resource_scope NULLS FIRST, p.role, p.via_team NULLS FIRST, p.from_role
