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
), team_memberships AS MATERIALIZED (
    -- Memberships while their team existed (joined before the accesses: both tables are small).
    SELECT m.member, m.team, m.from_position,
           greatest(m.valid_from, tm.valid_from) AS valid_from,
           CASE WHEN m.valid_to IS NULL THEN tm.valid_to
                WHEN tm.valid_to IS NULL THEN m.valid_to
                ELSE least(m.valid_to, tm.valid_to) END AS valid_to
    FROM memberships m
    JOIN teams tm ON tm.team = m.team
    WHERE (tm.valid_to IS NULL OR m.valid_from < tm.valid_to) AND (m.valid_to IS NULL OR tm.valid_from < m.valid_to)
), live AS MATERIALIZED (
    -- Accesses by an active principal in a live tenant: only these can have been authorised.
    SELECT a.position, a."at", a.principal, a.tenant, a.connector
    FROM accesses a
    JOIN principal_status s ON s.principal = a.principal AND s.status = 'active'
        AND holds_at(s.valid_from, s.valid_to, a."at")
    JOIN tenants tn ON tn.tenant = a.tenant AND holds_at(tn.valid_from, tn.valid_to, a."at")
), holders AS MATERIALIZED (
    -- Who could hold an assignment for each access: the principal, and the teams it was in then.
    SELECT l.position, l."at", l.tenant, l.connector, l.principal AS holder, NULL::VARCHAR AS via_team,
           NULL::BIGINT AS member_position
    FROM live l
    UNION ALL
    SELECT l.position, l."at", l.tenant, l.connector, 'team:' || m.team, m.team, m.from_position
    FROM live l
    JOIN team_memberships m ON m.member = l.principal AND holds_at(m.valid_from, m.valid_to, l."at")
), authorising AS (
    -- Joined on (holder, tenant) together: an access meets only its holders' assignments there.
    SELECT h.position, g.role, h.via_team, rg.permission, rg.from_role, g.resource AS resource_scope,
           g.from_position AS assignment_position, h.member_position, rg.permission_position
    FROM holders h
    JOIN assignments g ON g.principal = h.holder AND g.tenant = h.tenant
        AND holds_at(g.valid_from, g.valid_to, h."at") AND (g.expires_at IS NULL OR h."at" < g.expires_at)
        AND (g.resource IS NULL OR g.resource = 'service_connector/' || h.connector)
    JOIN secret_grants rg ON rg.role = g.role AND holds_at(rg.valid_from, rg.valid_to, h."at")
), counted AS (
    -- One row per access: how many paths authorised it, and (exact when there is one) a path.
    SELECT position, count(*) AS n,
           any_value(assignment_position) AS assignment_position, any_value(member_position) AS member_position,
           any_value(permission_position) AS permission_position, any_value(role) AS role,
           any_value(via_team) AS via_team, any_value(permission) AS permission,
           any_value(from_role) AS from_role, any_value(resource_scope) AS resource_scope
    FROM authorising
    GROUP BY position
), several AS (
    -- The few accesses with more than one path: the first by its events' positions, every role and event.
    SELECT position,
           min({'assignment_position': assignment_position, 'member_position': coalesce(member_position, 0),
                'permission_position': permission_position, 'role': role, 'via_team': via_team,
                'permission': permission, 'from_role': from_role, 'resource_scope': resource_scope}) AS path,
           list_sort(list(DISTINCT role)) AS roles,
           list_sort(list(DISTINCT assignment_position)) AS assignment_positions,
           list_sort(list(DISTINCT member_position) FILTER (WHERE member_position IS NOT NULL)) AS member_positions
    FROM authorising
    WHERE position IN (SELECT position FROM counted WHERE n > 1)
    GROUP BY position
), by_access AS (
    SELECT c.position,
           CASE WHEN c.n = 1 THEN {'role': c.role, 'via_team': c.via_team, 'permission': c.permission,
                                    'from_role': c.from_role}
                ELSE {'role': s.path.role, 'via_team': s.path.via_team, 'permission': s.path.permission,
                      'from_role': s.path.from_role} END AS path,
           coalesce(s.roles, [c.role]) AS roles,
           coalesce(s.assignment_positions, [c.assignment_position]) AS assignment_positions,
           coalesce(s.member_positions, CASE WHEN c.member_position IS NULL THEN [] ELSE [c.member_position] END)
               AS member_positions
    FROM counted c
    LEFT JOIN several s ON s.position = c.position
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
