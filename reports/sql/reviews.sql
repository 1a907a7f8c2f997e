-- reviews: the access review campaigns, read from two tables registered for this query only
-- (reports/review_audit.py: review_campaigns, review_items, re-derived from the chained events on
-- every run) and the warehouse's interval tables.
--   completion                   per campaign and reviewer: items, decided, open, kept, revoked, due and
--                                how many items are overdue (review material, not a finding)
--   overdue-item                 items still undecided when their campaign's due passed (decided after the
--                                due, or never decided and the due is before $at or the close); one row per
--                                campaign and reviewer
--   rubber-stamp                 10 consecutive decisions of one reviewer in one campaign within 30 seconds, of
--                                those recorded one by one (positions: every decision in such a run); and a batch
--                                (`review decide --batch`: one file recorded at once) of at least 10 decisions that
--                                were all keep, all gave the same reason, or of which at least 10 were recorded
--                                within 30 seconds of their items being sent to the reviewer (start or
--                                reassignment), the detail saying which (positions: the batch's decisions)
--   all-keep                     a reviewer who decided at least 10 items of a campaign and kept every one
--   self-review                  a decision about the decider's own access, or a grant or team membership
--                                they made
--                                (the CLI refuses all of these: only a history written otherwise has them)
--   closed-with-own-items-open   a close by a principal who then had undecided items about their own access or
--                                assigned to them to review; one row per campaign (positions: the close)
--   unauthorised-close           a close by neither the campaign's owner nor a holder of member:update in the
--                                organization at that instant (`review close` refuses it; an imported history
--                                may hold one)
--   revocation-not-carried-out   a revoke outcome of a campaign closed without auto-revoke whose access was
--                                still in force at the due (no due: at the close)
--   regranted-after-revoke       access a campaign revocation removed, granted again to the same principal
--                                (directly or through a team) within 30 days of the removal
--   privileged-not-reviewed      privileged access in a tenant (an action in $privileged) held at the period's end
--                                ($end, or $at if earlier), in force since 90 days before it, that no campaign
--                                closed in those 90 days reviewed (same principal, role and tenant); one row per
--                                principal, naming each role and tenant
-- Campaigns started or closed in [$start, $end] are covered; what happened after $at is not yet known
-- (a later decision, close or removal counts as not there).
-- Parameters: $at, $start, $end (TIMESTAMP), $privileged (VARCHAR[]).
WITH campaigns AS (
    SELECT c.*,
           CASE WHEN c.closed_at <= $at::TIMESTAMP THEN c.closed_at END AS closed,
           CASE WHEN c.closed_at <= $at::TIMESTAMP THEN c.close_position END AS closed_position,
           CASE WHEN cardinality(c.tenants) = 1 THEN 'tenant:' || c.tenants[1] ELSE 'organization' END AS scope
    FROM review_campaigns c
    WHERE c.started_at <= $at::TIMESTAMP
      AND ((c.started_at >= $start::TIMESTAMP AND c.started_at <= $end::TIMESTAMP)
           OR (c.closed_at >= $start::TIMESTAMP AND c.closed_at <= $end::TIMESTAMP AND c.closed_at <= $at::TIMESTAMP))
), removals AS (
    -- A removal is credited to an item only if the event at its position takes away exactly the item's access:
    -- its assignment (held by the team, for an item through a team), its team membership or team, or its tenant.
    SELECT i.campaign, i.item
    FROM review_items i
    JOIN events e ON e.position = i.removal_position AND e."at" = i.removal_at
    WHERE (e.type = 'RoleUnassigned' AND e.role = i.role AND e.principal = coalesce('team:' || i.via, i.principal)
           AND e.tenant IS NOT DISTINCT FROM i.tenant AND e.resource IS NOT DISTINCT FROM i.resource)
       OR (e.type = 'TeamMemberRemoved' AND e.team = i.via AND e.member = i.principal)
       OR (e.type = 'TeamDeleted' AND e.team = i.via)
       OR (e.type = 'TenantDeleted' AND e.tenant = i.tenant)
), items AS (
    SELECT i.campaign, i.item, i.principal, i.role, i.tenant, i.resource, i.via, i.expires_at, i.reviewer,
           i.decided_by, i.granted_by, i.added_by, i.batch, i.batch_sha256, i.sent_at, i.reason,
           CASE WHEN i.decided_at <= $at::TIMESTAMP THEN i.decision END AS decision,
           CASE WHEN i.decided_at <= $at::TIMESTAMP THEN i.decided_at END AS decided_at,
           CASE WHEN i.decided_at <= $at::TIMESTAMP THEN i.decision_position END AS decision_position,
           CASE WHEN c.closed IS NOT NULL THEN i.outcome END AS outcome,
           CASE WHEN i.removal_at <= $at::TIMESTAMP AND r.item IS NOT NULL THEN i.removal_at END AS removal_at,
           CASE WHEN i.removal_at <= $at::TIMESTAMP AND r.item IS NOT NULL THEN i.removal_position END
               AS removal_position,
           'role ' || i.role || coalesce(' on ' || i.resource, '') || coalesce(' via team ' || i.via, '') AS access,
           c.started_at, c.start_position, c.as_of_position, c.due, c.closed, c.closed_position, c.auto_revoke,
           c.closed_by, c.undecided,
           c.due IS NOT NULL AND c.due < coalesce(c.closed, $at::TIMESTAMP)
               AND (i.decided_at IS NULL OR i.decided_at > c.due) AS overdue
    FROM review_items i
    JOIN campaigns c ON c.campaign = i.campaign
    LEFT JOIN removals r ON r.campaign = i.campaign AND r.item = i.item
), completion AS (
    SELECT 'completion' AS finding, i.reviewer AS who,
           CASE WHEN count(DISTINCT i.tenant) = 1 THEN 'tenant:' || min(i.tenant) ELSE 'organization' END AS "where",
           count(*) || CASE WHEN count(*) = 1 THEN ' item, ' ELSE ' items, ' END || count(i.decision) || ' decided'
               AS what, i.campaign, i.reviewer,
           min(i.started_at) AS since,
           CASE WHEN min(i.closed) IS NOT NULL THEN 'closed ' || iso(min(i.closed))
                WHEN min(i.due) IS NOT NULL THEN 'open, due ' || iso(min(i.due)) ELSE 'open, no due date' END
               || CASE WHEN count(*) FILTER (WHERE i.overdue) > 0
                       THEN '; ' || count(*) FILTER (WHERE i.overdue) || ' overdue' ELSE '' END AS detail,
           count(*) AS items, count(i.decision) AS decided, count(*) - count(i.decision) AS "open",
           count(*) FILTER (WHERE i.decision = 'keep') AS kept,
           count(*) FILTER (WHERE i.decision = 'revoke') AS revoked,
           count(*) FILTER (WHERE i.overdue) AS overdue, min(i.due) AS due, NULL::BIGINT[] AS item_numbers,
           list_sort(list_distinct(list_filter(
               flatten([[min(i.start_position)], list(i.decision_position), [min(i.closed_position)]]),
               lambda x: x IS NOT NULL))) AS positions
    FROM items i
    GROUP BY i.campaign, i.reviewer
), overdue AS (
    SELECT 'overdue-item' AS finding, i.reviewer AS who,
           CASE WHEN count(DISTINCT i.tenant) = 1 THEN 'tenant:' || min(i.tenant) ELSE 'organization' END AS "where",
           count(*) || CASE WHEN count(*) = 1 THEN ' item' ELSE ' items' END || ' overdue' AS what,
           i.campaign, i.reviewer, min(i.due) AS since,
           concat_ws('; ',
               'due ' || iso(min(i.due)),
               'decided late: '
                   || string_agg(i.item::VARCHAR, ', ' ORDER BY i.item) FILTER (WHERE i.decision IS NOT NULL),
               'never decided: ' || string_agg(i.item::VARCHAR, ', ' ORDER BY i.item) FILTER (WHERE i.decision IS NULL)
                   || CASE WHEN min(i.closed) IS NOT NULL THEN ' (closed ' || iso(min(i.closed)) || ')'
                           ELSE ' (still open at ' || iso($at::TIMESTAMP) || ')' END) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, min(i.due) AS due,
           list(i.item ORDER BY i.item) AS item_numbers,
           list_sort(list_distinct(list_filter(
               flatten([[min(i.start_position)], list(i.decision_position), [min(i.closed_position)]]),
               lambda x: x IS NOT NULL))) AS positions
    FROM items i
    WHERE i.overdue
    GROUP BY i.campaign, i.reviewer
), decisions AS (
    SELECT i.* FROM items i WHERE i.decision_position IS NOT NULL
), singles AS (
    -- A batch's decisions share one instant by construction: the run of 10 is judged among the others.
    SELECT d.*, row_number() OVER w AS n, lead(d.decided_at, 9) OVER w AS tenth_at
    FROM decisions d
    WHERE d.batch IS NULL
    WINDOW w AS (PARTITION BY d.campaign, d.decided_by ORDER BY d.decision_position)
), bursts AS (
    SELECT campaign, decided_by, n FROM singles WHERE tenth_at - decided_at <= INTERVAL 30 SECOND
), stamped AS (
    SELECT DISTINCT d.campaign, d.decided_by, d.item, d.tenant, d.decided_at, d.decision_position
    FROM singles d
    JOIN bursts b ON b.campaign = d.campaign AND b.decided_by = d.decided_by AND d.n BETWEEN b.n AND b.n + 9
), batches AS (
    SELECT d.campaign, d.decided_by, d.batch, min(d.batch_sha256) AS batch_sha256, count(*) AS decisions,
           min(d.decided_at) AS decided_at, bool_and(d.decision = 'keep') AS all_keep,
           count(DISTINCT coalesce(d.reason, '')) = 1 AS same_reason,
           count(*) FILTER (WHERE d.decided_at - d.sent_at <= INTERVAL 30 SECOND) AS quick,
           CASE WHEN count(DISTINCT d.tenant) = 1 THEN 'tenant:' || min(d.tenant) ELSE 'organization' END AS "where",
           list(d.item ORDER BY d.item) AS item_numbers,
           list(d.decision_position ORDER BY d.decision_position) AS positions
    FROM decisions d
    WHERE d.batch IS NOT NULL
    GROUP BY d.campaign, d.decided_by, d.batch
    HAVING count(*) >= 10
), batch_stamp AS (
    SELECT 'rubber-stamp' AS finding, b.decided_by AS who, b."where",
           'a batch of ' || b.decisions || ' decisions' AS what, b.campaign, b.decided_by AS reviewer,
           b.decided_at AS since,
           'batch ' || b.batch || ' (file SHA-256 ' || b.batch_sha256 || '), ' || b.decisions
               || ' decisions recorded at ' || iso(b.decided_at) || ': '
               || concat_ws('; ',
                    CASE WHEN b.all_keep THEN 'all keep' END,
                    CASE WHEN b.same_reason THEN 'every reason identical' END,
                    CASE WHEN b.quick >= 10 THEN b.quick || ' decided within 30 seconds of their items being sent'
                    END) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due,
           b.item_numbers, b.positions
    FROM batches b
    WHERE b.all_keep OR b.same_reason OR b.quick >= 10
), rubber_stamp AS (
    SELECT 'rubber-stamp' AS finding, s.decided_by AS who,
           CASE WHEN count(DISTINCT s.tenant) = 1 THEN 'tenant:' || min(s.tenant) ELSE 'organization' END AS "where",
           count(*) || ' decisions' AS what, s.campaign, s.decided_by AS reviewer, min(s.decided_at) AS since,
           count(*) || ' decisions between ' || iso(min(s.decided_at)) || ' and ' || iso(max(s.decided_at))
               || ', at least 10 of them within 30 seconds' AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due,
           list(s.item ORDER BY s.item) AS item_numbers,
           list(s.decision_position ORDER BY s.decision_position) AS positions
    FROM stamped s
    GROUP BY s.campaign, s.decided_by
), all_keep AS (
    SELECT 'all-keep' AS finding, d.decided_by AS who,
           CASE WHEN count(DISTINCT d.tenant) = 1 THEN 'tenant:' || min(d.tenant) ELSE 'organization' END AS "where",
           count(*) || ' decisions, all keep' AS what, d.campaign, d.decided_by AS reviewer, min(d.decided_at) AS since,
           'kept every one of the ' || count(*) || ' items they decided, from ' || iso(min(d.decided_at)) || ' to '
               || iso(max(d.decided_at)) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due,
           list(d.item ORDER BY d.item) AS item_numbers,
           list(d.decision_position ORDER BY d.decision_position) AS positions
    FROM decisions d
    GROUP BY d.campaign, d.decided_by
    HAVING count(*) >= 10 AND bool_and(d.decision = 'keep')
), sources AS (
    -- The assignment (and team membership) each item stood on at the campaign's population position.
    SELECT d.*,
           (SELECT max(g.from_position) FROM assignments g
            WHERE g.role = d.role AND g.principal = coalesce('team:' || d.via, d.principal)
              AND g.tenant IS NOT DISTINCT FROM d.tenant AND g.resource IS NOT DISTINCT FROM d.resource
              AND g.from_position <= d.as_of_position) AS grant_position,
           (SELECT max(m.from_position) FROM memberships m
            WHERE m.team = d.via AND m.member = d.principal AND m.from_position <= d.as_of_position) AS member_position
    FROM decisions d
), self_review AS (
    SELECT 'self-review' AS finding, s.decided_by AS who, 'tenant:' || s.tenant AS "where",
           'item ' || s.item || ': ' || s.principal || ', ' || s.access AS what, s.campaign, s.decided_by AS reviewer,
           s.decided_at AS since,
           concat_ws('; ',
               CASE WHEN s.decided_by = s.principal THEN 'decided (' || s.decision || ') their own access' END,
               CASE WHEN s.decided_by = s.granted_by THEN 'decided (' || s.decision || ') a grant they made' END,
               CASE WHEN s.decided_by = s.added_by
                    THEN 'decided (' || s.decision || ') a team membership they added' END) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due, [s.item] AS item_numbers,
           list_sort(list_distinct(list_filter(
               [s.decision_position,
                CASE WHEN s.decided_by = s.granted_by THEN s.grant_position END,
                CASE WHEN s.decided_by = s.added_by THEN s.member_position END],
               lambda x: x IS NOT NULL))) AS positions
    FROM sources s
    WHERE s.decided_by = s.principal OR s.decided_by = s.granted_by OR s.decided_by = s.added_by
), own_open AS (
    SELECT 'closed-with-own-items-open' AS finding, i.closed_by AS who,
           CASE WHEN count(DISTINCT i.tenant) = 1 THEN 'tenant:' || min(i.tenant) ELSE 'organization' END AS "where",
           count(*) || ' own undecided ' || CASE WHEN count(*) = 1 THEN 'item' ELSE 'items' END || ' at the close'
               AS what, i.campaign, i.closed_by AS reviewer, min(i.closed) AS since,
           concat_ws('; ',
               'closed at ' || iso(min(i.closed)) || ' (position ' || min(i.closed_position) || ')',
               'about their own access: '
                   || string_agg(i.item::VARCHAR, ', ' ORDER BY i.item) FILTER (WHERE i.principal = i.closed_by),
               'assigned to them: ' || string_agg(i.item::VARCHAR, ', ' ORDER BY i.item)
                   FILTER (WHERE i.principal <> i.closed_by),
               'undecided items ' || CASE min(i.undecided) WHEN 'revoke' THEN 'revoked' WHEN 'keep' THEN 'kept'
                                                          ELSE 'left as exceptions' END) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due,
           list(i.item ORDER BY i.item) AS item_numbers, [min(i.closed_position)] AS positions
    FROM items i
    WHERE i.closed IS NOT NULL AND i.decision IS NULL AND (i.principal = i.closed_by OR i.reviewer = i.closed_by)
    GROUP BY i.campaign, i.closed_by
), unauthorised_close AS (
    SELECT 'unauthorised-close' AS finding, c.closed_by AS who, c.scope AS "where", 'closed the campaign' AS what,
           c.campaign, c.closed_by AS reviewer, c.closed AS since, c.close_refused AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due, NULL::BIGINT[] AS item_numbers,
           [c.closed_position] AS positions
    FROM campaigns c
    WHERE c.closed IS NOT NULL AND c.close_refused IS NOT NULL
), revoked AS (
    SELECT i.*, coalesce(i.due, i.closed) AS deadline
    FROM items i
    WHERE i.outcome = 'revoke'
), not_carried_out AS (
    SELECT 'revocation-not-carried-out' AS finding, r.principal AS who, 'tenant:' || r.tenant AS "where",
           r.access AS what, r.campaign, coalesce(r.decided_by, r.reviewer) AS reviewer, r.deadline AS since,
           'item ' || r.item || ' revoked' || CASE WHEN r.decision IS NULL THEN ' (undecided at the close)' ELSE '' END
               || ', the campaign closed without auto-revoke; '
               || CASE WHEN r.removal_at IS NULL
                       THEN 'never removed: still in force at ' || iso($at::TIMESTAMP)
                       ELSE 'removed late, at ' || iso(r.removal_at) || ' (position ' || r.removal_position || ')' END
               || ', ' || CASE WHEN r.due IS NOT NULL THEN 'due ' ELSE 'closed ' END || iso(r.deadline) AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, r.due, [r.item] AS item_numbers,
           list_sort(list_filter([r.decision_position, r.closed_position, r.removal_position],
                                 lambda x: x IS NOT NULL)) AS positions
    FROM revoked r
    WHERE NOT r.auto_revoke AND r.deadline <= $at::TIMESTAMP
      AND (r.removal_at IS NULL OR r.removal_at > r.deadline)
      AND (r.expires_at IS NULL OR r.expires_at > r.deadline)
), regrants AS (
    -- A new assignment of the same role, tenant and resource to the principal or to a team they are in,
    -- or their joining a team holding it, after the removal and within 30 days of it.
    SELECT r.campaign, r.item, g.valid_from AS regranted_at, g.from_position AS regrant_position, g.actor,
           CASE WHEN g.principal = r.principal THEN 'assigned again' ELSE 'assigned again to ' || g.principal END AS how
    FROM revoked r
    JOIN assignments g ON g.role = r.role AND g.tenant IS NOT DISTINCT FROM r.tenant
        AND g.resource IS NOT DISTINCT FROM r.resource AND g.from_position > r.removal_position
        AND g.valid_from <= r.removal_at + INTERVAL 30 DAY AND g.valid_from <= $at::TIMESTAMP
    WHERE g.principal = r.principal
       OR EXISTS (SELECT 1 FROM memberships m WHERE 'team:' || m.team = g.principal AND m.member = r.principal
                  AND holds_at(m.valid_from, m.valid_to, g.valid_from))
    UNION ALL
    SELECT r.campaign, r.item, m.valid_from, m.from_position, m.actor, 'added to team ' || m.team
    FROM revoked r
    JOIN memberships m ON m.member = r.principal AND m.from_position > r.removal_position
        AND m.valid_from <= r.removal_at + INTERVAL 30 DAY AND m.valid_from <= $at::TIMESTAMP
    WHERE EXISTS (SELECT 1 FROM assignments g WHERE g.principal = 'team:' || m.team AND g.role = r.role
                  AND g.tenant IS NOT DISTINCT FROM r.tenant AND g.resource IS NOT DISTINCT FROM r.resource
                  AND holds_at(g.valid_from, g.valid_to, m.valid_from))
), first_regrant AS (
    SELECT campaign, item, min(regrant_position) AS regrant_position,
           arg_min(regranted_at, regrant_position) AS regranted_at, arg_min(actor, regrant_position) AS actor,
           arg_min(how, regrant_position) AS how
    FROM regrants
    GROUP BY campaign, item
), regranted AS (
    SELECT 'regranted-after-revoke' AS finding, r.principal AS who, 'tenant:' || r.tenant AS "where",
           r.access AS what, r.campaign, coalesce(r.decided_by, r.reviewer) AS reviewer, f.regranted_at AS since,
           'item ' || r.item || ' revoked, removed at ' || iso(r.removal_at) || ' (position ' || r.removal_position
               || '); ' || f.how || ' by ' || f.actor || ' at ' || iso(f.regranted_at) || ' (position '
               || f.regrant_position || ')' AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due, [r.item] AS item_numbers,
           list_sort(list_filter([r.decision_position, r.removal_position, f.regrant_position],
                                 lambda x: x IS NOT NULL)) AS positions
    FROM revoked r
    JOIN first_regrant f ON f.campaign = r.campaign AND f.item = r.item
), privileged AS (
    -- Judged at the period's end (or $at, if the period is not over), so a finding means the same in any period.
    SELECT principal, tenant, role, min(since) AS since,
           list_distinct(flatten(list(list_filter([assignment_position, member_position], lambda x: x IS NOT NULL))))
               AS positions
    FROM effective_at(least($at::TIMESTAMP, $end::TIMESTAMP))
    WHERE tenant IS NOT NULL AND list_contains($privileged::VARCHAR[], permission_action)
    GROUP BY principal, tenant, role
    HAVING min(since) <= least($at::TIMESTAMP, $end::TIMESTAMP) - INTERVAL 90 DAY
), reviewed AS (
    -- Every campaign closed in the 90 days before the period's end counts, whenever it started.
    SELECT DISTINCT i.principal, i.tenant, i.role
    FROM review_items i
    JOIN review_campaigns c ON c.campaign = i.campaign
    WHERE c.closed_at <= least($at::TIMESTAMP, $end::TIMESTAMP)
      AND c.closed_at > least($at::TIMESTAMP, $end::TIMESTAMP) - INTERVAL 90 DAY
), not_reviewed AS (
    -- One row per principal, however many roles and tenants.
    SELECT 'privileged-not-reviewed' AS finding, p.principal AS who,
           CASE WHEN count(DISTINCT p.tenant) = 1 THEN 'tenant:' || min(p.tenant) ELSE 'organization' END AS "where",
           string_agg(p.role || ' in ' || p.tenant, ', ' ORDER BY p.tenant, p.role) AS what,
           NULL::VARCHAR AS campaign, NULL::VARCHAR AS reviewer, min(p.since) AS since,
           'privileged since ' || iso(min(p.since)) || '; no campaign closed between '
               || iso(least($at::TIMESTAMP, $end::TIMESTAMP) - INTERVAL 90 DAY) || ' and '
               || iso(least($at::TIMESTAMP, $end::TIMESTAMP)) || ' reviewed it' AS detail,
           NULL::BIGINT AS items, NULL::BIGINT AS decided, NULL::BIGINT AS "open", NULL::BIGINT AS kept,
           NULL::BIGINT AS revoked, NULL::BIGINT AS overdue, NULL::TIMESTAMP AS due, NULL::BIGINT[] AS item_numbers,
           list_sort(list_distinct(flatten(list(p.positions)))) AS positions
    FROM privileged p
    WHERE NOT EXISTS (SELECT 1 FROM reviewed r WHERE r.principal = p.principal AND r.tenant = p.tenant
                      AND r.role = p.role)
    GROUP BY p.principal
)
SELECT finding, who, "where", what, campaign, reviewer, since, detail, items, decided, "open", kept, revoked, overdue,
       due, item_numbers, positions
FROM (
    SELECT * FROM completion
    UNION ALL SELECT * FROM overdue
    UNION ALL SELECT * FROM rubber_stamp
    UNION ALL SELECT * FROM batch_stamp
    UNION ALL SELECT * FROM all_keep
    UNION ALL SELECT * FROM self_review
    UNION ALL SELECT * FROM own_open
    UNION ALL SELECT * FROM unauthorised_close
    UNION ALL SELECT * FROM not_carried_out
    UNION ALL SELECT * FROM regranted
    UNION ALL SELECT * FROM not_reviewed
)
ORDER BY CASE finding WHEN 'self-review' THEN 1 WHEN 'unauthorised-close' THEN 1
                      WHEN 'closed-with-own-items-open' THEN 1 WHEN 'revocation-not-carried-out' THEN 2
                      WHEN 'regranted-after-revoke' THEN 3 WHEN 'rubber-stamp' THEN 4 WHEN 'all-keep' THEN 5
                      WHEN 'overdue-item' THEN 6 WHEN 'privileged-not-reviewed' THEN 7 ELSE 8 END,
         campaign NULLS LAST, since, who, "where", what, positions, detail
