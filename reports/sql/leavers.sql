-- leavers: the people an HR terminations file names, reconciled with the ledger as it stood at $at.
-- The file's rows are registered on the connection for this query only, as `hr_terminations`
-- (line, person `user:NAME`, terminated_at); they are never written into the warehouse.
--   leaver                    one row per person with an account: the termination, the first deactivation in
--                             force at it or after it, the grants held at the termination and when the last
--                             was removed
--   grant                     one row per grant held at the termination: a role assignment held directly (in
--                             force, not expired, its tenant live) or a team membership (its team live); when it
--                             was removed (unassigned, expired, tenant deleted, member removed, team deleted),
--                             or none while it is still held at $at; late_by: how long it was held past the
--                             deadline (review material: a deactivated account holds nothing effective)
--   not-in-ledger             a person with no account recorded by $at (detail: the closest user names)
--   late-deactivation         the account was active at some moment more than $sla after the termination
--                             (deactivated late, never, or reactivated); late_by: how long it was active past
--                             that deadline, up to $at; positions: the deactivation and any reactivation after
--                             the termination
--   access-after-termination  every connector-secret read (whatever its outcome) and every allowed resource
--                             access by the person after the termination, one row per event
-- Nothing recorded after $at is known: an interval that ends after $at is still open.
-- Rows are ordered completely (HR file line, finding, since, what, where, positions), so two runs on the
-- same ledger and file give the same bytes.
-- Parameters: $at (TIMESTAMP), $sla (INTERVAL).

