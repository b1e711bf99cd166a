//go:build !js

package sqlite_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// TestMigrateKeysKeepsOldCallers migrates a database that has seen every
// migration before 0006_keys.sql and holds a caller with its one key: after
// 0006 that key still authenticates, as key k_original, and spends the same
// balance as a new key; the schema refuses deleting a key or reviving a
// revoked one.
func TestMigrateKeysKeepsOldCallers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openMigratedBefore(t, "0006_keys.sql")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	old := []byte(strings.Repeat("\x01", 32))
	// A caller as the old schema stored it.
	_, err := db.Exec(ctx, `INSERT INTO callers (id, name, key_hash, created_at) VALUES ('alice', 'Alice', ?, ?)`,
		strings.Repeat("01", 32), store.UnixMilli(now))
	require.NoError(t, err)

	require.NoError(t, sqlstore.Migrate(ctx, db))
	require.NoError(t, sqlstore.Migrate(ctx, db), "a second run applies nothing")
	s := sqlstore.New(db)
	require.NoError(t, s.CheckInvariants(ctx))
	c, err := s.CallerByKeyHash(ctx, old, now)
	require.NoError(t, err, "the old key still works")
	require.Equal(t, store.Caller{ID: "alice", Name: "Alice", KeyHash: old, CreatedAt: now, KeyID: store.OriginalKeyID}, c)

	// New keys and the old one spend one balance.
	require.NoError(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_new", Name: "new", KeyHash: []byte{2}, CreatedAt: now}))
	_, err = s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: 300, Reference: "seed", Now: now})
	require.NoError(t, err)
	for i, h := range [][]byte{old, {2}} {
		c, err := s.CallerByKeyHash(ctx, h, now)
		require.NoError(t, err)
		res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: store.ClaimParams{Key: string(rune('a' + i)),
			Owner: "A", Fingerprint: "fp", Now: now, Lease: time.Minute}, Caller: c.ID, KeyID: c.KeyID, Currency: "USD", Amount: 100})
		require.NoError(t, err)
		require.NoError(t, res.ChargeErr)
	}
	bal, err := s.Balance(ctx, "alice", "USD")
	require.NoError(t, err)
	require.Equal(t, int64(100), bal)

	// A caller inserted by SQL (the seed files) gets its original key.
	_, err = db.Exec(ctx, `INSERT INTO callers (id, name, key_hash, created_at) VALUES ('seeded', 'Seeded', 'ab', 0)`)
	require.NoError(t, err)
	c, err = s.CallerByKeyHash(ctx, []byte{0xab}, now)
	require.NoError(t, err)
	require.Equal(t, "seeded", c.ID)

	// The schema refuses what must never happen.
	_, err = s.RevokeKey(ctx, "alice", "k_new", now)
	require.NoError(t, err)
	for _, q := range []string{
		`UPDATE caller_keys SET revoked_at = NULL WHERE id = 'k_new'`,
		`UPDATE caller_keys SET key_hash = 'ff' WHERE id = 'k_new'`,
		`DELETE FROM caller_keys WHERE id = 'k_new'`,
		`INSERT INTO caller_keys (caller, id, name, key_hash, created_at) VALUES ('alice', 'k_long', '', 'ee', 0)`,
	} {
		_, err := db.Exec(ctx, q)
		require.Error(t, err, q)
	}
	_, err = s.CallerByKeyHash(ctx, []byte{2}, now)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.CheckInvariants(ctx))
}
