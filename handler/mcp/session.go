package mcp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate-go/store"
)

// session validates the Mcp-Session-Id header for caller. When required is
// false a missing header is fine (ok, ""). Otherwise it writes 400 for a
// missing id and 404 for an unknown one.
func (s *server) session(w http.ResponseWriter, r *http.Request, id json.RawMessage, caller store.Caller, required bool) (string, bool) {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		if !required {
			return "", true
		}
		writeRPCError(w, http.StatusBadRequest, id, rpcTransportError,
			"Bad Request: the Mcp-Session-Id header is required; send initialize first")
		return "", false
	}
	if !s.validSession(sid, caller.ID, s.now()) {
		writeRPCError(w, http.StatusNotFound, id, rpcSessionUnknown,
			"Session not found: it is unknown, expired or ended; send initialize to start a new session")
		return "", false
	}
	return sid, true
}

const sessionPrefix = "tgs1."

// newSession returns a session id for callerID issued at now.
func (s *server) newSession(callerID string, now time.Time) string {
	var p [24]byte // issued-at (unix seconds), 16-byte nonce
	binary.BigEndian.PutUint64(p[:8], uint64(now.Unix()))
	_, _ = rand.Read(p[8:])
	enc := base64.RawURLEncoding
	return sessionPrefix + enc.EncodeToString(p[:]) + "." + enc.EncodeToString(s.sessionMAC(callerID, p[:]))
}

func (s *server) sessionMAC(callerID string, payload []byte) []byte {
	m := hmac.New(sha256.New, s.sessionKey())
	m.Write([]byte("toolgate-mcp-session\x00" + callerID + "\x00"))
	m.Write(payload)
	return m.Sum(nil)[:16]
}

// parseSession returns the payload of a well-formed id, or nil.
func parseSession(sid string) (payload, mac []byte) {
	rest, ok := strings.CutPrefix(sid, sessionPrefix)
	if !ok {
		return nil, nil
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, nil
	}
	// Strict: one spelling per id, so an ended session can't be revived
	// under another spelling (other unused trailing bits).
	enc := base64.RawURLEncoding.Strict()
	payload, err1 := enc.DecodeString(p64)
	mac, err2 := enc.DecodeString(m64)
	if err1 != nil || err2 != nil || len(payload) != 24 || len(mac) != 16 {
		return nil, nil
	}
	return payload, mac
}

// sessionExpiry is when a well-formed session id expires.
func (s *server) sessionExpiry(sid string) time.Time {
	payload, _ := parseSession(sid)
	if payload == nil {
		return time.Time{}
	}
	return time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0).Add(s.ttl)
}

// validSession reports whether sid was issued by this key to callerID, has
// not expired, and was not ended here.
func (s *server) validSession(sid, callerID string, now time.Time) bool {
	payload, mac := parseSession(sid)
	if payload == nil || !hmac.Equal(mac, s.sessionMAC(callerID, payload)) {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0)
	if !now.Before(issued.Add(s.ttl)) || issued.After(now.Add(time.Minute)) {
		return false
	}
	return !s.ended.has(sid, now)
}

// endedSessions is the in-memory list of sessions ended by DELETE, each kept
// until it would have expired anyway.
type endedSessions struct {
	mu sync.Mutex
	m  map[string]time.Time // session id -> expiry
}

// maxEndedSessions bounds the list; past it the oldest-expiring are
// forgotten first, which only lets an ended id be used again.
const maxEndedSessions = 1 << 16

func (e *endedSessions) add(sid string, expires, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]time.Time{}
	}
	if len(e.m) >= maxEndedSessions {
		var oldest string
		for k, exp := range e.m {
			if !now.Before(exp) {
				delete(e.m, k)
			} else if oldest == "" || exp.Before(e.m[oldest]) {
				oldest = k
			}
		}
		if len(e.m) >= maxEndedSessions {
			delete(e.m, oldest)
		}
	}
	e.m[sid] = expires
}

func (e *endedSessions) has(sid string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	exp, ok := e.m[sid]
	return ok && now.Before(exp)
}
