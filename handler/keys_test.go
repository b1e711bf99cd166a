//go:build !js

package handler_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
)

// newKey creates a key of c through the admin API and returns its id and
// secret.
func (e *env) newKey(c caller, name string) caller {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v1/admin/callers/"+c.id+"/keys", adminToken, nil, fmt.Sprintf(`{"name": %q}`, name))
	require.Equal(e.t, http.StatusCreated, r.status, string(r.body))
	require.Equal(e.t, "no-store", r.header.Get("Cache-Control"))
	m := r.json(e.t)
	require.Equal(e.t, name, m["name"])
	require.Equal(e.t, "active", m["status"])
	require.Equal(e.t, c.id, m["caller"])
	return caller{id: c.id, key: m["key"].(string), keyID: m["id"].(string)}
}

// keys lists c's keys through the admin API, by id.
func (e *env) keys(c caller) map[string]map[string]any {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/admin/callers/"+c.id+"/keys", adminToken, nil, "")
	require.Equal(e.t, http.StatusOK, r.status, string(r.body))
	require.NotContains(e.t, string(r.body), "hash")
	out := map[string]map[string]any{}
	for _, k := range r.json(e.t)["keys"].([]any) {
		m := k.(map[string]any)
		require.NotContains(e.t, m, "key", "a secret is shown only once")
		out[m["id"].(string)] = m
	}
	return out
}

