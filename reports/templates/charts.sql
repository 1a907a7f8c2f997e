-- The figures behind the evidence report's charts, over the warehouse's tables (reports/sql/warehouse.sql)
-- and the macros of reports/sql/effective.sql. Each statement starts with a `-- name:` line.
-- Parameters: $start, $end (TIMESTAMP: the period), $first, $last (BIGINT: the period's ledger positions).
-- The secrets chart also reads `secrets_audit`, the rows of the secrets audit of the same period.

-- name: privileged
-- At the end of each day of the period (each week when it is longer than 400 days): per tenant, the users and
-- service accounts that could read the tenant's cloud credentials (service_connector:read_secret_value, which
-- full control, *:*, includes), directly or through a team, while active, the tenant live and the assignment
-- in force (not expired).
WITH privileged_roles AS (
    SELECT role, valid_from, valid_to
    FROM role_grants
    WHERE covers(permission_type, permission_action, 'service_connector', 'read_secret_value')
), grants AS (
    SELECT g.principal, g.tenant,
           greatest(g.valid_from, r.valid_from) AS vf,
           least(g.valid_to, g.expires_at, r.valid_to) AS vt
    FROM assignments g
    JOIN privileged_roles r ON r.role = g.role
        AND r.valid_from < coalesce(g.valid_to, 'infinity'::TIMESTAMP)
        AND g.valid_from < coalesce(r.valid_to, 'infinity'::TIMESTAMP)
    WHERE g.tenant IS NOT NULL
), holders AS (
    SELECT principal, tenant, vf, vt FROM grants WHERE principal NOT LIKE 'team:%'
    UNION ALL
    SELECT m.member, g.tenant, greatest(g.vf, m.valid_from, tm.valid_from), least(g.vt, m.valid_to, tm.valid_to)
    FROM grants g
    JOIN memberships m ON 'team:' || m.team = g.principal
    JOIN teams tm ON tm.team = m.team
), spans AS (
    SELECT h.principal, h.tenant,
           greatest(h.vf, s.valid_from, tn.valid_from) AS vf,
           least(h.vt, s.valid_to, tn.valid_to) AS vt
    FROM holders h
    JOIN principal_status s ON s.principal = h.principal AND s.status = 'active'
    JOIN tenants tn ON tn.tenant = h.tenant
), ticks AS (
    SELECT unnest(generate_series(
        date_trunc('day', $start::TIMESTAMP) + INTERVAL 1 DAY - INTERVAL 1 SECOND,
        $end::TIMESTAMP + INTERVAL 1 DAY,
        CASE WHEN $end::TIMESTAMP - $start::TIMESTAMP > INTERVAL 400 DAY THEN INTERVAL 7 DAY ELSE INTERVAL 1 DAY END
    )) AS t
)
SELECT least(k.t, $end::TIMESTAMP) AS "at", s.tenant, count(DISTINCT s.principal) AS principals,
       string_agg(DISTINCT s.principal, ', ' ORDER BY s.principal) AS who
FROM ticks k
JOIN spans s ON s.vf <= least(k.t, $end::TIMESTAMP) AND (s.vt IS NULL OR least(k.t, $end::TIMESTAMP) < s.vt)
WHERE k.t - INTERVAL 1 DAY < $end::TIMESTAMP
GROUP BY ALL
ORDER BY 1, 2;

-- name: grants
-- Per week (weeks start on Monday): role assignments made (grants), assignments removed (revocations), and
-- time-bound assignments that reached their expiry while still held (expiries: they end with no event).
WITH weeks AS (
    SELECT unnest(generate_series(date_trunc('week', $start::TIMESTAMP), $end::TIMESTAMP, INTERVAL 7 DAY)) AS week
), made AS (
    SELECT date_trunc('week', "at") AS week,
           count(*) FILTER (WHERE type = 'RoleAssigned') AS grants,
           count(*) FILTER (WHERE type = 'RoleUnassigned') AS revocations
    FROM events
    WHERE position BETWEEN $first AND $last AND type IN ('RoleAssigned', 'RoleUnassigned')
    GROUP BY 1
), ended AS (
    SELECT date_trunc('week', expires_at) AS week, count(*) AS expiries
    FROM assignments
    WHERE expires_at BETWEEN $start::TIMESTAMP AND $end::TIMESTAMP AND (valid_to IS NULL OR valid_to >= expires_at)
    GROUP BY 1
)
SELECT w.week, coalesce(m.grants, 0) AS grants, coalesce(m.revocations, 0) AS revocations,
       coalesce(e.expiries, 0) AS expiries
FROM weeks w
LEFT JOIN made m ON m.week = w.week
LEFT JOIN ended e ON e.week = w.week
ORDER BY w.week;

-- name: secrets
-- Per day: reads of connector secrets reported as allowed and as denied, and how many of the allowed ones
-- were not authorised by any role at that instant (from the secrets audit), with who made them.
WITH days AS (
    SELECT unnest(generate_series(date_trunc('day', $start::TIMESTAMP), $end::TIMESTAMP, INTERVAL 1 DAY)) AS day
), reads AS (
    SELECT date_trunc('day', "at") AS day,
           count(*) FILTER (WHERE outcome = 'allowed') AS allowed,
           count(*) FILTER (WHERE outcome = 'denied') AS denied
    FROM events
    WHERE position BETWEEN $first AND $last AND type = 'ConnectorSecretAccessed'
    GROUP BY 1
), unauthorised AS (
    SELECT date_trunc('day', t) AS day, count(*) AS unauthorised,
           string_agg(who || ' read ' || connector || ' in ' || tenant || ' at ' || strftime(t, '%H:%M:%S'), '; '
                      ORDER BY t) AS detail
    FROM (SELECT *, CAST(replace(replace(CAST(since AS VARCHAR), 'T', ' '), 'Z', '') AS TIMESTAMP) AS t
          FROM secrets_audit WHERE finding = 'unauthorised-access')
    GROUP BY 1
)
SELECT d.day, coalesce(r.allowed, 0) AS allowed, coalesce(r.denied, 0) AS denied,
       coalesce(u.unauthorised, 0) AS unauthorised, u.detail
FROM days d
LEFT JOIN reads r ON r.day = d.day
LEFT JOIN unauthorised u ON u.day = d.day
ORDER BY d.day;
