package memory

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// CreateCaller implements store.Callers: the caller and its key
// store.OriginalKeyID.
func (s *Store) CreateCaller(_ context.Context, c store.Caller) error {
	if c.ID == "" || len(c.KeyHash) == 0 {
		return fmt.Errorf("%w: caller id and key hash are required", store.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.callers[c.ID]; ok || s.hashTaken(c.KeyHash) {
		return store.ErrConflict
	}
	c.KeyHash = bytes.Clone(c.KeyHash)
	c.CreatedAt = norm(c.CreatedAt)
	c.KeyID = ""
	s.callers[c.ID] = c
	s.keys = append(s.keys, store.CallerKey{Caller: c.ID, ID: store.OriginalKeyID, Name: "original",
		KeyHash: c.KeyHash, CreatedAt: c.CreatedAt})
	return nil
}

func (s *Store) hashTaken(hash []byte) bool {
	for _, k := range s.keys {
		if bytes.Equal(k.KeyHash, hash) {
			return true
		}
	}
	return false
}

// validKeys counts the caller's keys that are not revoked.
func (s *Store) validKeys(caller string) int {
	n := 0
	for _, k := range s.keys {
		if k.Caller == caller && k.RevokedAt.IsZero() {
			n++
		}
	}
	return n
}

// checkKeys verifies, as keyInvariantChecks does, that no caller holds more
// than store.MaxKeysPerCaller valid keys. Callers hold s.mu.
func (s *Store) checkKeys() []error {
	var errs []error
	for id := range s.callers {
		if n := s.validKeys(id); n > store.MaxKeysPerCaller {
			errs = append(errs, fmt.Errorf("invariant broken: caller %q holds %d valid keys", id, n))
		}
	}
	return errs
}

// key returns the index of the caller's key id in s.keys, or -1.
func (s *Store) key(caller, id string) int {
	for i, k := range s.keys {
		if k.Caller == caller && k.ID == id {
			return i
		}
	}
	return -1
}

// CallerByKeyHash implements store.Callers.
func (s *Store) CallerByKeyHash(_ context.Context, hash []byte, now time.Time) (store.Caller, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range s.keys {
		if bytes.Equal(k.KeyHash, hash) && k.RevokedAt.IsZero() {
			if t := norm(now); t.After(k.LastUsedAt) {
				s.keys[i].LastUsedAt = t
			}
			c := s.callers[k.Caller]
			c.KeyID, c.KeyHash = k.ID, bytes.Clone(k.KeyHash)
			return c, nil
		}
	}
	return store.Caller{}, store.ErrNotFound
}

// CreateKey implements store.Callers.
func (s *Store) CreateKey(_ context.Context, k store.CallerKey) error {
	if k.Caller == "" || k.ID == "" || k.Name == "" || len(k.KeyHash) == 0 {
		return fmt.Errorf("%w: caller, key id, name and hash are required", store.ErrInvalidArgument)
	}
	if len(k.Name) > 200 {
		return fmt.Errorf("%w: key name must be 1-200 bytes", store.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.callers[k.Caller]; !ok {
		return store.ErrNotFound
	}
	if s.validKeys(k.Caller) >= store.MaxKeysPerCaller {
		return store.ErrTooManyKeys
	}
	if s.key(k.Caller, k.ID) >= 0 || s.hashTaken(k.KeyHash) {
		return store.ErrConflict
	}
	k.KeyHash = bytes.Clone(k.KeyHash)
	k.CreatedAt, k.RevokedAt, k.LastUsedAt = norm(k.CreatedAt), time.Time{}, time.Time{}
	s.keys = append(s.keys, k)
	return nil
}

// Keys implements store.Callers.
func (s *Store) Keys(_ context.Context, caller string) ([]store.CallerKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.CallerKey
	for _, k := range s.keys {
		if k.Caller == caller {
			k.KeyHash = bytes.Clone(k.KeyHash)
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, store.ErrNotFound
	}
	return out, nil
}

// RevokeKey implements store.Callers.
func (s *Store) RevokeKey(_ context.Context, caller, id string, now time.Time) (store.CallerKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.key(caller, id)
	if i < 0 {
		return store.CallerKey{}, store.ErrNotFound
	}
	if s.keys[i].RevokedAt.IsZero() {
		s.keys[i].RevokedAt = norm(now)
	}
	k := s.keys[i]
	k.KeyHash = bytes.Clone(k.KeyHash)
	return k, nil
}

// RotateKey implements store.Callers.
func (s *Store) RotateKey(_ context.Context, caller, id string, hash []byte) (store.CallerKey, error) {
	if len(hash) == 0 {
		return store.CallerKey{}, fmt.Errorf("%w: key hash is required", store.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.key(caller, id)
	switch {
	case i < 0:
		return store.CallerKey{}, store.ErrNotFound
	case !s.keys[i].RevokedAt.IsZero():
		return store.CallerKey{}, store.ErrRevoked
	case s.hashTaken(hash):
		return store.CallerKey{}, store.ErrConflict
	}
	s.keys[i].KeyHash = bytes.Clone(hash)
	k := s.keys[i]
	k.KeyHash = bytes.Clone(hash)
	return k, nil
}
