package storetest

import (
	"fmt"
	"sync"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// keyCases: several keys per caller (store.Callers, "Caller keys").
var keyCases = []Case{
	{"KeysCreateListLookup", func(t TB, s store.Store, rt *store.CountingClient) {
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{1}, CreatedAt: t0}))
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "bob", Name: "Bob", KeyHash: []byte{2}, CreatedAt: t0}))
		k := store.CallerKey{Caller: "alice", ID: "k_ci", Name: "ci runner", KeyHash: []byte{3}, CreatedAt: t0.Add(time.Second)}
		require.NoError(t, s.CreateKey(ctx, k))

		// Each key finds the caller, names itself, and stamps its use, in
		// one round trip.
		for hash, id := range map[byte]string{1: store.OriginalKeyID, 3: "k_ci"} {
			var c store.Caller
			var err error
			requireTrips(t, rt, 1, func() { c, err = s.CallerByKeyHash(ctx, []byte{hash}, t0.Add(time.Minute)) }, "lookup")
			require.NoError(t, err)
			require.Equal(t, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{hash}, CreatedAt: t0, KeyID: id}, c)
		}
		// An older lookup does not move last use back.
		_, err := s.CallerByKeyHash(ctx, []byte{3}, t0)
		require.NoError(t, err)

		keys, err := s.Keys(ctx, "alice")
		require.NoError(t, err)
		require.Equal(t, []store.CallerKey{
			{Caller: "alice", ID: store.OriginalKeyID, Name: "original", KeyHash: []byte{1}, CreatedAt: t0, LastUsedAt: t0.Add(time.Minute)},
			{Caller: "alice", ID: "k_ci", Name: "ci runner", KeyHash: []byte{3}, CreatedAt: t0.Add(time.Second), LastUsedAt: t0.Add(time.Minute)},
		}, keys)
		bobs, err := s.Keys(ctx, "bob")
		require.NoError(t, err)
		require.Len(t, bobs, 1)
		require.True(t, bobs[0].LastUsedAt.IsZero(), "never looked up")

		// Conflicts and unknown callers change nothing.
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_ci", Name: "again", KeyHash: []byte{4}, CreatedAt: t0}), store.ErrConflict)
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "bob", ID: "k_x", Name: "x", KeyHash: []byte{3}, CreatedAt: t0}), store.ErrConflict, "hash of another caller's key")
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "bob", ID: "k_x", Name: "x", KeyHash: []byte{1}, CreatedAt: t0}), store.ErrConflict, "hash of an original key")
		require.ErrorIs(t, s.CreateCaller(ctx, store.Caller{ID: "carol", Name: "Carol", KeyHash: []byte{3}, CreatedAt: t0}), store.ErrConflict, "caller with a key's hash")
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "nobody", ID: "k_x", Name: "x", KeyHash: []byte{5}, CreatedAt: t0}), store.ErrNotFound)
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "bob", ID: "k_x", Name: "", KeyHash: []byte{5}, CreatedAt: t0}), store.ErrInvalidArgument)
		_, err = s.Keys(ctx, "nobody")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.CallerByID(ctx, "carol")
		require.ErrorIs(t, err, store.ErrNotFound)
		bobs, err = s.Keys(ctx, "bob")
		require.NoError(t, err)
		require.Len(t, bobs, 1)
		// A key's id is per caller: bob may have a k_ci too.
		require.NoError(t, s.CreateKey(ctx, store.CallerKey{Caller: "bob", ID: "k_ci", Name: "bob's ci", KeyHash: []byte{6}, CreatedAt: t0}))
		c, err := s.CallerByKeyHash(ctx, []byte{6}, t0)
		require.NoError(t, err)
		require.Equal(t, "bob", c.ID)
		require.Equal(t, "k_ci", c.KeyID)
	}},

	{"KeysRevoke", func(t TB, s store.Store, rt *store.CountingClient) {
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{1}, CreatedAt: t0}))
		require.NoError(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_2", Name: "two", KeyHash: []byte{2}, CreatedAt: t0}))
		k, err := s.RevokeKey(ctx, "alice", "k_2", t0.Add(time.Minute))
		require.NoError(t, err)
		require.Equal(t, t0.Add(time.Minute), k.RevokedAt)
		_, err = s.CallerByKeyHash(ctx, []byte{2}, t0.Add(time.Hour))
		require.ErrorIs(t, err, store.ErrNotFound, "a revoked key finds nobody")
		k, err = s.RevokeKey(ctx, "alice", "k_2", t0.Add(time.Hour))
		require.NoError(t, err, "revoking twice is idempotent")
		require.Equal(t, t0.Add(time.Minute), k.RevokedAt, "and keeps the first time")
		_, err = s.RotateKey(ctx, "alice", "k_2", []byte{9})
		require.ErrorIs(t, err, store.ErrRevoked)
		_, err = s.CallerByKeyHash(ctx, []byte{9}, t0)
		require.ErrorIs(t, err, store.ErrNotFound, "a refused rotation installs nothing")
		_, err = s.RevokeKey(ctx, "alice", "k_nope", t0)
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.RevokeKey(ctx, "bob", "k_2", t0)
		require.ErrorIs(t, err, store.ErrNotFound, "another caller's key id")

		// The original key is a key like the others; the caller stays.
		_, err = s.RevokeKey(ctx, "alice", store.OriginalKeyID, t0)
		require.NoError(t, err)
		_, err = s.CallerByKeyHash(ctx, []byte{1}, t0)
		require.ErrorIs(t, err, store.ErrNotFound)
		c, err := s.CallerByID(ctx, "alice")
		require.NoError(t, err)
		require.Equal(t, "Alice", c.Name)
		keys, err := s.Keys(ctx, "alice")
		require.NoError(t, err)
		require.Len(t, keys, 2)
		for _, k := range keys {
			require.False(t, k.RevokedAt.IsZero(), k.ID)
		}
		require.ErrorIs(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_3", Name: "three", KeyHash: []byte{2}, CreatedAt: t0}),
			store.ErrConflict, "a revoked key's hash stays taken")
	}},

	{"KeysRotate", func(t TB, s store.Store, rt *store.CountingClient) {
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{1}, CreatedAt: t0}))
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "bob", Name: "Bob", KeyHash: []byte{7}, CreatedAt: t0}))
		require.NoError(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_2", Name: "two", KeyHash: []byte{2}, CreatedAt: t0}))
		var k store.CallerKey
		var err error
		requireTrips(t, rt, 1, func() { k, err = s.RotateKey(ctx, "alice", "k_2", []byte{3}) }, "rotate")
		require.NoError(t, err)
		require.Equal(t, store.CallerKey{Caller: "alice", ID: "k_2", Name: "two", KeyHash: []byte{3}, CreatedAt: t0}, k)
		_, err = s.CallerByKeyHash(ctx, []byte{2}, t0)
		require.ErrorIs(t, err, store.ErrNotFound, "the old secret stops")
		c, err := s.CallerByKeyHash(ctx, []byte{3}, t0)
		require.NoError(t, err)
		require.Equal(t, "k_2", c.KeyID, "the same key id goes on")
		_, err = s.RotateKey(ctx, "alice", "k_2", []byte{7})
		require.ErrorIs(t, err, store.ErrConflict, "a hash taken by another caller")
		_, err = s.RotateKey(ctx, "alice", "k_nope", []byte{8})
		require.ErrorIs(t, err, store.ErrNotFound)
		c, err = s.CallerByKeyHash(ctx, []byte{3}, t0)
		require.NoError(t, err, "a refused rotation keeps the key")
		require.Equal(t, "alice", c.ID)

		// The original key rotates too, and keeps its id.
		_, err = s.RotateKey(ctx, "alice", store.OriginalKeyID, []byte{4})
		require.NoError(t, err)
		_, err = s.CallerByKeyHash(ctx, []byte{1}, t0)
		require.ErrorIs(t, err, store.ErrNotFound)
		c, err = s.CallerByKeyHash(ctx, []byte{4}, t0)
		require.NoError(t, err)
		require.Equal(t, store.OriginalKeyID, c.KeyID)
	}},

	{"KeysSpendOneBalance", func(t TB, s store.Store, rt *store.CountingClient) {
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte{1}, CreatedAt: t0}))
		require.NoError(t, s.CreateKey(ctx, store.CallerKey{Caller: "alice", ID: "k_2", Name: "two", KeyHash: []byte{2}, CreatedAt: t0}))
		credit(t, s, "alice", 300)
		for i, hash := range []byte{1, 2} {
			c, err := s.CallerByKeyHash(ctx, []byte{hash}, t0)
			require.NoError(t, err)
			res, err := s.ClaimCharge(ctx, store.ClaimChargeParams{ClaimParams: claim(string(rune('a'+i)), "A", "fp", t0),
				Caller: c.ID, KeyID: c.KeyID, Currency: "USD", Amount: 100})
			require.NoError(t, err)
			require.NoError(t, res.ChargeErr)
			require.Equal(t, int64(200-100*int64(i)), res.Charge.Balance)
		}
		requireBalance(t, s, "alice", 100)
	}},

	{"KeysLimitPerCaller", func(t TB, s store.Store, rt *store.CountingClient) {
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "alice", Name: "Alice", KeyHash: []byte("alice"), CreatedAt: t0}))
		require.NoError(t, s.CreateCaller(ctx, store.Caller{ID: "bob", Name: "Bob", KeyHash: []byte("bob"), CreatedAt: t0}))
		newKey := func(caller string, i int) store.CallerKey {
			return store.CallerKey{Caller: caller, ID: fmt.Sprintf("k_%d", i), Name: "n", KeyHash: []byte(fmt.Sprintf("%s-%d", caller, i)), CreatedAt: t0}
		}
		valid := func(caller string) (valid, all int) {
			t.Helper()
			keys, err := s.Keys(ctx, caller)
			require.NoError(t, err)
			for _, k := range keys {
				if k.RevokedAt.IsZero() {
					valid++
				}
			}
			return valid, len(keys)
		}
		// The original key and Max-5 more; one of them revoked: Max-5 valid.
		const free = 5
		for i := 1; i <= store.MaxKeysPerCaller-free; i++ {
			requireTrips(t, rt, 1, func() { require.NoError(t, s.CreateKey(ctx, newKey("alice", i))) }, "create key")
		}
		_, err := s.RevokeKey(ctx, "alice", "k_1", t0)
		require.NoError(t, err)
		v, _ := valid("alice")
		require.Equal(t, store.MaxKeysPerCaller-free, v)

		// 20 creates at once for the 5 places left: exactly 5 pass.
		const n = 20
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = s.CreateKey(ctx, newKey("alice", 1000+i))
			}(i)
		}
		wg.Wait()
		created := 0
		for _, err := range errs {
			if err == nil {
				created++
				continue
			}
			require.ErrorIs(t, err, store.ErrTooManyKeys)
		}
		require.Equal(t, free, created)
		v, all := valid("alice")
		require.Equal(t, store.MaxKeysPerCaller, v)
		require.Equal(t, store.MaxKeysPerCaller+1, all, "and one revoked")

		// At the limit nothing is stored, not even the hash; a revocation
		// frees a place.
		over := newKey("alice", 2000)
		require.ErrorIs(t, s.CreateKey(ctx, over), store.ErrTooManyKeys)
		_, err = s.CallerByKeyHash(ctx, over.KeyHash, t0)
		require.ErrorIs(t, err, store.ErrNotFound)
		_, all = valid("alice")
		require.Equal(t, store.MaxKeysPerCaller+1, all)
		_, err = s.RevokeKey(ctx, "alice", "k_2", t0)
		require.NoError(t, err)
		require.NoError(t, s.CreateKey(ctx, over))
		require.ErrorIs(t, s.CreateKey(ctx, newKey("alice", 2001)), store.ErrTooManyKeys)
		// Rotation keeps the count; other callers and unknown ones answer as before.
		_, err = s.RotateKey(ctx, "alice", "k_3", []byte("alice-rotated"))
		require.NoError(t, err)
		require.NoError(t, s.CreateKey(ctx, newKey("bob", 1)))
		require.ErrorIs(t, s.CreateKey(ctx, newKey("nobody", 1)), store.ErrNotFound)
		require.ErrorIs(t, s.CreateKey(ctx, newKey("alice", 1)), store.ErrTooManyKeys, "the limit answers before the taken id")
		v, _ = valid("alice")
		require.Equal(t, store.MaxKeysPerCaller, v)
	}},
}