-- A span of time as the command line writes durations: `2d 3h`, `45min`, `1s` (whole seconds, rounded up).
CREATE OR REPLACE TEMP MACRO span_parts(s) AS
    concat_ws(' ', CASE WHEN s >= 86400 THEN (s // 86400) || 'd' END,
              CASE WHEN s % 86400 >= 3600 THEN (s % 86400 // 3600) || 'h' END,
              CASE WHEN s % 3600 >= 60 THEN (s % 3600 // 60) || 'min' END,
              CASE WHEN s % 60 > 0 THEN (s % 60) || 's' END);

CREATE OR REPLACE TEMP MACRO span_text(seconds) AS
    CASE WHEN seconds > 0 THEN span_parts(ceil(seconds)::BIGINT) END;

WITH hr AS (
    SELECT line, person, terminated_at, terminated_at + $sla::INTERVAL AS deadline,
           least(terminated_at, $at::TIMESTAMP) AS seen_at  -- the termination, as far as $at lets us see
    FROM hr_terminations
), status AS (
    -- The leavers' status stretches as known at $at.
    SELECT principal, status, event, valid_from, from_position,
           CASE WHEN valid_to <= $at::TIMESTAMP THEN valid_to END AS valid_to
    FROM principal_status
    WHERE valid_from <= $at::TIMESTAMP AND principal IN (SELECT person FROM hr)
), known AS (
    SELECT DISTINCT principal FROM status
), deactivations AS (
    -- The first deactivation in force at the termination or after it.
    SELECT DISTINCT ON (h.person) h.person, s.valid_from AS deactivated_at, s.from_position AS position
    FROM hr h
    JOIN status s ON s.principal = h.person AND s.status = 'deactivated'
        AND (s.valid_to IS NULL OR s.valid_to > h.terminated_at)
    ORDER BY h.person, s.valid_from
), overdue AS (
    -- How long the account was active past the deadline (up to $at), and its reactivations after the termination.
    SELECT h.person,
           sum(epoch(coalesce(s.valid_to, $at::TIMESTAMP) - greatest(s.valid_from, h.deadline)))
               FILTER (WHERE s.status = 'active'
                       AND greatest(s.valid_from, h.deadline) < coalesce(s.valid_to, $at::TIMESTAMP)) AS seconds,
           min(s.valid_from) FILTER (WHERE s.event = 'UserReactivated' AND s.valid_from > h.terminated_at)
               AS reactivated_at,
           list(s.from_position ORDER BY s.from_position)
               FILTER (WHERE s.event = 'UserReactivated' AND s.valid_from > h.terminated_at) AS reactivations
    FROM hr h
    JOIN status s ON s.principal = h.person
    GROUP BY h.person
), assigned AS (
    -- Role assignments held directly at the termination, with what ended each first (as known at $at).
    SELECT h.line, h.person, h.deadline, g.valid_from AS since, g.from_position,
           'role ' || g.role || coalesce(' on ' || g.resource, '') AS what,
           CASE WHEN g.tenant IS NULL THEN 'organization' ELSE 'tenant:' || g.tenant END AS "where",
           list_sort(list_filter([{'ended_at': g.valid_to, 'how': 'unassigned', 'position': g.to_position},
                                  {'ended_at': g.expires_at, 'how': 'expired', 'position': NULL::BIGINT},
                                  {'ended_at': tn.valid_to, 'how': 'tenant deleted', 'position': tn.to_position}],
                                 lambda x: x.ended_at <= $at::TIMESTAMP))[1] AS ended
    FROM hr h
    JOIN assignments g ON g.principal = h.person AND g.valid_from <= h.seen_at
        AND (g.valid_to IS NULL OR g.valid_to > h.seen_at) AND (g.expires_at IS NULL OR g.expires_at > h.terminated_at)
    LEFT JOIN tenants tn ON tn.tenant = g.tenant
    WHERE g.tenant IS NULL OR (tn.valid_from <= h.seen_at AND (tn.valid_to IS NULL OR tn.valid_to > h.seen_at))
), member_of AS (
    -- Team memberships held at the termination (the team's assignments came with them).
    SELECT h.line, h.person, h.deadline, m.valid_from AS since, m.from_position,
           'member of team:' || m.team AS what, 'organization' AS "where",
           list_sort(list_filter([{'ended_at': m.valid_to, 'how': 'removed from the team', 'position': m.to_position},
                                  {'ended_at': tm.valid_to, 'how': 'team deleted', 'position': tm.to_position}],
                                 lambda x: x.ended_at <= $at::TIMESTAMP))[1] AS ended
    FROM hr h
    JOIN memberships m ON m.member = h.person AND m.valid_from <= h.seen_at
        AND (m.valid_to IS NULL OR m.valid_to > h.seen_at)
    JOIN teams tm ON tm.team = m.team AND tm.valid_from <= h.seen_at
        AND (tm.valid_to IS NULL OR tm.valid_to > h.seen_at)
), grants AS (
    SELECT line, person, what, "where", since, ended.ended_at AS removed_at,
           list_filter([from_position, ended.position], lambda x: x IS NOT NULL) AS positions,
           epoch(coalesce(ended.ended_at, $at::TIMESTAMP) - deadline) AS seconds_past,
           coalesce(ended.how, 'still held at ' || iso($at::TIMESTAMP)) AS how
    FROM (SELECT * FROM assigned UNION ALL SELECT * FROM member_of)
), grant_summary AS (
    SELECT person, count(*) AS n, count(*) FILTER (WHERE removed_at IS NULL) AS still, max(removed_at) AS last_removed,
           flatten(list(positions[2:])) AS removals
    FROM grants
    GROUP BY person
), accesses AS (
    SELECT h.line, h.person, h.terminated_at, e.position, e."at",
           CASE WHEN e.type = 'ConnectorSecretAccessed' THEN 'secret read service_connector/' || e.connector
                ELSE e.action || ' ' || e.resource END AS what,
           CASE WHEN e.tenant IS NULL THEN 'organization' ELSE 'tenant:' || e.tenant END AS "where",
           e.outcome, e.context
    FROM hr h
    JOIN events e ON e.principal = h.person AND e."at" > h.terminated_at AND e."at" <= $at::TIMESTAMP
    WHERE e.type = 'ConnectorSecretAccessed' OR (e.type = 'ResourceAccessed' AND e.outcome = 'allowed')
), access_count AS (
    SELECT person, count(*) AS n FROM accesses GROUP BY person
), users AS (
    SELECT DISTINCT principal, substr(principal, 6) AS name
    FROM principal_status WHERE kind = 'user' AND valid_from <= $at::TIMESTAMP
), missing AS (
    SELECT h.* FROM hr h WHERE h.person NOT IN (SELECT principal FROM known)
), closest AS (
    -- Names an HR system may spell differently (case, a letter): the most alike user names.
    SELECT m.person,
           list(u.principal ORDER BY jaro_winkler_similarity(lower(substr(m.person, 6)), lower(u.name)) DESC,
                u.principal)[1:3] AS names
    FROM missing m
    JOIN users u ON jaro_winkler_similarity(lower(substr(m.person, 6)), lower(u.name)) >= 0.85
    GROUP BY m.person
), found AS (
    SELECT h.line, 1 AS rank, 'leaver' AS finding, h.person AS who, 'termination' AS what, 'organization' AS "where",
           h.terminated_at AS since,
           list_sort(list_distinct(list_filter(list_concat([d.position], gs.removals), lambda x: x IS NOT NULL)))
               AS positions,
           h.terminated_at, d.deactivated_at,
           CASE WHEN gs.n > 0 AND gs.still = 0 THEN gs.last_removed END AS removed_at,
           span_text(o.seconds) AS late_by,
           concat_ws('; ',
               CASE WHEN d.deactivated_at IS NULL THEN 'not deactivated by ' || iso($at::TIMESTAMP)
                    WHEN d.deactivated_at <= h.terminated_at THEN 'deactivated by the termination'
                    ELSE 'deactivated ' || span_text(epoch(d.deactivated_at - h.terminated_at))
                         || ' after the termination' END,
               'reactivated ' || iso(o.reactivated_at),
               CASE WHEN gs.n IS NULL THEN 'held no grant at the termination'
                    ELSE gs.n || ' grant(s) at the termination, '
                         || CASE WHEN gs.still = 0 THEN 'all removed' ELSE gs.still || ' still held' END END,
               ac.n || ' access(es) after the termination',
               CASE WHEN h.terminated_at > $at::TIMESTAMP THEN 'the termination is after ' || iso($at::TIMESTAMP) END)
               AS detail
    FROM hr h
    JOIN known k ON k.principal = h.person
    LEFT JOIN deactivations d ON d.person = h.person
    LEFT JOIN overdue o ON o.person = h.person
    LEFT JOIN grant_summary gs ON gs.person = h.person
    LEFT JOIN access_count ac ON ac.person = h.person
    UNION ALL
    SELECT m.line, 1, 'not-in-ledger', m.person, 'no account', 'organization', m.terminated_at, []::BIGINT[],
           m.terminated_at, NULL, NULL, NULL,
           'no account ' || m.person || ' recorded by ' || iso($at::TIMESTAMP)
               || coalesce(' (closest: ' || array_to_string(c.names, ', ') || ')', '')
    FROM missing m
    LEFT JOIN closest c ON c.person = m.person
    UNION ALL
    SELECT h.line, 2, 'late-deactivation', h.person,
           CASE WHEN o.reactivated_at IS NOT NULL THEN 'reactivated after the termination'
                WHEN d.deactivated_at IS NULL THEN 'not deactivated' ELSE 'deactivated late' END,
           'organization', h.deadline,
           list_filter(list_concat([d.position], o.reactivations), lambda x: x IS NOT NULL),
           h.terminated_at, d.deactivated_at, NULL, span_text(o.seconds),
           'active ' || span_text(o.seconds) || ' past the SLA (' || span_text(epoch($sla::INTERVAL))
               || ' after the termination); '
               || CASE WHEN d.deactivated_at IS NULL THEN 'still active at ' || iso($at::TIMESTAMP)
                       ELSE 'deactivated ' || iso(d.deactivated_at) END
               || coalesce(', reactivated ' || iso(o.reactivated_at), '')
    FROM hr h
    JOIN overdue o ON o.person = h.person AND o.seconds > 0
    LEFT JOIN deactivations d ON d.person = h.person
    UNION ALL
    SELECT a.line, 3, 'access-after-termination', a.person, a.what, a."where", a."at", [a.position],
           a.terminated_at, d.deactivated_at, NULL, NULL,
           a.outcome || ', ' || span_text(epoch(a."at" - a.terminated_at)) || ' after the termination'
               || coalesce('; context: ' || a.context, '')
    FROM accesses a
    LEFT JOIN deactivations d ON d.person = a.person
    UNION ALL
    SELECT g.line, 4, 'grant', g.person, g.what, g."where", g.since, g.positions,
           h.terminated_at, d.deactivated_at, g.removed_at, span_text(g.seconds_past),
           g.how || coalesce(' ' || iso(g.removed_at), '')
    FROM grants g
    JOIN hr h ON h.line = g.line
    LEFT JOIN deactivations d ON d.person = g.person
)
SELECT finding, who, what, "where", since, positions, terminated_at, deactivated_at, removed_at, late_by, detail
FROM found
ORDER BY line, rank, since, what, "where", positions
