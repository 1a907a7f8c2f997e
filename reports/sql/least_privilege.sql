-- least-privilege: where access is wider than use, over the window ($window_start, $at].
--   unused-permissions  per assignment path held at $at (principal, tenant, role, team, resource scope):
--                       the role's effective permissions with no allowed use in the window
--   dormant-principal   an active user or service account with no activity in the window: no access
--                       (allowed or denied) and no event recorded with it as the actor (a change, a
--                       review decision)
--   smallest-role       per principal and tenant (or the organization) with authorised uses in the window
--                       (allowed, by a principal active then, through a path that allowed it then): the
--                       existing role with the fewest concrete permissions (TYPE:ACTION of the preset's
--                       vocabulary) that covers every TYPE:ACTION they used
-- Parameters: $at, $window_start (TIMESTAMP), $totals (BOOLEAN: $at is at or after the newest event).
WITH paths AS (
    SELECT * FROM effective_at($at::TIMESTAMP)
), live_uses AS MATERIALIZED (
    -- The window's allowed uses by a principal active at that instant (a use after a deactivation is
    -- a finding of other audits, never a measure of what the principal needs).
    SELECT u.position, u."at", u.principal, u.tenant, coalesce(u.tenant, '') AS tenant_key, u.resource_type,
           u.resource, u.action
    FROM usage u
    JOIN principal_status s ON s.principal = u.principal AND s.status = 'active'
        AND holds_at(s.valid_from, s.valid_to, u."at")
    WHERE u.outcome = 'allowed' AND u."at" > $window_start::TIMESTAMP AND u."at" <= $at::TIMESTAMP
), use_memberships AS MATERIALIZED (
    -- Memberships while their team existed.
    SELECT m.member, m.team, greatest(m.valid_from, tm.valid_from) AS valid_from,
           CASE WHEN m.valid_to IS NULL THEN tm.valid_to
                WHEN tm.valid_to IS NULL THEN m.valid_to
                ELSE least(m.valid_to, tm.valid_to) END AS valid_to
    FROM memberships m
    JOIN teams tm ON tm.team = m.team
    WHERE (tm.valid_to IS NULL OR m.valid_from < tm.valid_to) AND (m.valid_to IS NULL OR tm.valid_from < m.valid_to)
), use_holders AS (
    -- Who could hold an assignment for each use: the principal, and the teams it was in then.
    SELECT l.position, l."at", l.tenant_key, l.tenant, l.resource_type, l.resource, l.action, l.principal AS holder
    FROM live_uses l
    UNION ALL
    SELECT l.position, l."at", l.tenant_key, l.tenant, l.resource_type, l.resource, l.action, 'team:' || m.team
    FROM live_uses l
    JOIN use_memberships m ON m.member = l.principal AND holds_at(m.valid_from, m.valid_to, l."at")
), authorised_uses AS MATERIALIZED (
    -- Uses some path authorised at their instant (DESIGN section 3, as the secrets audit judges a read):
    -- only these say what a principal needs. A read the principal was not allowed to make is not a
    -- reason to give them a role that allows it.
    SELECT DISTINCT h.position
    FROM use_holders h
    JOIN assignments g ON g.principal = h.holder AND coalesce(g.tenant, '') = h.tenant_key
        AND holds_at(g.valid_from, g.valid_to, h."at") AND (g.expires_at IS NULL OR h."at" < g.expires_at)
        AND (g.resource IS NULL OR g.resource = h.resource)
    JOIN role_grants rg ON rg.role = g.role AND holds_at(rg.valid_from, rg.valid_to, h."at")
        AND covers(rg.permission_type, rg.permission_action, h.resource_type, h.action)
    LEFT JOIN tenants tn ON tn.tenant = h.tenant
    WHERE h.tenant IS NULL OR holds_at(tn.valid_from, tn.valid_to, h."at")
), window_uses AS MATERIALIZED (
    SELECT principal, tenant_key, resource_type, action,
           min("at") AS first_used, max("at") AS last_used, max(position) AS last_position
    FROM live_uses
    WHERE position IN (SELECT position FROM authorised_uses)
    GROUP BY principal, tenant_key, resource_type, action
), uses_by_pattern AS (
    -- Each use under the four permission patterns that cover it, so paths match it by equality
    -- (window_uses has one row per TYPE:ACTION already: only the wildcard patterns need a max).
    SELECT principal, tenant_key, resource_type || ':' || action AS permission, last_used
    FROM window_uses
    UNION ALL
    SELECT principal, tenant_key, pattern AS permission, max(last_used) AS last_used
    FROM (SELECT *, unnest(['*:' || action, resource_type || ':*', '*:*']) AS pattern FROM window_uses)
    GROUP BY principal, tenant_key, pattern
), scoped AS MATERIALIZED (
    SELECT DISTINCT principal, resource_scope, connector_of(resource_scope) AS connector
    FROM paths WHERE resource_scope IS NOT NULL
), scoped_uses AS (
    -- Uses in the window of resources some path is scoped to, under the four patterns.
    SELECT principal, tenant_key, resource, pattern AS permission, max(last_used) AS last_used
    FROM (SELECT *, unnest([resource_type || ':' || action, '*:' || action, resource_type || ':*', '*:*']) AS pattern
          FROM (SELECT e.principal, coalesce(e.tenant, '') AS tenant_key, e.resource, e.resource_type, e.action,
                       max(e."at") AS last_used
                FROM events e
                JOIN scoped s ON s.principal = e.principal AND s.resource_scope = e.resource
                WHERE e.type = 'ResourceAccessed' AND e.outcome = 'allowed'
                  AND e."at" > $window_start::TIMESTAMP AND e."at" <= $at::TIMESTAMP
                GROUP BY ALL
                UNION ALL
                SELECT e.principal, coalesce(e.tenant, ''), s.resource_scope, e.resource_type, 'read_secret_value',
                       max(e."at")
                FROM events e
                JOIN scoped s ON s.principal = e.principal AND s.connector = e.connector
                WHERE e.type = 'ConnectorSecretAccessed' AND e.outcome = 'allowed'
                  AND e."at" > $window_start::TIMESTAMP AND e."at" <= $at::TIMESTAMP
                GROUP BY ALL))
    GROUP BY ALL
), path_use AS (
    -- One join of the paths to their uses: unscoped paths meet resource '' (no resource is named '').
    SELECT p.principal, p.tenant, p.role, p.via_team, p.resource_scope, p.permission, p.since,
           p.assignment_position, p.member_position, u.last_used
    FROM paths p
    LEFT JOIN (SELECT principal, tenant_key, '' AS resource_key, permission, last_used FROM uses_by_pattern
               UNION ALL
               SELECT principal, tenant_key, resource, permission, last_used FROM scoped_uses) u
        ON u.principal = p.principal AND u.tenant_key = coalesce(p.tenant, '')
        AND u.resource_key = coalesce(p.resource_scope, '') AND u.permission = p.permission
), unused AS (
    SELECT 'unused-permissions' AS finding,
           principal AS who,
           CASE WHEN tenant IS NULL THEN 'organization' ELSE 'tenant:' || tenant END AS "where",
           'role ' || role AS what,
           tenant, role, via_team, resource_scope,
           min(since) AS since,
           -- Plain list aggregates, sorted and deduplicated per row (cheaper than DISTINCT ... ORDER BY).
           list_sort(list_distinct(list(permission) FILTER (WHERE last_used IS NULL))) AS unused_permissions,
           coalesce(list_sort(list_distinct(list(permission) FILTER (WHERE last_used IS NOT NULL))), [])
               AS used_permissions,
           [role] AS held_roles,
           max(last_used) AS last_used,
           list_filter([min(assignment_position), min(member_position)], lambda x: x IS NOT NULL) AS positions
    FROM path_use
    GROUP BY principal, tenant, role, via_team, resource_scope
    HAVING count(*) FILTER (WHERE last_used IS NULL) > 0
), activity AS (
    -- Last activity of any kind: a use (allowed or denied; from the sync's use totals when $at is at or
    -- after the newest event), or an event the principal recorded as its actor (changes, review decisions).
    SELECT principal, max(last_seen) AS last_seen, max(last_position) AS last_position
    FROM (SELECT principal, max(last_at) AS last_seen, max(last_position) AS last_position
          FROM usage_totals
          WHERE $totals::BOOLEAN
          GROUP BY principal
          UNION ALL
          SELECT principal, max("at") AS last_seen, max(position) AS last_position
          FROM usage
          WHERE NOT $totals::BOOLEAN AND "at" <= $at::TIMESTAMP
          GROUP BY principal
          UNION ALL
          SELECT actor, max("at"), max(position)
          FROM events
          WHERE type NOT IN ('ResourceAccessed', 'ConnectorSecretAccessed') AND "at" <= $at::TIMESTAMP
            AND (actor LIKE 'user:%' OR actor LIKE 'service_account:%')
          GROUP BY actor)
    GROUP BY principal
), dormant AS (
    SELECT 'dormant-principal' AS finding,
           s.principal AS who,
           'organization' AS "where",
           CASE WHEN a.last_seen IS NULL THEN 'no recorded activity' ELSE 'no activity in the window' END AS what,
           NULL::VARCHAR AS tenant, NULL::VARCHAR AS role, NULL::VARCHAR AS via_team, NULL::VARCHAR AS resource_scope,
           coalesce(a.last_seen, c.created_at) AS since,
           NULL::VARCHAR[] AS unused_permissions, NULL::VARCHAR[] AS used_permissions,
           coalesce(h.roles, []) AS held_roles,
           a.last_seen AS last_used,
           list_filter([c.created_position, a.last_position], lambda x: x IS NOT NULL) AS positions
    FROM principal_status s
    JOIN (SELECT principal, min(valid_from) AS created_at, min(from_position) AS created_position
          FROM principal_status GROUP BY principal) c ON c.principal = s.principal
    LEFT JOIN activity a ON a.principal = s.principal
    LEFT JOIN (SELECT principal, list(DISTINCT role ORDER BY role) AS roles FROM paths GROUP BY principal) h
        ON h.principal = s.principal
    WHERE s.status = 'active' AND holds_at(s.valid_from, s.valid_to, $at::TIMESTAMP)
      AND (a.last_seen IS NULL OR a.last_seen <= $window_start::TIMESTAMP)
), used_sets AS (
    SELECT principal, tenant_key,
           list_sort(list(resource_type || ':' || action)) AS used,
           min(first_used) AS first_used, max(last_used) AS last_used, max(last_position) AS last_position
    FROM window_uses
    GROUP BY principal, tenant_key
), distinct_sets AS (
    -- Each distinct set of used pairs once, with a number: grouping by the number, not the list, is cheap.
    SELECT used, organization, row_number() OVER () AS set_id
    FROM (SELECT DISTINCT used, tenant_key = '' AS organization FROM used_sets)
), set_pairs AS (
    SELECT set_id, organization, len(used) AS needed, unnest(used) AS pair FROM distinct_sets
), preset AS (
    SELECT preset FROM events WHERE type = 'OrganizationCreated'
), role_cover AS (
    -- The concrete TYPE:ACTION pairs each live role allows at $at.
    SELECT DISTINCT r.role, r.scope, r.from_position, v.resource_type || ':' || v.action AS pair
    FROM roles r
    JOIN role_grants g ON g.role = r.role AND holds_at(g.valid_from, g.valid_to, $at::TIMESTAMP)
    JOIN vocabulary v ON v.preset = (SELECT preset FROM preset) AND v.scope = r.scope
        AND covers(g.permission_type, g.permission_action, v.resource_type, v.action)
    WHERE holds_at(r.valid_from, r.valid_to, $at::TIMESTAMP)
), role_size AS (
    SELECT role, scope, from_position, count(*) AS size FROM role_cover GROUP BY ALL
), pair_bits AS (
    -- Every TYPE:ACTION of the preset gets a bit; a set of pairs is 8 64-bit words (the presets have
    -- under 400 pairs: more than 512 fails loudly below). Covering is then a few integer ANDs.
    SELECT pair, (row_number() OVER (ORDER BY pair) - 1)::INTEGER AS bit
    FROM (SELECT DISTINCT resource_type || ':' || action AS pair FROM vocabulary
          WHERE preset = (SELECT preset FROM preset))
), role_bits AS (
    SELECT rc.role, rc.scope,
           bit_or(pair_word(b.bit, 0)) AS w0,
           bit_or(pair_word(b.bit, 1)) AS w1,
           bit_or(pair_word(b.bit, 2)) AS w2,
           bit_or(pair_word(b.bit, 3)) AS w3,
           bit_or(pair_word(b.bit, 4)) AS w4,
           bit_or(pair_word(b.bit, 5)) AS w5,
           bit_or(pair_word(b.bit, 6)) AS w6,
           bit_or(pair_word(b.bit, 7)) AS w7
    FROM role_cover rc JOIN pair_bits b ON b.pair = rc.pair
    GROUP BY rc.role, rc.scope
), set_bits AS (
    -- A used pair outside the vocabulary (none is expected) makes its set coverable by no role.
    SELECT sp.set_id, sp.organization,
           bit_or(pair_word(b.bit, 0)) AS w0,
           bit_or(pair_word(b.bit, 1)) AS w1,
           bit_or(pair_word(b.bit, 2)) AS w2,
           bit_or(pair_word(b.bit, 3)) AS w3,
           bit_or(pair_word(b.bit, 4)) AS w4,
           bit_or(pair_word(b.bit, 5)) AS w5,
           bit_or(pair_word(b.bit, 6)) AS w6,
           bit_or(pair_word(b.bit, 7)) AS w7,
           count(*) FILTER (WHERE b.bit IS NULL) AS unknown,
           CASE WHEN max(b.bit) >= 512 THEN error('least-privilege: vocabulary too large for the pair bitmaps')
           END AS too_large
    FROM set_pairs sp LEFT JOIN pair_bits b ON b.pair = sp.pair
    GROUP BY sp.set_id, sp.organization
), covering AS (
    -- A role covers a set when every bit of the set is among the role's.
    SELECT s.set_id, r.role
    FROM set_bits s
    JOIN role_bits r ON r.scope = CASE WHEN s.organization THEN 'organization' ELSE 'tenant' END
    WHERE s.unknown = 0 AND s.too_large IS NULL
      AND (r.w0 & s.w0) = s.w0
      AND (r.w1 & s.w1) = s.w1
      AND (r.w2 & s.w2) = s.w2
      AND (r.w3 & s.w3) = s.w3
      AND (r.w4 & s.w4) = s.w4
      AND (r.w5 & s.w5) = s.w5
      AND (r.w6 & s.w6) = s.w6
      AND (r.w7 & s.w7) = s.w7
), best AS (
    SELECT d.used, d.organization, b.role, b.size, b.role_position
    FROM (SELECT c.set_id, arg_min(c.role, (rs.size, c.role)) AS role, min(rs.size) AS size,
                 arg_min(rs.from_position, (rs.size, c.role)) AS role_position
          FROM covering c JOIN role_size rs ON rs.role = c.role
          GROUP BY c.set_id) b
    JOIN distinct_sets d ON d.set_id = b.set_id
), roles_held AS (
    SELECT principal, coalesce(tenant, '') AS tenant_key, list(DISTINCT role ORDER BY role) AS roles
    FROM paths GROUP BY ALL
), smallest AS (
    SELECT 'smallest-role' AS finding,
           u.principal AS who,
           CASE WHEN u.tenant_key = '' THEN 'organization' ELSE 'tenant:' || u.tenant_key END AS "where",
           CASE WHEN b.role IS NULL THEN 'no existing role covers what was used'
                ELSE 'role ' || b.role || ' (' || b.size || ' permission' || CASE WHEN b.size = 1 THEN ')' ELSE 's)' END
           END AS what,
           nullif(u.tenant_key, '') AS tenant,
           b.role, NULL::VARCHAR AS via_team, NULL::VARCHAR AS resource_scope,
           u.first_used AS since,
           NULL::VARCHAR[] AS unused_permissions,
           u.used AS used_permissions,
           coalesce(h.roles, []) AS held_roles,
           u.last_used,
           list_filter([b.role_position, u.last_position], lambda x: x IS NOT NULL) AS positions
    FROM used_sets u
    LEFT JOIN best b ON b.used = u.used AND b.organization = (u.tenant_key = '')
    LEFT JOIN roles_held h ON h.principal = u.principal AND h.tenant_key = u.tenant_key
)
SELECT finding, who, "where", what, tenant, role, via_team, resource_scope, since,
       unused_permissions, used_permissions, held_roles, last_used, positions
FROM (
    SELECT * FROM unused
    UNION ALL SELECT * FROM dormant
    UNION ALL SELECT * FROM smallest
)
ORDER BY CASE finding WHEN 'unused-permissions' THEN 1 WHEN 'dormant-principal' THEN 2 ELSE 3 END,
         who, tenant NULLS FIRST, role, via_team NULLS FIRST, resource_scope NULLS FIRST
