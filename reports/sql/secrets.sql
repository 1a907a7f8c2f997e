-- secrets: every connector-secret access with $start <= at <= $end, and whether the principal was
-- authorised at that instant: active, the tenant live, and some assignment in force (held directly
-- or through a team the principal was in) of a role whose effective permissions then covered
-- service_connector:read_secret_value, unscoped or scoped to service_connector/NAME.
-- Parameters: $start, $end (TIMESTAMP).
WITH accesses AS (
    SELECT position, "at", actor, principal, tenant, connector, outcome, context
    FROM events
    WHERE type = 'ConnectorSecretAccessed' AND "at" >= $start::TIMESTAMP AND "at" <= $end::TIMESTAMP
), secret_grants AS (
    SELECT * FROM role_grants
    WHERE covers(permission_type, permission_action, 'service_connector', 'read_secret_value')
), holders AS (
    -- Who could hold an assignment for each access: the principal, and the teams it was in then.
    SELECT a.position, a.principal AS holder, NULL::VARCHAR AS via_team, NULL::BIGINT AS member_position
    FROM accesses a
    UNION ALL
    SELECT a.position, 'team:' || m.team, m.team, m.from_position
    FROM accesses a
    JOIN memberships m ON m.member = a.principal AND holds_at(m.valid_from, m.valid_to, a."at")
    JOIN teams tm ON tm.team = m.team AND holds_at(tm.valid_from, tm.valid_to, a."at")
), authorising AS (
    SELECT a.position, g.role, h.via_team, rg.permission, rg.from_role, g.resource AS resource_scope,
           g.from_position AS assignment_position, h.member_position, rg.permission_position
    FROM accesses a
    JOIN principal_status s ON s.principal = a.principal AND s.status = 'active'
        AND holds_at(s.valid_from, s.valid_to, a."at")
    JOIN tenants tn ON tn.tenant = a.tenant AND holds_at(tn.valid_from, tn.valid_to, a."at")
    JOIN holders h ON h.position = a.position
    JOIN assignments g ON g.principal = h.holder AND g.tenant = a.tenant
        AND holds_at(g.valid_from, g.valid_to, a."at") AND (g.expires_at IS NULL OR a."at" < g.expires_at)
        AND (g.resource IS NULL OR g.resource = 'service_connector/' || a.connector)
    JOIN secret_grants rg ON rg.role = g.role AND holds_at(rg.valid_from, rg.valid_to, a."at")
), by_access AS (
    SELECT position,
           list(DISTINCT role ORDER BY role) AS roles,
           list(DISTINCT via_team ORDER BY via_team) FILTER (WHERE via_team IS NOT NULL) AS via_teams,
           arg_min({'role': role, 'via_team': via_team, 'permission': permission, 'from_role': from_role,
                    'resource_scope': resource_scope},
                   [assignment_position, coalesce(member_position, 0), permission_position]) AS path,
           list(DISTINCT assignment_position) AS assignment_positions,
           list(DISTINCT member_position) FILTER (WHERE member_position IS NOT NULL) AS member_positions
    FROM authorising
    GROUP BY position
)
SELECT CASE
           WHEN a.outcome = 'allowed' AND b.position IS NULL THEN 'unauthorised-access'
           WHEN a.outcome = 'denied' AND b.position IS NULL THEN 'denied'
           WHEN a.outcome = 'denied' THEN 'denied-although-authorised'
           ELSE 'authorised'
       END AS finding,
       a.principal AS who,
       'tenant:' || a.tenant AS "where",
       'read_secret_value service_connector/' || a.connector AS what,
       a.tenant,
       a.connector,
       a."at" AS since,
       a.outcome,
       b.position IS NOT NULL AS authorised,
       b.path.role AS role,
       b.path.via_team AS via_team,
       b.path.from_role AS from_role,
       b.path.permission AS permission,
       coalesce(b.roles, []) AS authorising_roles,
       a.context,
       a.actor AS reported_by,
       list_concat([a.position], coalesce(b.assignment_positions, []), coalesce(b.member_positions, [])) AS positions
FROM accesses a
LEFT JOIN by_access b ON b.position = a.position
ORDER BY a.position
