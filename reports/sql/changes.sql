-- changes: permissions gained and lost between $start and $end, per principal, tenant, resource scope
-- and permission, with the events behind each change.
-- A gained permission is held at $end and not at $start: for each path holding it at $end, the cause
-- is the event that completed the path (the latest to open one of its parts: an assignment, a team
-- membership, a permission added to a role in the chain, a reactivation). A lost permission is held at
-- $start and not at $end: for each path that held it, the cause is the event that broke the path (the
-- first to close one of its parts: an unassignment, a removal from a team, a permission removed, a
-- deactivation, a deleted team, role or tenant) or the expiry of a time-bound assignment, which has no
-- event.
-- Parameters: $start, $end (TIMESTAMP).
WITH before AS (
    SELECT * FROM effective_at($start::TIMESTAMP)
), after AS (
    SELECT * FROM effective_at($end::TIMESTAMP)
), gained_keys AS (
    SELECT principal, tenant, resource_scope, permission FROM after
    EXCEPT
    SELECT principal, tenant, resource_scope, permission FROM before
), lost_keys AS (
    SELECT principal, tenant, resource_scope, permission FROM before
    EXCEPT
    SELECT principal, tenant, resource_scope, permission FROM after
), gained AS (
    SELECT 'gained' AS change, p.principal, p.tenant, p.resource_scope, p.permission, p.since AS changed_at,
           list_filter(p.starts, lambda s: s."at" = p.since) AS causes,
           p.role, p.via_team
    FROM after p
    SEMI JOIN gained_keys k ON k.principal = p.principal AND k.permission = p.permission
        AND coalesce(k.tenant, '') = coalesce(p.tenant, '') AND coalesce(k.resource_scope, '') = coalesce(p.resource_scope, '')
), lost AS (
    SELECT 'lost' AS change, p.principal, p.tenant, p.resource_scope, p.permission, p.until AS changed_at,
           list_filter(p.ends, lambda e: e."at" = p.until) AS causes,
           p.role, p.via_team
    FROM before p
    SEMI JOIN lost_keys k ON k.principal = p.principal AND k.permission = p.permission
        AND coalesce(k.tenant, '') = coalesce(p.tenant, '') AND coalesce(k.resource_scope, '') = coalesce(p.resource_scope, '')
), paths AS (
    SELECT * FROM gained UNION ALL SELECT * FROM lost
), cause_rows AS (
    SELECT change, principal, tenant, resource_scope, permission, unnest(causes) AS cause
    FROM paths
), cause_events AS (
    SELECT c.change, c.principal, c.tenant, c.resource_scope, c.permission,
           c.cause.position AS position,
           coalesce(e.type, 'AssignmentExpired') AS event,
           coalesce(e.actor, 'system') AS actor,
           e.reason,
           c.cause."at" AS "at"
    FROM cause_rows c
    LEFT JOIN events e ON e.position = c.cause.position
), causes_by_key AS (
    SELECT change, principal, tenant, resource_scope, permission,
           list(DISTINCT position ORDER BY position) FILTER (WHERE position IS NOT NULL) AS positions,
           list(DISTINCT event ORDER BY event) AS events,
           list(DISTINCT actor ORDER BY actor) AS actors,
           list(DISTINCT reason ORDER BY reason) FILTER (WHERE reason IS NOT NULL) AS reasons
    FROM cause_events
    GROUP BY ALL
), by_key AS (
    SELECT change, principal, tenant, resource_scope, permission,
           CASE WHEN change = 'gained' THEN min(changed_at) ELSE max(changed_at) END AS changed_at,
           list(DISTINCT path ORDER BY path) AS paths
    FROM (SELECT *, 'role ' || role || coalesce(' via team:' || via_team, '') AS path FROM paths)
    GROUP BY change, principal, tenant, resource_scope, permission
)
SELECT k.change AS finding,
       k.principal AS who,
       CASE WHEN k.tenant IS NULL THEN 'organization' ELSE 'tenant:' || k.tenant END AS "where",
       k.permission AS what,
       k.tenant,
       k.resource_scope,
       k.changed_at AS since,
       k.paths,
       coalesce(c.events, []) AS events,
       coalesce(c.actors, []) AS actors,
       coalesce(c.reasons, []) AS reasons,
       coalesce(c.positions, []) AS positions
FROM by_key k
LEFT JOIN causes_by_key c ON c.change = k.change AND c.principal = k.principal AND c.permission = k.permission
    AND coalesce(c.tenant, '') = coalesce(k.tenant, '') AND coalesce(c.resource_scope, '') = coalesce(k.resource_scope, '')
ORDER BY who, k.tenant NULLS FIRST, what, k.resource_scope NULLS FIRST, finding
