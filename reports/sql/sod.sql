-- sod: principals holding both sides of a separation-of-duties rule at $at.
-- Rules come from the TOML rules file, installed as the temporary table sod_rules (rule, title,
-- description, left_permission, left_type, left_action, left_scope, right_*). A side is held when an
-- effective permission covers it (wildcards count), in the organization for organization resource
-- types, in a tenant for tenant types; two tenant sides conflict only within one tenant, an
-- organization side conflicts with a tenant side in every tenant.
-- Parameters: $at (TIMESTAMP).
WITH paths AS (
    SELECT * FROM effective_at($at::TIMESTAMP)
), sides AS (
    -- Each side under the four permission patterns that cover it, so paths match by equality.
    SELECT rule, 'left' AS side, left_permission AS wanted, left_scope AS scope, pattern
    FROM sod_rules, unnest([left_type || ':' || left_action, '*:' || left_action, left_type || ':*', '*:*']) AS u(pattern)
    UNION ALL
    SELECT rule, 'right', right_permission, right_scope, pattern
    FROM sod_rules, unnest([right_type || ':' || right_action, '*:' || right_action, right_type || ':*', '*:*']) AS u(pattern)
), held AS (
    SELECT rule, side, wanted, principal, tenant,
           min(since) AS since,
           list(DISTINCT path ORDER BY path) AS paths,
           flatten(list(positions)) AS positions
    FROM (
        SELECT s.rule, s.side, s.wanted, p.principal, p.tenant, p.since, p.positions,
               'role ' || p.role || coalesce(' via team:' || p.via_team, '') || coalesce(' on ' || p.resource_scope, '')
               || ' (' || p.permission || ')' AS path
        FROM sides s
        JOIN paths p ON p.permission = s.pattern AND (s.scope = 'organization') = (p.tenant IS NULL)
    )
    GROUP BY ALL
)
SELECT l.rule,
       r.title,
       l.principal AS who,
       CASE WHEN coalesce(l.tenant, rt.tenant) IS NULL THEN 'organization'
            ELSE 'tenant:' || coalesce(l.tenant, rt.tenant) END AS "where",
       l.wanted || ' + ' || rt.wanted AS what,
       coalesce(l.tenant, rt.tenant) AS tenant,
       greatest(l.since, rt.since) AS since,
       l.paths AS left_paths,
       rt.paths AS right_paths,
       list_sort(list_distinct(list_concat(l.positions, rt.positions))) AS positions,
       r.description
FROM held l
JOIN held rt ON rt.rule = l.rule AND rt.side = 'right' AND rt.principal = l.principal
    AND (coalesce(l.tenant, '') = coalesce(rt.tenant, '') OR (l.tenant IS NULL) <> (rt.tenant IS NULL))
JOIN sod_rules r ON r.rule = l.rule
WHERE l.side = 'left'
ORDER BY l.rule, who, tenant NULLS FIRST
