package sqlstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// keyCols are a caller_keys row as scanKey reads it.
const keyCols = `caller, id, name, key_hash, created_at, coalesce(revoked_at, 0), coalesce(last_used_at, 0)`

// callerByKeySQL finds a valid key by its hash and stamps its use, in one
// statement: the lookup costs no more round trips than a read.
const callerByKeySQL = `UPDATE caller_keys SET last_used_at = max(coalesce(last_used_at, 0), ?)
	WHERE key_hash = ? AND revoked_at IS NULL
	RETURNING caller, id AS key_id, key_hash, (SELECT name FROM callers WHERE callers.id = caller_keys.caller) AS name,
		(SELECT created_at FROM callers WHERE callers.id = caller_keys.caller) AS created_at`

// keyInvariantChecks return rows only when a key has no caller, or a
// caller has no original key.
var keyInvariantChecks = []struct{ name, sql string }{
	{"every key belongs to a caller", `
		SELECT k.caller || '/' || k.id FROM caller_keys k LEFT JOIN callers c ON c.id = k.caller WHERE c.id IS NULL`},
	{"every caller has its original key", `
		SELECT c.id FROM callers c LEFT JOIN caller_keys k ON k.caller = c.id AND k.id = '` + store.OriginalKeyID + `'
		WHERE k.id IS NULL`},
	{"a caller holds at most MaxKeysPerCaller valid keys", `
		SELECT caller || ': ' || count(*) FROM caller_keys WHERE revoked_at IS NULL GROUP BY caller
		HAVING count(*) > ` + strconv.Itoa(store.MaxKeysPerCaller)},
}

// CallerByKeyHash implements store.Callers.
func (s *Store) CallerByKeyHash(ctx context.Context, hash []byte, now time.Time) (store.Caller, error) {
	rows, err := s.db.Query(ctx, callerByKeySQL, store.UnixMilli(now), hex.EncodeToString(hash))
	if err != nil {
		return store.Caller{}, fmt.Errorf("caller by key: %w", err)
	}
	if len(rows) == 0 {
		return store.Caller{}, store.ErrNotFound
	}
	r := rows[0]
	kh, err := hex.DecodeString(asString(r[2]))
	if err != nil {
		return store.Caller{}, fmt.Errorf("caller by key: decode hash: %w", err)
	}
	return store.Caller{ID: asString(r[0]), KeyID: asString(r[1]), KeyHash: kh, Name: asString(r[3]),
		CreatedAt: store.FromUnixMilli(asInt64(r[4]))}, nil
}

// CreateKey implements store.Callers: one statement, which inserts nothing
// for an unknown caller or one at store.MaxKeysPerCaller valid keys (it
// counts them itself, so concurrent creates cannot pass the limit); when it
// inserts nothing, a read says which.
func (s *Store) CreateKey(ctx context.Context, k store.CallerKey) error {
	if k.Caller == "" || k.ID == "" || k.Name == "" || len(k.KeyHash) == 0 {
		return fmt.Errorf("%w: caller, key id, name and hash are required", store.ErrInvalidArgument)
	}
	n, err := s.db.Exec(ctx, `INSERT INTO caller_keys (caller, id, name, key_hash, created_at)
		SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM callers WHERE id = ?)
			AND (SELECT count(*) FROM caller_keys WHERE caller = ? AND revoked_at IS NULL) < ?`,
		k.Caller, k.ID, k.Name, hex.EncodeToString(k.KeyHash), store.UnixMilli(k.CreatedAt), k.Caller,
		k.Caller, int64(store.MaxKeysPerCaller))
	switch {
	case isConstraint(err, "UNIQUE") || isConstraint(err, "PRIMARY KEY"):
		return store.ErrConflict
	case isConstraint(err, "CHECK"):
		return fmt.Errorf("%w: key name must be 1-200 bytes", store.ErrInvalidArgument)
	case err != nil:
		return fmt.Errorf("create key: %w", err)
	case n == 1:
		return nil
	}
	// Callers are never deleted: one that exists now existed at the insert.
	rows, err := s.db.Query(ctx, `SELECT 1 FROM callers WHERE id = ?`, k.Caller)
	switch {
	case err != nil:
		return fmt.Errorf("create key: %w", err)
	case len(rows) == 0:
		return store.ErrNotFound
	}
	return store.ErrTooManyKeys
}

// Keys implements store.Callers. Every caller has its original key row,
// so no rows means no such caller.
func (s *Store) Keys(ctx context.Context, caller string) ([]store.CallerKey, error) {
	rows, err := s.db.Query(ctx, `SELECT `+keyCols+` FROM caller_keys WHERE caller = ? ORDER BY created_at, id`, caller)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if len(rows) == 0 {
		return nil, store.ErrNotFound
	}
	out := make([]store.CallerKey, 0, len(rows))
	for _, r := range rows {
		k, err := scanKey(r)
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		out = append(out, k)
	}
	return out, nil
}

// RevokeKey implements store.Callers: one statement, which keeps the first
// revocation's time.
func (s *Store) RevokeKey(ctx context.Context, caller, id string, now time.Time) (store.CallerKey, error) {
	rows, err := s.db.Query(ctx, `UPDATE caller_keys SET revoked_at = coalesce(revoked_at, ?)
		WHERE caller = ? AND id = ? RETURNING `+keyCols, store.UnixMilli(now), caller, id)
	if err != nil {
		return store.CallerKey{}, fmt.Errorf("revoke key: %w", err)
	}
	if len(rows) == 0 {
		return store.CallerKey{}, store.ErrNotFound
	}
	return scanKey(rows[0])
}

// RotateKey implements store.Callers: one statement; when it changes
// nothing, a read says why.
func (s *Store) RotateKey(ctx context.Context, caller, id string, hash []byte) (store.CallerKey, error) {
	if len(hash) == 0 {
		return store.CallerKey{}, fmt.Errorf("%w: key hash is required", store.ErrInvalidArgument)
	}
	rows, err := s.db.Query(ctx, `UPDATE caller_keys SET key_hash = ?
		WHERE caller = ? AND id = ? AND revoked_at IS NULL RETURNING `+keyCols, hex.EncodeToString(hash), caller, id)
	if isConstraint(err, "UNIQUE") {
		return store.CallerKey{}, store.ErrConflict
	}
	if err != nil {
		return store.CallerKey{}, fmt.Errorf("rotate key: %w", err)
	}
	if len(rows) == 1 {
		return scanKey(rows[0])
	}
	rows, err = s.db.Query(ctx, `SELECT 1 FROM caller_keys WHERE caller = ? AND id = ?`, caller, id)
	switch {
	case err != nil:
		return store.CallerKey{}, fmt.Errorf("rotate key: %w", err)
	case len(rows) == 0:
		return store.CallerKey{}, store.ErrNotFound
	}
	return store.CallerKey{}, store.ErrRevoked
}

// scanKey reads a row of keyCols.
func scanKey(r []any) (store.CallerKey, error) {
	kh, err := hex.DecodeString(asString(r[3]))
	if err != nil {
		return store.CallerKey{}, errors.New("decode key hash")
	}
	k := store.CallerKey{Caller: asString(r[0]), ID: asString(r[1]), Name: asString(r[2]), KeyHash: kh,
		CreatedAt: store.FromUnixMilli(asInt64(r[4]))}
	if v := asInt64(r[5]); v > 0 {
		k.RevokedAt = store.FromUnixMilli(v)
	}
	if v := asInt64(r[6]); v > 0 {
		k.LastUsedAt = store.FromUnixMilli(v)
	}
	return k, nil
}
