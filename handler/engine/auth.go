package engine

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// CallerKeyPrefix starts every caller key.
const CallerKeyPrefix = "tg_"

// HashKey is how a caller key is stored: its SHA-256.
func HashKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// newCallerKey returns "tg_" and 32 random bytes in unpadded base64url.
func newCallerKey(r io.Reader) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("read random key: %w", err)
	}
	return CallerKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Authenticate returns the caller whose key is key, with KeyID naming the
// key. It looks the key's SHA-256 up in the store (or in a short-lived
// cache of positive lookups, so a warm caller costs no round trip) and
// compares the hashes in constant time. It returns ErrUnauthorized for an
// empty, unknown or revoked key and a *StoreError when the store fails.
//
// A key revoked or rotated through this engine stops here at once (its
// cache entries are dropped); on another isolate it stops when that
// isolate's entry expires, within CallerCacheTTL.
func (e *Engine) Authenticate(ctx context.Context, key string) (store.Caller, error) {
	if key == "" {
		return store.Caller{}, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(key))
	now := e.now()
	c, ok, epoch := e.callers.get(sum, now)
	if ok {
		return c, nil
	}
	c, err := e.store.CallerByKeyHash(ctx, sum[:], now)
	if errors.Is(err, store.ErrNotFound) {
		return store.Caller{}, ErrUnauthorized
	}
	if err != nil {
		return store.Caller{}, storeError("look up caller", err)
	}
	if subtle.ConstantTimeCompare(c.KeyHash, sum[:]) != 1 {
		return store.Caller{}, ErrUnauthorized
	}
	e.callers.put(sum, c, now, epoch)
	return c, nil
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header, or "": what Authenticate takes.
func BearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// callerCache remembers successful key lookups for ttl, keyed by the key's
// hash (never the key). A revocation or rotation forgets the key's entries
// (forget); other isolates' caches keep them until they expire, which
// bounds how long a revoked key can still be used. A nil *callerCache
// caches nothing.
type callerCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	m     map[[32]byte]cachedCaller
	epoch uint64 // counts forgets: a lookup that started before one is not cached
}

type cachedCaller struct {
	caller  store.Caller
	expires time.Time
}

// get returns the cached caller of sum, if any, and the epoch to hand
// to put after a lookup in the store.
func (c *callerCache) get(sum [32]byte, now time.Time) (store.Caller, bool, uint64) {
	if c == nil {
		return store.Caller{}, false, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[sum]
	if !ok || !now.Before(v.expires) {
		return store.Caller{}, false, c.epoch
	}
	return v.caller, true, c.epoch
}

// put caches caller unless a forget came since get returned epoch: that
// lookup may have read a key before its revocation.
func (c *callerCache) put(sum [32]byte, caller store.Caller, now time.Time, epoch uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if len(c.m) >= c.max {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[sum] = cachedCaller{caller: caller, expires: now.Add(c.ttl)}
}

// forget drops the entries of the caller's key keyID.
func (c *callerCache) forget(caller, keyID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for k, v := range c.m {
		if v.caller.ID == caller && v.caller.KeyID == keyID {
			delete(c.m, k)
		}
	}
}
