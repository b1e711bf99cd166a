package sqlstore

// quotaInvariantChecks are queries that return rows only when the quota
// invariant (see store/quota.go, 17-20) is broken.
var quotaInvariantChecks = []struct{ name, sql string }{
	{"quota usage equals its entries (takes - returns)", `
		SELECT q.caller || '/' || q.tool || '/' || q.window_start || ': used ' || q.used || ' entries ' ||
			coalesce(sum(CASE e.kind WHEN 'take' THEN 1 ELSE -1 END), 0)
		FROM quota_usage q LEFT JOIN quota_entries e
			ON e.caller = q.caller AND e.tool = q.tool AND e.window_start = q.window_start
		GROUP BY q.caller, q.tool, q.window_start
		HAVING q.used <> coalesce(sum(CASE e.kind WHEN 'take' THEN 1 ELSE -1 END), 0)`},
	{"every quota entry has its usage row", `
		SELECT e.reference FROM quota_entries e WHERE NOT EXISTS (SELECT 1 FROM quota_usage q
			WHERE q.caller = e.caller AND q.tool = e.tool AND q.window_start = e.window_start) LIMIT 1`},
	{"quota used_after is the running usage", `
		SELECT reference || ': used_after ' || used_after || ' running ' || running FROM (
			SELECT reference, used_after, sum(CASE kind WHEN 'take' THEN 1 ELSE -1 END)
				OVER (PARTITION BY caller, tool, window_start ORDER BY id) AS running
			FROM quota_entries) WHERE used_after <> running OR running < 0`},
	{"per key, quota takes and returns alternate (at most one unit)", `
		SELECT idem_key || ' (' || incarnation || '): ' || sum(kind = 'take') || ' takes, ' || sum(kind = 'return') || ' returns'
		FROM quota_entries GROUP BY idem_key, incarnation
		HAVING sum(kind = 'take') - sum(kind = 'return') NOT IN (0, 1)`},
	{"a record's quota state matches its entries", `
		SELECT r.key || ': quota ' || r.quota_state || ' net ' ||
			coalesce(sum(CASE e.kind WHEN 'take' THEN 1 WHEN 'return' THEN -1 END), 0)
		FROM idem_records r LEFT JOIN quota_entries e ON e.idem_key = r.key AND e.incarnation = r.incarnation
		GROUP BY r.key
		HAVING coalesce(sum(CASE e.kind WHEN 'take' THEN 1 WHEN 'return' THEN -1 END), 0) <> (r.quota_state = 'taken')`},
	{"no key holds a unit of quota and a charge", `
		SELECT key FROM idem_records WHERE quota_state = 'taken' AND charge_state = 'charged'`},
}
