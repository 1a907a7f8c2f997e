-- hygiene: housekeeping findings at $at (and, for changes without a reason, events with
-- $start <= at <= $end).
--   self-grant               an actor assigned a role to themselves (or to a team they were in), added
--                            themselves to a team, or added permissions to a role they held
--   grant-to-deactivated     an assignment (or team membership) still held by a deactivated account
--   expired-not-revoked      a time-bound assignment past its expires_at that was never unassigned
--   role-without-holders     a custom role that no assignment in force gives to anyone
--   empty-team               a team with no members
--   admin-count              per tenant and for the organization: who has full control (the predefined
--                            admin / org_admin role, or *:* unscoped)
--   change-without-reason    a change event recorded without a reason
--   token-of-deactivated     a service token neither revoked nor expired whose principal is deactivated (the
--                            service refuses it while that lasts; a reactivation would make it work again)
--   admin-token              a service token in force (neither revoked nor expired) with the `admin` scope
--   token-never-used         a service token in force whose use the service had not recorded by $at (it
--                            records a token's first use, TokenUsed, once): revoke what nobody needs
--   confusable-name          two principals of one kind whose names look alike: the same skeleton after
--                            case folding (capital I also read as l) and mapping look-alike letters to
--                            Latin ones (Cyrillic а е о р с х у і ј ѕ ԁ һ ӏ в н к м т, Greek ο α ι κ ν ρ τ
--                            υ χ, digits 0 1 to o l, rn to m), as displayed: markup-like tags ([b], [/],
--                            [link=...]) left out, since a markup-reading display shows [b]otto as otto;
--                            names are stored in NFKC form, so fullwidth and other compatibility forms are
--                            already one name. Listed once per pair, with both names and the code points
--                            of their non-ASCII characters.
-- Rows are ordered completely (finding, since, who, where, what, positions, detail), so two runs on the
-- same ledger give the same bytes.
-- Parameters: $at, $start, $end (TIMESTAMP).
WITH live_assignments AS (
    SELECT * FROM assignments WHERE holds_at(valid_from, valid_to, $at::TIMESTAMP)
), self_grants AS (
    SELECT 'self-grant' AS finding, e.actor AS who,
           CASE WHEN e.tenant IS NULL THEN 'organization' ELSE 'tenant:' || e.tenant END AS "where",
           'role ' || e.role AS what, e.tenant, e."at" AS since, [e.position] AS positions,
           'assigned role ' || e.role || ' to ' || e.principal
               || CASE WHEN e.principal <> e.actor THEN ', a team they were a member of' ELSE '' END AS detail
    FROM events e
    WHERE e.type = 'RoleAssigned' AND e."at" <= $at::TIMESTAMP
      AND (e.actor = e.principal
           OR EXISTS (SELECT 1 FROM memberships m WHERE 'team:' || m.team = e.principal AND m.member = e.actor
                      AND holds_at(m.valid_from, m.valid_to, e."at")))
    UNION ALL
    SELECT 'self-grant', e.actor, 'organization', 'team:' || e.team, NULL, e."at", [e.position],
           'added themselves to team ' || e.team
    FROM events e
    WHERE e.type = 'TeamMemberAdded' AND e.actor = e.member AND e."at" <= $at::TIMESTAMP
    UNION ALL
    SELECT DISTINCT 'self-grant', e.actor,
           CASE WHEN g.tenant IS NULL THEN 'organization' ELSE 'tenant:' || g.tenant END,
           'role ' || e.role, g.tenant, e."at", [e.position, g.from_position],
           'added ' || array_to_string(e."add", ', ') || ' to role ' || e.role || ', which they held'
    FROM events e
    JOIN role_chain c ON c.ancestor = e.role AND holds_at(c.valid_from, c.valid_to, e."at")
    JOIN assignments g ON g.role = c.role AND holds_at(g.valid_from, g.valid_to, e."at")
    WHERE e.type = 'RolePermissionsChanged' AND len(e."add") > 0 AND e."at" <= $at::TIMESTAMP
      AND (g.principal = e.actor
           OR EXISTS (SELECT 1 FROM memberships m WHERE 'team:' || m.team = g.principal AND m.member = e.actor
                      AND holds_at(m.valid_from, m.valid_to, e."at")))
), deactivated AS (
    SELECT 'grant-to-deactivated' AS finding, g.principal AS who,
           CASE WHEN g.tenant IS NULL THEN 'organization' ELSE 'tenant:' || g.tenant END AS "where",
           'role ' || g.role AS what, g.tenant, s.valid_from AS since, [g.from_position, s.from_position] AS positions,
           'holds role ' || g.role || coalesce(' on ' || g.resource, '') || ' (assigned ' || strftime(g.valid_from, '%Y-%m-%dT%H:%M:%SZ')
               || ') but was deactivated' AS detail
    FROM live_assignments g
    JOIN principal_status s ON s.principal = g.principal AND s.status = 'deactivated'
        AND holds_at(s.valid_from, s.valid_to, $at::TIMESTAMP)
    UNION ALL
    SELECT 'grant-to-deactivated', m.member, 'organization', 'team:' || m.team, NULL, s.valid_from,
           [m.from_position, s.from_position],
           'still a member of team ' || m.team || ' but was deactivated'
    FROM memberships m
    JOIN teams tm ON tm.team = m.team AND holds_at(tm.valid_from, tm.valid_to, $at::TIMESTAMP)
    JOIN principal_status s ON s.principal = m.member AND s.status = 'deactivated'
        AND holds_at(s.valid_from, s.valid_to, $at::TIMESTAMP)
    WHERE holds_at(m.valid_from, m.valid_to, $at::TIMESTAMP)
), expired AS (
    SELECT 'expired-not-revoked' AS finding, g.principal AS who,
           CASE WHEN g.tenant IS NULL THEN 'organization' ELSE 'tenant:' || g.tenant END AS "where",
           'role ' || g.role AS what, g.tenant, g.expires_at AS since, [g.from_position] AS positions,
           'role ' || g.role || coalesce(' on ' || g.resource, '') || ' expired and was never unassigned' AS detail
    FROM live_assignments g
    WHERE g.expires_at IS NOT NULL AND g.expires_at <= $at::TIMESTAMP
), holderless AS (
    SELECT 'role-without-holders' AS finding, NULL::VARCHAR AS who, 'organization' AS "where",
           'role ' || r.role AS what, NULL::VARCHAR AS tenant,
           greatest(r.valid_from, max(g.valid_to), max(g.expires_at) FILTER (WHERE g.expires_at <= $at::TIMESTAMP)) AS since,
           list_filter([r.from_position, max(g.to_position)], lambda x: x IS NOT NULL) AS positions,
           CASE WHEN count(g.role) = 0 THEN 'never assigned' ELSE 'no assignment in force' END
               || coalesce('; base of ' || (SELECT string_agg(DISTINCT d.role, ', ' ORDER BY d.role) FROM roles d
                                            WHERE d.base = r.role AND holds_at(d.valid_from, d.valid_to, $at::TIMESTAMP)),
                           '') AS detail
    FROM roles r
    LEFT JOIN assignments g ON g.role = r.role AND g.from_position >= r.from_position
        AND g.valid_from <= $at::TIMESTAMP
    WHERE NOT r.predefined AND holds_at(r.valid_from, r.valid_to, $at::TIMESTAMP)
    GROUP BY r.role, r.valid_from, r.from_position
    HAVING count(g.role) FILTER (WHERE holds_at(g.valid_from, g.valid_to, $at::TIMESTAMP)
                                 AND (g.expires_at IS NULL OR $at::TIMESTAMP < g.expires_at)) = 0
), empty_teams AS (
    SELECT 'empty-team' AS finding, 'team:' || t.team AS who, 'organization' AS "where", 'team:' || t.team AS what,
           NULL::VARCHAR AS tenant, greatest(t.valid_from, max(m.valid_to)) AS since,
           list_filter([t.from_position, max(m.to_position)], lambda x: x IS NOT NULL) AS positions,
           CASE WHEN count(m.team) = 0 THEN 'never had members' ELSE 'no members left' END
               || coalesce('; holds ' || (SELECT string_agg(DISTINCT g.role || coalesce(' in tenant ' || g.tenant, ''), ', '
                                                        ORDER BY g.role || coalesce(' in tenant ' || g.tenant, ''))
                                         FROM live_assignments g WHERE g.principal = 'team:' || t.team), '') AS detail
    FROM teams t
    LEFT JOIN memberships m ON m.team = t.team AND m.valid_from <= $at::TIMESTAMP
    WHERE holds_at(t.valid_from, t.valid_to, $at::TIMESTAMP)
    GROUP BY t.team, t.valid_from, t.from_position
    HAVING count(m.team) FILTER (WHERE holds_at(m.valid_from, m.valid_to, $at::TIMESTAMP)) = 0
), admins AS (
    SELECT tenant, principal, min(since) AS since, list(DISTINCT assignment_position) AS positions
    FROM effective_at($at::TIMESTAMP)
    WHERE resource_scope IS NULL
      AND (permission = '*:*' OR (from_role IN ('admin', 'org_admin')
           AND from_role IN (SELECT role FROM roles WHERE predefined)))
    GROUP BY ALL
), scopes AS (
    SELECT NULL::VARCHAR AS tenant, min(valid_from) AS since FROM roles WHERE predefined
    UNION ALL
    SELECT tenant, valid_from FROM tenants WHERE holds_at(valid_from, valid_to, $at::TIMESTAMP)
), admin_counts AS (
    SELECT 'admin-count' AS finding,
           coalesce(string_agg(a.principal, ', ' ORDER BY a.principal), '') AS who,
           CASE WHEN s.tenant IS NULL THEN 'organization' ELSE 'tenant:' || s.tenant END AS "where",
           count(a.principal) || ' administrator' || CASE WHEN count(a.principal) = 1 THEN '' ELSE 's' END AS what,
           s.tenant, coalesce(max(a.since), s.since) AS since,
           coalesce(list_sort(list_distinct(flatten(list(a.positions) FILTER (WHERE a.principal IS NOT NULL)))), []) AS positions,
           CASE WHEN count(a.principal) = 0 THEN 'nobody has full control' ELSE NULL END AS detail
    FROM scopes s
    LEFT JOIN admins a ON coalesce(a.tenant, '') = coalesce(s.tenant, '')
    WHERE s.since IS NOT NULL
    GROUP BY s.tenant, s.since
), no_reason AS (
    SELECT 'change-without-reason' AS finding, e.actor AS who,
           CASE WHEN e.tenant IS NULL THEN 'organization' ELSE 'tenant:' || e.tenant END AS "where",
           e.type AS what, e.tenant, e."at" AS since, [e.position] AS positions,
           concat_ws(' ', e.role, e.principal, e.member, 'team:' || e.team, 'user:' || e."user",
                     'service_account:' || e.service_account, 'connector:' || e.connector, 'tenant:' || e.tenant) AS detail
    FROM events e
    WHERE e.type NOT IN ('ResourceAccessed', 'ConnectorSecretAccessed', 'OrganizationCreated', 'TokenUsed', 'ApiKeyUsed')
      AND (e.reason IS NULL OR trim(e.reason) = '')
      AND e."at" >= $start::TIMESTAMP AND e."at" <= $end::TIMESTAMP AND e."at" <= $at::TIMESTAMP
), principals_at AS (
    -- Every user and service account recorded by $at (deactivated ones too), and every team in being.
    SELECT principal, min(valid_from) AS since, min(from_position) AS position
    FROM principal_status WHERE valid_from <= $at::TIMESTAMP GROUP BY principal
    UNION ALL
    SELECT 'team:' || team, valid_from, from_position FROM teams WHERE holds_at(valid_from, valid_to, $at::TIMESTAMP)
), names AS (
    SELECT principal, split_part(principal, ':', 1) AS kind, since, position,
           -- As displayed: a markup-reading display (rich, BBCode) shows [b]otto as otto, so tags are dropped.
           regexp_replace(nfc_normalize(substr(principal, strpos(principal, ':') + 1)), '\[[A-Za-z#/@][^\[\]]*\]', '',
                          'g') AS name,
           array_to_string(list_transform(list_filter(string_split(principal, ''), lambda c: unicode(c) > 127),
                                          lambda c: printf('U+%04X', unicode(c))), ' ') AS non_ascii
    FROM principals_at
), skeletons AS (
    -- Two readings of each name: case folded first (Bob = bob), and capital I read as l first
    -- (malIory = mallory); both then map look-alike letters and digits to Latin ones.
    SELECT principal, kind, since, position, non_ascii, skeleton
    FROM names,
         LATERAL (SELECT unnest([lower(name), lower(replace(name, 'I', 'l'))]) AS folded),
         LATERAL (SELECT replace(translate(folded, 'аеорсхуіјѕԁһӏвнкмтοαικνρτυχ01', 'aeopcxyijsdhlbhkmtoaikvptuxol'),
                                 'rn', 'm') AS skeleton)
), confusable AS (
    SELECT 'confusable-name' AS finding, a.principal AS who, 'organization' AS "where", b.principal AS what,
           NULL::VARCHAR AS tenant, greatest(a.since, b.since) AS since, list_sort([a.position, b.position]) AS positions,
           a.principal || ' and ' || b.principal || ' look alike (both read as ' || a.kind || ':' || min(a.skeleton)
               || ')' || CASE WHEN a.non_ascii <> '' OR b.non_ascii <> '' THEN '; non-ASCII: '
                       || concat_ws(', ', CASE WHEN a.non_ascii <> '' THEN a.principal || ' has ' || a.non_ascii END,
                                    CASE WHEN b.non_ascii <> '' THEN b.principal || ' has ' || b.non_ascii END)
                  ELSE '' END AS detail
    FROM skeletons a
    JOIN skeletons b ON a.kind = b.kind AND a.skeleton = b.skeleton AND a.principal < b.principal
    GROUP BY a.principal, b.principal, a.kind, a.since, b.since, a.position, b.position, a.non_ascii, b.non_ascii
), live_tokens AS (
    -- Tokens issued by $at and, at $at, neither revoked nor expired.
    SELECT e.token_id, e.principal, e.scopes, e.expires_at, e."at", e.position, e.actor AS issued_by
    FROM events e
    WHERE e.type = 'TokenIssued' AND e."at" <= $at::TIMESTAMP
      AND (e.expires_at IS NULL OR $at::TIMESTAMP < e.expires_at)
      AND NOT EXISTS (SELECT 1 FROM events r WHERE r.type = 'TokenRevoked' AND r.token_id = e.token_id
                      AND r."at" <= $at::TIMESTAMP)
), tokens AS (
    SELECT 'token-of-deactivated' AS finding, t.principal AS who, 'organization' AS "where",
           'token ' || t.token_id AS what, NULL::VARCHAR AS tenant, s.valid_from AS since,
           [t.position, s.from_position] AS positions,
           'token ' || t.token_id || ' (scopes ' || array_to_string(t.scopes, ', ')
               || ') is neither revoked nor expired but ' || t.principal || ' was deactivated' AS detail
    FROM live_tokens t
    JOIN principal_status s ON s.principal = t.principal AND s.status = 'deactivated'
        AND holds_at(s.valid_from, s.valid_to, $at::TIMESTAMP)
    UNION ALL
    SELECT 'admin-token', t.principal, 'organization', 'token ' || t.token_id, NULL, t."at", [t.position],
           'token ' || t.token_id || ' has scope admin (scopes ' || array_to_string(t.scopes, ', ') || '; '
               || coalesce('expires ' || strftime(t.expires_at, '%Y-%m-%dT%H:%M:%SZ'), 'no expiry') || ')'
    FROM live_tokens t
    WHERE list_contains(t.scopes, 'admin')
    UNION ALL
    SELECT 'token-never-used', t.principal, 'organization', 'token ' || t.token_id, NULL, t."at", [t.position],
           'token ' || t.token_id || ' (scopes ' || array_to_string(t.scopes, ', ') || ') issued by '
               || t.issued_by || ' has never been used'
    FROM live_tokens t
    WHERE NOT EXISTS (SELECT 1 FROM events u WHERE u.type = 'TokenUsed' AND u.token_id = t.token_id
                      AND u."at" <= $at::TIMESTAMP)
), key_events AS (
    -- Service accounts' API keys (as a ZenML sync records them), up to $at; a key name may be reused
    -- after its deletion, so each key counts from its newest ApiKeyCreated.
    SELECT service_account, api_key, type, position, "at", last_login
    FROM events
    WHERE type IN ('ApiKeyCreated', 'ApiKeyDeactivated', 'ApiKeyReactivated', 'ApiKeyDeleted', 'ApiKeyUsed')
      AND "at" <= $at::TIMESTAMP
), key_born AS (
    SELECT service_account, api_key, max(position) AS born FROM key_events WHERE type = 'ApiKeyCreated' GROUP BY ALL
), live_keys AS (
    SELECT k.service_account, k.api_key, b.born,
           arg_max(k.type, k.position) FILTER (WHERE k.type <> 'ApiKeyUsed') AS state,
           min(k."at") AS created_at, max(k.last_login) AS last_login, max(k.position) AS last_position
    FROM key_events k
    JOIN key_born b ON b.service_account = k.service_account AND b.api_key = k.api_key AND k.position >= b.born
    GROUP BY ALL
    HAVING state IN ('ApiKeyCreated', 'ApiKeyReactivated')
), api_keys AS (
    SELECT 'api-key-of-deactivated' AS finding, 'service_account:' || k.service_account AS who,
           'organization' AS "where", 'API key ' || k.api_key AS what, NULL::VARCHAR AS tenant,
           greatest(k.created_at, s.valid_from) AS since, [k.born, s.from_position] AS positions,
           'API key ' || k.api_key || ' is still active but service_account:' || k.service_account
               || ' was deactivated: deactivate or delete the key' AS detail
    FROM live_keys k
    JOIN principal_status s ON s.principal = 'service_account:' || k.service_account AND s.status = 'deactivated'
        AND holds_at(s.valid_from, s.valid_to, $at::TIMESTAMP)
    UNION ALL
    SELECT 'api-key-unused', 'service_account:' || k.service_account, 'organization', 'API key ' || k.api_key,
           NULL, coalesce(k.last_login, k.created_at), [k.born],
           'API key ' || k.api_key || ' is active and '
               || coalesce('was last used ' || strftime(k.last_login, '%Y-%m-%dT%H:%M:%SZ'),
                           'was never used since ' || strftime(k.created_at, '%Y-%m-%dT%H:%M:%SZ'))
               || ': unused for 90 days or more'
    FROM live_keys k
    WHERE coalesce(k.last_login, k.created_at) <= $at::TIMESTAMP - INTERVAL 90 DAY
)
SELECT finding, who, "where", what, tenant, since, positions, detail
FROM (
    SELECT * FROM self_grants
    UNION ALL SELECT * FROM deactivated
    UNION ALL SELECT * FROM expired
    UNION ALL SELECT * FROM holderless
    UNION ALL SELECT * FROM empty_teams
    UNION ALL SELECT * FROM admin_counts
    UNION ALL SELECT * FROM no_reason
    UNION ALL SELECT * FROM confusable
    UNION ALL SELECT * FROM tokens
    UNION ALL SELECT * FROM api_keys
)
ORDER BY CASE finding WHEN 'self-grant' THEN 1 WHEN 'grant-to-deactivated' THEN 2 WHEN 'expired-not-revoked' THEN 3
                      WHEN 'role-without-holders' THEN 4 WHEN 'empty-team' THEN 5 WHEN 'confusable-name' THEN 6
                      WHEN 'token-of-deactivated' THEN 7 WHEN 'admin-token' THEN 8 WHEN 'token-never-used' THEN 9
                      WHEN 'api-key-of-deactivated' THEN 10 WHEN 'api-key-unused' THEN 11 WHEN 'admin-count' THEN 12
                      ELSE 13 END,
         since, who, "where", what, positions, detail