func TestKeysCreateListRevokeRotate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	ci := e.newKey(alice, "ci runner")
	require.NotEqual(t, alice.key, ci.key)

	// Both keys spend the one balance, and the paid fast path stays two
	// round trips once the key is cached.
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "a", `{}`).status)
	require.Equal(t, http.StatusOK, e.call(ci.key, "echo", "b", `{}`).status) // caches ci
	before := e.db.Count()
	require.Equal(t, http.StatusOK, e.call(ci.key, "echo", "c", `{}`).status)
	require.EqualValues(t, 2, e.db.Count()-before, "claim+charge, complete")
	require.EqualValues(t, 85, e.balance(alice))
	bal := e.do(http.MethodGet, "/v1/balance", ci.key, nil, "").json(t)
	require.Equal(t, "0.85", bal["balances"].([]any)[0].(map[string]any)["amount"])

	keys := e.keys(alice)
	require.Len(t, keys, 2)
	require.Equal(t, "original", keys[store.OriginalKeyID]["name"])
	require.Equal(t, "ci runner", keys[ci.keyID]["name"])
	require.NotNil(t, keys[ci.keyID]["lastUsedAt"])
	require.Nil(t, keys[ci.keyID]["revokedAt"])

	// Revoke: 401 at once on this gateway, though the key was cached;
	// the other key goes on; a second revoke changes nothing.
	rev := e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+ci.keyID+"/revoke", adminToken, nil, "")
	require.Equal(t, http.StatusOK, rev.status, string(rev.body))
	require.Equal(t, "revoked", rev.json(t)["status"])
	e.call(ci.key, "echo", "d", `{}`).problem(t, http.StatusUnauthorized, "unauthorized")
	e.do(http.MethodGet, "/v1/balance", ci.key, nil, "").problem(t, http.StatusUnauthorized, "unauthorized")
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "d", `{}`).status)
	again := e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+ci.keyID+"/revoke", adminToken, nil, "")
	require.Equal(t, http.StatusOK, again.status)
	require.Equal(t, rev.json(t)["revokedAt"], again.json(t)["revokedAt"])
	e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+ci.keyID+"/rotate", adminToken, nil, "").
		problem(t, http.StatusConflict, "key-revoked")

	// Rotate the original key: same id, new secret; the old one fails at
	// once, though cached.
	rot := e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+store.OriginalKeyID+"/rotate", adminToken, nil, "")
	require.Equal(t, http.StatusOK, rot.status, string(rot.body))
	m := rot.json(t)
	require.Equal(t, store.OriginalKeyID, m["id"])
	newKey := m["key"].(string)
	require.True(t, strings.HasPrefix(newKey, engine.CallerKeyPrefix))
	e.call(alice.key, "echo", "e", `{}`).problem(t, http.StatusUnauthorized, "unauthorized")
	require.Equal(t, http.StatusOK, e.call(newKey, "echo", "e", `{}`).status)
	r := e.call(newKey, "echo", "a", `{}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "true", r.header.Get("Idempotent-Replayed"), "a rotated key is the same caller: its keys replay")

	require.EqualValues(t, 75, e.balance(alice))
	require.Equal(t, []string{"credit", "charge", "charge", "charge", "charge", "charge"}, e.kinds(alice))
	e.checkInvariants()
}

func TestKeysBadRequests(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "")
	k := e.newKey(alice, "k")
	base := "/v1/admin/callers/" + alice.id + "/keys"
	for name, tc := range map[string]struct {
		method, path, bearer, body string
		status                     int
		slug                       string
	}{
		"no admin token":         {http.MethodGet, base, "", "", 401, "unauthorized"},
		"caller key is no admin": {http.MethodPost, base, k.key, `{"name": "x"}`, 401, "unauthorized"},
		"unknown caller list":    {http.MethodGet, "/v1/admin/callers/nobody/keys", adminToken, "", 404, "unknown-caller"},
		"unknown caller create":  {http.MethodPost, "/v1/admin/callers/nobody/keys", adminToken, `{"name": "x"}`, 404, "unknown-caller"},
		"unknown caller usage":   {http.MethodGet, "/v1/admin/callers/nobody/usage", adminToken, "", 404, "unknown-caller"},
		"bad caller id":          {http.MethodGet, "/v1/admin/callers/a%20b/keys", adminToken, "", 404, "unknown-caller"},
		"unknown key revoke":     {http.MethodPost, base + "/k_nope/revoke", adminToken, "", 404, "key-not-found"},
		"unknown key rotate":     {http.MethodPost, base + "/k_nope/rotate", adminToken, "", 404, "key-not-found"},
		"bad key id":             {http.MethodPost, base + "/k%21/revoke", adminToken, "", 404, "key-not-found"},
		"other caller's key":     {http.MethodPost, "/v1/admin/callers/" + e.newCaller("bob", "").id + "/keys/" + k.keyID + "/revoke", adminToken, "", 404, "key-not-found"},
		"no name":                {http.MethodPost, base, adminToken, `{}`, 400, "invalid-request"},
		"long name":              {http.MethodPost, base, adminToken, `{"name": "` + strings.Repeat("x", 201) + `"}`, 400, "invalid-request"},
		"control in name":        {http.MethodPost, base, adminToken, `{"name": "a\u0007b"}`, 400, "invalid-request"},
		"unknown member":         {http.MethodPost, base, adminToken, `{"name": "x", "limit": 1}`, 400, "invalid-request"},
		"usage without key":      {http.MethodGet, "/v1/usage", "", "", 401, "unauthorized"},
	} {
		r := e.do(tc.method, tc.path, tc.bearer, nil, tc.body)
		require.Equal(t, tc.status, r.status, "%s: %s", name, r.body)
		r.problem(t, tc.status, tc.slug)
	}
	require.Len(t, e.keys(alice), 2, "nothing was created")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", k.key, nil, "").status, "nothing was revoked")
	long := e.do(http.MethodPost, base, adminToken, nil, `{"name": "`+strings.Repeat("é", 100)+`"}`)
	require.Equal(t, http.StatusCreated, long.status, "200 bytes")
}

// TestRevokedKeyStopsWithinCacheTTL runs two gateways (two isolates) over
// one database with a controlled clock: a key revoked through A fails on A
// at once, and on B, which had cached it, once B's entry expires: within
// CallerCacheTTL, never later.
func TestRevokedKeyStopsWithinCacheTTL(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var offset atomic.Int64
	ttl := 10 * time.Second
	b, err := handler.New(handler.Config{Store: e.st, Catalog: testCatalog(t, e.up.srv.URL), AdminToken: adminToken,
		Upstream: &engine.HTTPUpstream{}, Logger: slog.New(slog.NewJSONHandler(&syncBuffer{}, nil)), CallerCacheTTL: ttl,
		NowFunc: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	require.NoError(t, err)
	srvB := httptest.NewServer(b)
	t.Cleanup(srvB.Close)
	onB := func(key string) int {
		req, err := http.NewRequest(http.MethodGet, srvB.URL+"/v1/balance", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := srvB.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	alice := e.newCaller("alice", "1.00")
	k := e.newKey(alice, "agent")
	require.Equal(t, http.StatusOK, onB(k.key), "B caches the key")
	require.Equal(t, http.StatusOK, e.do(http.MethodGet, "/v1/balance", k.key, nil, "").status, "A too")

	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+k.keyID+"/revoke", adminToken, nil, "").status)
	e.do(http.MethodGet, "/v1/balance", k.key, nil, "").problem(t, http.StatusUnauthorized, "unauthorized")
	require.Equal(t, http.StatusOK, onB(k.key), "B's cache still holds it: this is the documented bound")
	offset.Store(int64(ttl - time.Second))
	require.Equal(t, http.StatusOK, onB(k.key), "within the TTL")
	offset.Store(int64(ttl + time.Second))
	require.Equal(t, http.StatusUnauthorized, onB(k.key), "past the TTL B asks the store")
	offset.Store(int64(ttl + 2*time.Second))
	require.Equal(t, http.StatusUnauthorized, onB(k.key), "a failed lookup is never cached as a success")
	require.Equal(t, http.StatusOK, onB(alice.key), "the caller's other key goes on")
}

func TestUsageEqualsLedger(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "1.00")
	k := e.newKey(alice, "second")
	bob := e.newCaller("bob", "1.00")
	r := e.do(http.MethodPut, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil,
		`{"currency": "USD", "limit": "1.00", "reset": "daily"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	r = e.do(http.MethodPut, "/v1/admin/callers/"+alice.id+"/caps", adminToken, nil,
		`{"currency": "USD", "limit": "0.50", "reset": "monthly", "key": "`+k.keyID+`"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo", "1", `{}`).status)
	require.Equal(t, http.StatusOK, e.call(k.key, "echo", "2", `{}`).status)
	require.Equal(t, http.StatusOK, e.call(k.key, "echo", "2", `{}`).status) // a replay: no charge, no call
	require.Equal(t, http.StatusOK, e.call(alice.key, "echo2", "3", `{}`).status)
	require.Equal(t, http.StatusBadGateway, e.call(k.key, "fail", "4", `{}`).status)      // charged, refunded
	require.Equal(t, http.StatusFailedDependency, e.call(k.key, "bad", "5", `{}`).status) // charged, refunded, stored
	require.Equal(t, http.StatusOK, e.call(bob.key, "echo", "1", `{}`).status)

	// The ledger's charges and refunds per tool, from the records' entries.
	want := map[string]int64{}
	for _, tool := range []string{"echo", "echo2", "fail", "bad"} {
		for _, key := range []string{"1", "2", "3", "4", "5"} {
			es, err := e.st.Entries(context.Background(), store.EntryFilter{Caller: alice.id, Key: engine.ScopedKey(alice.id, tool, key)})
			require.NoError(t, err)
			for _, en := range es {
				want[tool] -= en.Amount
			}
		}
	}
	require.Equal(t, map[string]int64{"echo": 10, "echo2": 5, "fail": 0, "bad": 0}, want)

	mine := e.do(http.MethodGet, "/v1/usage", k.key, nil, "")
	require.Equal(t, http.StatusOK, mine.status, string(mine.body))
	admin := e.do(http.MethodGet, "/v1/admin/callers/"+alice.id+"/usage", adminToken, nil, "")
	require.Equal(t, http.StatusOK, admin.status)
	require.JSONEq(t, string(mine.body), string(admin.body), "the caller and the admin see the same")
	u := mine.json(t)
	require.Equal(t, alice.id, u["caller"])
	require.Equal(t, "caller", u["scope"])
	periods := u["periods"].([]any)
	require.Len(t, periods, 3)
	for i, name := range []string{"day", "week", "month"} {
		p := periods[i].(map[string]any)
		require.Equal(t, name, p["period"])
		got := map[string]int64{}
		calls := map[string]float64{}
		for _, row := range p["tools"].([]any) {
			r := row.(map[string]any)
			require.Equal(t, "USD", r["currency"])
			got[r["tool"].(string)] = int64(r["spentMinor"].(float64))
			calls[r["tool"].(string)] = r["calls"].(float64)
		}
		require.Equal(t, want, got, name)
		require.Equal(t, map[string]float64{"echo": 2, "echo2": 1, "fail": 0, "bad": 1}, calls, "%s: executed calls (a 424 is stored)", name)
		totals := p["totals"].([]any)
		require.Len(t, totals, 1)
		tot := totals[0].(map[string]any)
		require.Equal(t, "0.15", tot["spent"])
		require.EqualValues(t, 5, tot["charges"])
		require.EqualValues(t, 2, tot["refunds"])
	}
	// Per key: the same rows split by the key that made them (a refund
	// under its charge's key), adding up to the caller's.
	keys := u["keys"].([]any)
	require.Len(t, keys, 2)
	perKey := map[string]map[string][2]int64{} // key name -> tool -> (spentMinor, calls)
	for _, kv := range keys {
		ku := kv.(map[string]any)
		require.Equal(t, "active", ku["status"])
		kp := ku["periods"].([]any)
		require.Len(t, kp, 3)
		for i, name := range []string{"day", "week", "month"} {
			p := kp[i].(map[string]any)
			require.Equal(t, name, p["period"])
			rows := map[string][2]int64{}
			for _, row := range p["tools"].([]any) {
				r := row.(map[string]any)
				rows[r["tool"].(string)] = [2]int64{int64(r["spentMinor"].(float64)), int64(r["calls"].(float64))}
				require.Equal(t, "0.00", r["released"])
			}
			if i > 0 {
				require.Equal(t, perKey[ku["name"].(string)], rows, "%s: as the day", name)
			}
			perKey[ku["name"].(string)] = rows
		}
	}
	require.Equal(t, map[string]map[string][2]int64{
		"original": {"echo": {5, 1}, "echo2": {5, 1}},
		"second":   {"echo": {5, 1}, "fail": {0, 0}, "bad": {0, 1}},
	}, perKey)
	first, second := keys[0].(map[string]any), keys[1].(map[string]any)
	require.Equal(t, []any{store.OriginalKeyID, k.keyID}, []any{first["id"], second["id"]}, "oldest first")
	require.Empty(t, first["caps"])
	keyCaps := second["caps"].([]any)
	require.Len(t, keyCaps, 1, "the key's own cap, with its spend and what remains")
	require.Equal(t, []any{k.keyID, "0.50", "0.05", "0.45"}, []any{keyCaps[0].(map[string]any)["key"],
		keyCaps[0].(map[string]any)["limit"], keyCaps[0].(map[string]any)["spent"], keyCaps[0].(map[string]any)["remaining"]})
	tot := second["periods"].([]any)[0].(map[string]any)["totals"].([]any)[0].(map[string]any)
	require.Equal(t, []any{"0.05", 3.0, 2.0, 2.0}, []any{tot["spent"], tot["charges"], tot["refunds"], tot["calls"]})

	caps := u["caps"].([]any)
	require.Len(t, caps, 2, "the caller's cap and its key's, with their spend and what remains")
	c := caps[0].(map[string]any)
	require.Equal(t, "1.00", c["limit"])
	require.Equal(t, "0.15", c["spent"])
	require.Equal(t, "0.85", c["remaining"])
	require.Equal(t, int64(85), e.balance(alice), "1.00 - the spend")
	bobs := e.do(http.MethodGet, "/v1/usage", bob.key, nil, "").json(t)
	require.Len(t, bobs["periods"].([]any)[0].(map[string]any)["tools"], 1, "bob sees only his own")
	require.Len(t, bobs["keys"], 1, "and only his own keys")
	e.checkInvariants()
}

// slowLookups holds a key lookup that has read the store until release is
// closed: a lookup that races a revocation.
type slowLookups struct {
	store.Store
	read    chan struct{}
	release chan struct{}
}

func (s *slowLookups) CallerByKeyHash(ctx context.Context, hash []byte, now time.Time) (store.Caller, error) {
	c, err := s.Store.CallerByKeyHash(ctx, hash, now)
	if s.read != nil {
		s.read <- struct{}{}
		<-s.release
	}
	return c, err
}

// TestRevokeRacingLookupIsNotCached: a lookup that read the key before
// the revocation answers with it (it started first), but does not put it in
// the cache after the revocation dropped the key's entries: the next
// request on the same gateway gets 401.
func TestRevokeRacingLookupIsNotCached(t *testing.T) {
	t.Parallel()
	slow := &slowLookups{}
	e := setup(t, func(c *handler.Config) { slow.Store = c.Store; c.Store = slow })
	alice := e.newCaller("alice", "1.00")
	slow.read, slow.release = make(chan struct{}), make(chan struct{})
	done := make(chan int)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, e.gw.URL+"/v1/balance", nil)
		req.Header.Set("Authorization", "Bearer "+alice.key)
		res, err := e.gw.Client().Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	<-slow.read // the lookup has read the valid key
	slow.read = nil
	require.Equal(t, http.StatusOK, e.do(http.MethodPost, "/v1/admin/callers/"+alice.id+"/keys/"+store.OriginalKeyID+"/revoke", adminToken, nil, "").status)
	close(slow.release)
	require.Equal(t, http.StatusOK, <-done, "it read the key before the revocation")
	e.do(http.MethodGet, "/v1/balance", alice.key, nil, "").problem(t, http.StatusUnauthorized, "unauthorized")
}

// TestKeysLimitPerCaller: a caller holds at most store.MaxKeysPerCaller
// valid keys, its original key included: creates at the limit answer 409
// too-many-keys with the limit and create nothing, concurrent ones never
// pass it, and a revocation makes room.
func TestKeysLimitPerCaller(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.newCaller("alice", "")
	base := "/v1/admin/callers/" + alice.id + "/keys"
	const free = 3
	var first caller
	for i := 1; i <= store.MaxKeysPerCaller-1-free; i++ {
		k := e.newKey(alice, fmt.Sprint("k", i))
		if i == 1 {
			first = k
		}
	}
	// 10 creates at once for the 3 places left.
	const n = 10
	answers := make([]response, n)
	parallel(n, func(i int) {
		answers[i] = e.do(http.MethodPost, base, adminToken, nil, fmt.Sprintf(`{"name": "race %d"}`, i))
	})
	created := 0
	for _, r := range answers {
		if r.status == http.StatusCreated {
			created++
			continue
		}
		r.problem(t, http.StatusConflict, "too-many-keys")
	}
	require.Equal(t, free, created)
	require.Len(t, e.keys(alice), store.MaxKeysPerCaller)

	p := e.do(http.MethodPost, base, adminToken, nil, `{"name": "one more"}`).problem(t, http.StatusConflict, "too-many-keys")
	require.EqualValues(t, store.MaxKeysPerCaller, p["maxKeys"])
	require.Contains(t, p["detail"], "revoke one")
	require.Len(t, e.keys(alice), store.MaxKeysPerCaller, "nothing was created")
	require.Equal(t, http.StatusCreated, e.do(http.MethodPost, "/v1/admin/callers/"+e.newCaller("bob", "").id+"/keys",
		adminToken, nil, `{"name": "bob's"}`).status, "the limit is per caller")

	require.Equal(t, http.StatusOK, e.do(http.MethodPost, base+"/"+first.keyID+"/revoke", adminToken, nil, "").status)
	e.newKey(alice, "after a revocation")
	e.do(http.MethodPost, base, adminToken, nil, `{"name": "one more"}`).problem(t, http.StatusConflict, "too-many-keys")
	require.Len(t, e.keys(alice), store.MaxKeysPerCaller+1, "the valid ones and the revoked one")
	e.checkInvariants()
}
