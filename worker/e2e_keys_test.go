//go:build !js

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/worker/internal/edgetest"
)

// TestE2EKeys runs the compiled worker in workerd on two isolates (w0, w1)
// over one D1 with CALLER_CACHE_TTL_MS = 1500: a second key of a caller
// spends the caller's balance; a revoked key fails at once on the isolate
// that revoked it and, on the other, no later than the cache TTL after the
// revocation; a rotated key's old secret likewise; GET /v1/usage equals the
// ledger read from the D1 file; the paid fast path stays at 2 D1 round trips
// with a warm cache (3 with a cold one: the key lookup).
func TestE2EKeys(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	up := newUpstream(t)
	edge := edgetest.Start(t, edgetest.Options{
		Mode:          edgetest.ModePersistent, // a runtime per request has no cache to bound
		Workers:       []string{"w0", "w1"},
		MigrationsDir: "store/sqlstore/migrations",
		Vars: map[string]string{"TOOLS": up.tools(), "ADMIN_TOKEN": e2eAdminToken,
			"CALLER_CACHE_TTL_MS": fmt.Sprint(ttl.Milliseconds())},
	})
	w0, w1 := edge.URL("w0"), edge.URL("w1")
	db := edge.OpenD1(t)
	admin := client{t: t, base: w0, key: e2eAdminToken}
	kate := newCaller(t, w0, "kate", "1.00")

	res, body := admin.do(http.MethodPost, "/v1/admin/callers/kate/keys", []byte(`{"name":"agent"}`), nil)
	require.Equal(t, http.StatusCreated, res.StatusCode, string(body))
	var key struct{ ID, Key string }
	require.NoError(t, json.Unmarshal(body, &key))
	agent0, agent1 := client{t: t, base: w0, key: key.Key}, client{t: t, base: w1, key: key.Key}

	// Cold cache on w0: the lookup is one more round trip; then 2.
	mark := edge.LogMark()
	for i, c := range []client{agent0, agent0, agent1} {
		res, body := c.call("echo", fmt.Sprint("k", i), `{}`)
		require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	}
	// The calls are sequential, so their log lines come in order (keys are logged hashed).
	var trips []float64
	require.Eventually(t, func() bool {
		trips = nil
		for _, l := range callLogs(edge.LogsSince(mark)) {
			if l["caller"] == "kate" && l["outcome"] == "executed" {
				trips = append(trips, l["roundTrips"].(float64))
			}
		}
		return len(trips) == 3
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, []float64{3, 2, 3}, trips, "cold (w0, then w1): lookup + claim/charge + complete; warm: 2")
	t.Logf("D1 round trips per paid call: cold cache %v, warm cache %v", trips[0], trips[1])
	require.Equal(t, int64(85), checkLedger(t, db, "kate"), "the new key spends kate's balance")
	res, _ = kate.call("echo", "k3", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode, "the original key too")

	// Revoke on w0, with the key cached on both isolates.
	res, _ = agent1.do(http.MethodGet, "/v1/balance", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	res, body = admin.do(http.MethodPost, "/v1/admin/callers/kate/keys/"+key.ID+"/revoke", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	revoked := time.Now()
	res, _ = agent0.call("echo", "k4", `{}`)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "at once on the isolate that revoked it")
	res, _ = agent1.do(http.MethodGet, "/v1/balance", nil, nil)
	t.Logf("w1 right after the revocation: %d (200 while its cache entry lives)", res.StatusCode)
	time.Sleep(time.Until(revoked.Add(ttl + 100*time.Millisecond)))
	res, _ = agent1.call("echo", "k4", `{}`)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "on w1 within the cache TTL")
	res, _ = agent0.do(http.MethodGet, "/v1/balance", nil, nil)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
	require.Equal(t, int64(80), checkLedger(t, db, "kate"), "nothing charged to a revoked key")

	// Rotate the original key on w1: the old secret fails there at once,
	// and on w0 (which cached it) within the TTL; the new one works on both.
	res, _ = kate.do(http.MethodGet, "/v1/balance", nil, nil) // w0 caches the old secret
	require.Equal(t, http.StatusOK, res.StatusCode)
	res, body = client{t: t, base: w1, key: e2eAdminToken}.do(http.MethodPost, "/v1/admin/callers/kate/keys/"+store.OriginalKeyID+"/rotate", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	rotated := time.Now()
	var rot struct{ ID, Key string }
	require.NoError(t, json.Unmarshal(body, &rot))
	require.Equal(t, store.OriginalKeyID, rot.ID)
	res, _ = client{t: t, base: w1, key: kate.key}.do(http.MethodGet, "/v1/balance", nil, nil)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "the old secret, at once on w1")
	time.Sleep(time.Until(rotated.Add(ttl + 100*time.Millisecond)))
	res, _ = kate.do(http.MethodGet, "/v1/balance", nil, nil)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "the old secret on w0 within the TTL")
	res, _ = client{t: t, base: w0, key: rot.Key}.call("echo", "k5", `{}`)
	require.Equal(t, http.StatusOK, res.StatusCode, "the new secret")

	// Usage equals the ledger of the D1 file.
	res, body = client{t: t, base: w1, key: rot.Key}.do(http.MethodGet, "/v1/usage", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	type periods []struct {
		Period string
		Tools  []struct {
			Tool       string
			Calls      int64
			SpentMinor int64
		}
	}
	var u struct {
		Periods periods
		Keys    []struct {
			ID, Status string
			Periods    periods
		}
	}
	require.NoError(t, json.Unmarshal(body, &u))
	var spent int64
	require.NoError(t, db.QueryRow(`SELECT -coalesce(sum(amount), 0) FROM ledger_entries WHERE caller = 'kate' AND kind IN ('charge', 'refund')`).Scan(&spent))
	require.EqualValues(t, 25, spent)
	require.Len(t, u.Periods, 3)
	for _, p := range u.Periods {
		require.Len(t, p.Tools, 1, p.Period)
		require.Equal(t, "echo", p.Tools[0].Tool)
		require.Equal(t, spent, p.Tools[0].SpentMinor, p.Period)
		require.EqualValues(t, 5, p.Tools[0].Calls, p.Period)
	}
	require.Equal(t, int64(75), checkLedger(t, db, "kate"))

	// Per key: each key's spend equals the D1 ledger's entries of the key,
	// and its calls are its own (agent: k0-k2; k_original: k3, k5).
	rows, err := db.Query(`SELECT key_id, -sum(amount) FROM ledger_entries WHERE caller = 'kate' AND kind IN ('charge', 'refund') GROUP BY key_id`)
	require.NoError(t, err)
	perKey := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		require.NoError(t, rows.Scan(&id, &n))
		perKey[id] = n
	}
	require.NoError(t, rows.Close())
	require.Equal(t, map[string]int64{store.OriginalKeyID: 10, key.ID: 15}, perKey)
	require.Len(t, u.Keys, 2)
	require.Equal(t, []string{store.OriginalKeyID, key.ID}, []string{u.Keys[0].ID, u.Keys[1].ID})
	require.Equal(t, []string{"active", "revoked"}, []string{u.Keys[0].Status, u.Keys[1].Status})
	for i, calls := range []int64{2, 3} {
		for _, p := range u.Keys[i].Periods {
			require.Len(t, p.Tools, 1, p.Period)
			require.Equal(t, perKey[u.Keys[i].ID], p.Tools[0].SpentMinor, "%s %s", u.Keys[i].ID, p.Period)
			require.Equal(t, calls, p.Tools[0].Calls, "%s %s", u.Keys[i].ID, p.Period)
		}
	}
}
