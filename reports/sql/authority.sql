-- authority: every change with $start <= at <= $end whose actor was not allowed to make it (DESIGN section 3,
-- "Authority of a change"), judged on the ledger's state just before the event: the facts opened by an
-- earlier position and not closed by one (a fact holds before position p when from_position < p and
-- (to_position IS NULL OR p <= to_position)), expiry by the event's time.
-- The rules come from the authority rules file, installed as the temporary table authority_rules (event,
-- permission, permission_type, permission_action, in_organization, in_tenant). A change needs the rule's
-- permission in the organization (a rule with "organization", or an event naming no tenant) or in the tenant
-- the event names (a rule with "tenant"), from an assignment held by the actor directly or through a team it
-- was in, unexpired, of a role whose effective permissions then covered it; an assignment narrowed to a
-- resource counts only when narrowed to permission_type/CONNECTOR of a connector event. The actor must be an
-- active user or service account (or a live team); `system` is exempt; usage and review events are not changes.
--   unauthorised-change        the actor was active but held no such permission
--   change-by-inactive-actor   the actor was deactivated, or not recorded in the ledger, at that instant
--   self-triage                a finding accepted or suppressed (or a suppression rule added) by the principal it is
--                              about, or by the actor of a change that caused it: the ledger refuses one when it holds
--                              that change already, but an import can bring both in at once
-- The rows of the triage decisions are those no audit honours: reports/authority.py refused_decisions runs this
-- query with only the decisions' rules installed.
-- Parameters: $start, $end (TIMESTAMP).
WITH changes AS MATERIALIZED (
    SELECT e.position, e."at", e.actor, e.type, e.reason, e.tenant AS event_tenant, e.role, e.subject, e.connector,
           e.resource, e.team, e.finding, e.rule AS decision_rule, e.audit, e.kind, e.principal,
           r.permission, r.permission_type, r.permission_action,
           r.in_organization OR e.tenant IS NULL AS in_org,
           CASE WHEN r.in_tenant THEN e.tenant END AS tenant,
           CASE WHEN e.connector IS NOT NULL THEN r.permission_type || '/' || e.connector END AS needed_resource
    FROM events e
    JOIN authority_rules r ON r.event = e.type
    WHERE e.actor <> 'system' AND e."at" >= $start::TIMESTAMP AND e."at" <= $end::TIMESTAMP
), active AS MATERIALIZED (
    -- Changes whose actor was an active user or service account, or a live team, just before them.
    SELECT c.position
    FROM changes c
    JOIN principal_status s ON s.principal = c.actor AND s.status = 'active'
        AND s.from_position < c.position AND (s.to_position IS NULL OR c.position <= s.to_position)
    UNION ALL
    SELECT c.position
    FROM changes c
    JOIN teams t ON c.actor = 'team:' || t.team
        AND t.from_position < c.position AND (t.to_position IS NULL OR c.position <= t.to_position)
), holders AS MATERIALIZED (
    SELECT c.position, c.actor AS holder
    FROM changes c SEMI JOIN active a ON a.position = c.position
    UNION ALL
    SELECT c.position, 'team:' || m.team
    FROM changes c
    SEMI JOIN active a ON a.position = c.position
    JOIN memberships m ON m.member = c.actor
        AND m.from_position < c.position AND (m.to_position IS NULL OR c.position <= m.to_position)
    JOIN teams t ON t.team = m.team
        AND t.from_position < c.position AND (t.to_position IS NULL OR c.position <= t.to_position)
), covering AS MATERIALIZED (
    -- Each role's effective permissions that cover a permission some rule asks for (a few hundred rows).
    SELECT rg.role, n.permission, rg.permission_type, rg.from_position, rg.to_position
    FROM role_grants rg
    JOIN (SELECT DISTINCT permission, permission_type, permission_action FROM authority_rules) n
        ON covers(rg.permission_type, rg.permission_action, n.permission_type, n.permission_action)
), powers AS MATERIALIZED (
    -- The assignments of those roles, each with the asked-for permission it can give (narrowed ones only
    -- through a permission of the type they are narrowed to).
    SELECT g.principal, g.tenant, g.resource, g.expires_at, g.from_position, g.to_position, k.permission,
           k.from_position AS grant_from, k.to_position AS grant_to
    FROM assignments g
    JOIN covering k ON k.role = g.role
    WHERE g.resource IS NULL OR k.permission_type IN ('*', split_part(g.resource, '/', 1))
), authorised AS (
    SELECT DISTINCT c.position
    FROM changes c
    JOIN holders h ON h.position = c.position
    JOIN powers g ON g.principal = h.holder AND g.permission = c.permission
    LEFT JOIN tenants tn ON tn.tenant = g.tenant
    WHERE g.from_position < c.position AND (g.to_position IS NULL OR c.position <= g.to_position)
      AND g.grant_from < c.position AND (g.grant_to IS NULL OR c.position <= g.grant_to)
      AND (g.expires_at IS NULL OR c."at" < g.expires_at)
      AND (g.resource IS NULL OR g.resource = c.needed_resource)
      AND ((g.tenant IS NULL AND c.in_org) OR g.tenant = c.tenant)
      AND (g.tenant IS NULL
           OR (tn.from_position < c.position AND (tn.to_position IS NULL OR c.position <= tn.to_position)))
), left_before AS (
    -- For an inactive actor: the deactivation in force just before the change, if that is why.
    SELECT c.position, arg_max(s.valid_from, s.from_position) AS since, max(s.from_position) AS status_position
    FROM changes c
    JOIN principal_status s ON s.principal = c.actor AND s.status = 'deactivated'
        AND s.from_position < c.position AND (s.to_position IS NULL OR c.position <= s.to_position)
    GROUP BY c.position
), decisions AS MATERIALIZED (
    SELECT d.position, d."at", d.actor, d.type, d.reason, d.finding, d.rule, d.audit, d.kind, d.principal, d.scope,
           d.tenant, d.cause
    FROM events d
    WHERE d.type IN ('FindingAccepted', 'FindingSuppressed', 'SuppressionRuleAdded') AND d.actor <> 'system'
      AND d."at" >= $start::TIMESTAMP AND d."at" <= $end::TIMESTAMP
), causes AS (
    SELECT position AS decision, CAST(unnest(string_split(substr(cause, 3), ',')) AS BIGINT) AS cause
    FROM decisions
    WHERE cause LIKE 'p:%'
), own_causes AS (
    -- The first change behind each decision that the decision's own actor made.
    SELECT k.decision, min(c.position) AS position, arg_min(c.type, c.position) AS type
    FROM causes k
    JOIN decisions d ON d.position = k.decision
    JOIN events c ON c.position = k.cause AND c.actor = d.actor
    GROUP BY k.decision
), self_triage AS (
    SELECT 'self-triage' AS finding,
           d.actor AS who,
           coalesce(d.scope, 'tenant:' || d.tenant, 'organization') AS "where",
           d.type || ' ' || coalesce(d.finding, d.rule) || ' (' || d.audit || ' ' || d.kind
               || coalesce(' of ' || d.principal, '') || ')' AS what,
           d.type AS event,
           CAST(NULL AS VARCHAR) AS permission,
           'a decision by someone neither its principal nor the actor of its cause' AS needed,
           d."at" AS since,
           d.position,
           CASE WHEN o.decision IS NOT NULL
                THEN d.actor || ' made the change that caused it (position ' || o.position || ', ' || o.type || ')'
                ELSE d.actor || ' is the principal the finding is about' END AS detail,
           d.reason,
           [d.position] AS positions
    FROM decisions d
    LEFT JOIN own_causes o ON o.decision = d.position
    WHERE o.decision IS NOT NULL OR d.principal = d.actor
), unauthorised AS (
SELECT CASE WHEN a.position IS NULL THEN 'change-by-inactive-actor' ELSE 'unauthorised-change' END AS finding,
       c.actor AS who,
       CASE WHEN c.event_tenant IS NULL THEN 'organization' ELSE 'tenant:' || c.event_tenant END AS "where",
       c.type || CASE
           WHEN c.type = 'RoleAssigned' THEN ' ' || c.role || ' to ' || c.subject
           WHEN c.type = 'RoleUnassigned' THEN ' ' || c.role || ' from ' || c.subject
           WHEN c.type IN ('TeamMemberAdded', 'TeamMemberRemoved') THEN ' ' || c.subject || ' team:' || c.team
           WHEN c.type IN ('FindingAccepted', 'FindingSuppressed', 'SuppressionRuleAdded')
               THEN ' ' || coalesce(c.finding, c.decision_rule) || ' (' || c.audit || ' ' || c.kind
                   || coalesce(' of ' || c.principal, '') || ')'
           WHEN c.type = 'FindingReopened' THEN ' ' || coalesce(c.finding, c.decision_rule)
           WHEN c.type LIKE 'Connector%' THEN ' ' || c.connector
           WHEN c.type LIKE 'Role%' THEN ' ' || c.role
           WHEN c.type LIKE 'Tenant%' THEN ' ' || c.event_tenant
           ELSE ' ' || coalesce(c.subject, '')
       END || CASE WHEN c.type NOT LIKE 'Tenant%' THEN coalesce(' in tenant ' || c.event_tenant, '') ELSE '' END
           || coalesce(' on ' || c.resource, '') AS what,
       c.type AS event,
       c.permission,
       c.permission || ' in ' || concat_ws(' or in ', CASE WHEN c.in_org THEN 'the organization' END,
                                            CASE WHEN c.tenant IS NOT NULL THEN 'tenant ' || c.tenant END) AS needed,
       c."at" AS since,
       c.position,
       CASE WHEN a.position IS NOT NULL THEN c.actor || ' held no permission covering ' || c.permission || ' there'
            WHEN l.position IS NOT NULL THEN c.actor || ' was deactivated at ' || iso(l.since) || ' (position '
                || l.status_position || ')'
            ELSE c.actor || ' is not recorded in the ledger at that instant' END AS detail,
       c.reason,
       [c.position] AS positions
FROM changes c
LEFT JOIN (SELECT DISTINCT position FROM active) a ON a.position = c.position
LEFT JOIN left_before l ON l.position = c.position
LEFT JOIN authorised ok ON ok.position = c.position
WHERE ok.position IS NULL
)
SELECT * FROM unauthorised
UNION ALL
SELECT * FROM self_triage
ORDER BY position, finding
