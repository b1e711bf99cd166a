package handler

import (
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// keyJSON is a caller key as the admin API shows it: never its hash.
type keyJSON struct {
	ID         string     `json:"id"`
	Caller     string     `json:"caller"`
	Name       string     `json:"name"`
	Status     string     `json:"status"` // active or revoked
	CreatedAt  time.Time  `json:"createdAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	// Key is the secret, only in the answers of create and rotate.
	Key string `json:"key,omitempty"`
}

func toKeyJSON(k store.CallerKey, secret string) keyJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	out := keyJSON{ID: k.ID, Caller: k.Caller, Name: k.Name, Status: "active", CreatedAt: k.CreatedAt,
		RevokedAt: opt(k.RevokedAt), LastUsedAt: opt(k.LastUsedAt), Key: secret}
	if out.RevokedAt != nil {
		out.Status = "revoked"
	}
	return out
}

// pathIDs returns the {id} (and {keyId}, when the route has one) path
// values, or writes 404: an id that cannot exist names nothing.
func pathIDs(w http.ResponseWriter, r *http.Request, withKey bool) (caller, key string, ok bool) {
	caller, key = r.PathValue("id"), r.PathValue("keyId")
	if !catalog.ValidName(caller, "_.:-") {
		problem.Write(w, engine.ErrUnknownCaller)
		return "", "", false
	}
	if withKey && !catalog.ValidName(key, "_.:-") {
		problem.Write(w, engine.ErrKeyNotFound)
		return "", "", false
	}
	return caller, key, true
}

// validKeyName reports whether name is 1-200 bytes of UTF-8 without
// control characters.
func validKeyName(name string) bool {
	return name != "" && len(name) <= engine.MaxKeyNameLen && utf8.ValidString(name) &&
		strings.IndexFunc(name, unicode.IsControl) < 0
}

// handleCreateKey serves POST /v1/admin/callers/{id}/keys {"name": "..."}:
// 201 with the new key's secret, shown this once.
func (s *server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caller, _, ok := pathIDs(w, r, false)
	if !ok {
		return
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		problem.Write(w, err)
		return
	}
	if !validKeyName(in.Name) {
		problem.Write(w, &problem.BadRequestError{Reason: "name is required: 1-200 bytes of UTF-8, no control characters"})
		return
	}
	k, secret, err := s.engine.CreateKey(r.Context(), caller, in.Name)
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, toKeyJSON(k, secret))
}

// handleListKeys serves GET /v1/admin/callers/{id}/keys.
func (s *server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caller, _, ok := pathIDs(w, r, false)
	if !ok {
		return
	}
	keys, err := s.engine.Keys(r.Context(), caller)
	if err != nil {
		problem.Write(w, err)
		return
	}
	out := struct {
		Caller string    `json:"caller"`
		Keys   []keyJSON `json:"keys"`
	}{Caller: caller, Keys: make([]keyJSON, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, toKeyJSON(k, ""))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRevokeKey serves POST /v1/admin/callers/{id}/keys/{keyId}/revoke:
// 200 with the key, also when it was revoked before.
func (s *server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caller, key, ok := pathIDs(w, r, true)
	if !ok {
		return
	}
	k, err := s.engine.RevokeKey(r.Context(), caller, key)
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyJSON(k, ""))
}

// handleRotateKey serves POST /v1/admin/callers/{id}/keys/{keyId}/rotate:
// 200 with the key's new secret, shown this once; the key id stays.
func (s *server) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caller, key, ok := pathIDs(w, r, true)
	if !ok {
		return
	}
	k, secret, err := s.engine.RotateKey(r.Context(), caller, key)
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, toKeyJSON(k, secret))
}

// usageJSON is the answer of GET /v1/usage and of the admin's per-caller
// usage: per window, per tool and currency, and totals per currency.
type usageJSON struct {
	Caller  string            `json:"caller"`
	Scope   string            `json:"scope"` // "caller": every key of the caller together
	Periods []usagePeriodJSON `json:"periods"`
	// Caps are the caller's spending caps (the caller's and its keys'),
	// with their spend and what remains in the current window.
	Caps []capJSON `json:"caps"`
	// Keys are the caller's keys, oldest first, each with its own usage
	// and caps.
	Keys []keyUsageJSON `json:"keys"`
}

// keyUsageJSON is one key's part of the usage read-out.
type keyUsageJSON struct {
	ID        string               `json:"id"`
	Name      string               `json:"name"`
	Status    string               `json:"status"` // active or revoked
	RevokedAt *time.Time           `json:"revokedAt"`
	Periods   []keyUsagePeriodJSON `json:"periods"`
	// Caps are the key's own caps (the caller's caps with this key).
	Caps []capJSON `json:"caps"`
}

type keyUsagePeriodJSON struct {
	Period string             `json:"period"`
	From   time.Time          `json:"from"`
	To     time.Time          `json:"to"`
	Tools  []keyToolUsageJSON `json:"tools"`
	Totals []keyToolUsageJSON `json:"totals"`
}

// keyToolUsageJSON is toolUsageJSON with what metered holds gave back
// (spent is charged less refunded and released).
type keyToolUsageJSON struct {
	toolUsageJSON
	Released string `json:"released"`
}

func toKeyToolUsage(u store.KeyUsage) keyToolUsageJSON {
	f := func(v int64) string { return store.FormatAmount(v, u.Currency) }
	return keyToolUsageJSON{toolUsageJSON: toolUsageJSON{Tool: u.Tool, Currency: u.Currency, Calls: u.Calls,
		Charges: u.Charges, Refunds: u.Refunds, Charged: f(u.Charged), Refunded: f(u.Refunded), Spent: f(u.Spent()),
		SpentMinor: u.Spent()}, Released: f(u.Released)}
}

func toKeyUsage(ku engine.KeyUsage, caps []store.Cap) keyUsageJSON {
	k := toKeyJSON(ku.Key, "")
	out := keyUsageJSON{ID: k.ID, Name: k.Name, Status: k.Status, RevokedAt: k.RevokedAt,
		Periods: make([]keyUsagePeriodJSON, 0, len(ku.Windows)), Caps: []capJSON{}}
	for _, c := range caps {
		if c.Key == ku.Key.ID {
			out.Caps = append(out.Caps, toCapJSON(c))
		}
	}
	for _, win := range ku.Windows {
		p := keyUsagePeriodJSON{Period: win.Period, From: win.From, To: win.To, Tools: []keyToolUsageJSON{},
			Totals: []keyToolUsageJSON{}}
		var totals []store.KeyUsage
		for _, u := range win.Tools {
			p.Tools = append(p.Tools, toKeyToolUsage(u))
			i := 0
			for i < len(totals) && totals[i].Currency != u.Currency {
				i++
			}
			if i == len(totals) {
				totals = append(totals, store.KeyUsage{Currency: u.Currency})
			}
			totals[i].Add(u)
		}
		for _, t := range totals {
			p.Totals = append(p.Totals, toKeyToolUsage(t))
		}
		out.Periods = append(out.Periods, p)
	}
	return out
}

type usagePeriodJSON struct {
	Period string          `json:"period"`
	From   time.Time       `json:"from"`
	To     time.Time       `json:"to"`
	Tools  []toolUsageJSON `json:"tools"`
	Totals []toolUsageJSON `json:"totals"`
}

type toolUsageJSON struct {
	Tool       string `json:"tool,omitempty"`
	Currency   string `json:"currency"`
	Calls      int64  `json:"calls"`
	Charges    int64  `json:"charges"`
	Refunds    int64  `json:"refunds"`
	Charged    string `json:"charged"`
	Refunded   string `json:"refunded"`
	Released   string `json:"released"` // what metered calls' holds gave back
	Spent      string `json:"spent"`
	SpentMinor int64  `json:"spentMinor"`
}

func toToolUsage(u store.Usage) toolUsageJSON {
	f := func(v int64) string { return store.FormatAmount(v, u.Currency) }
	return toolUsageJSON{Tool: u.Tool, Currency: u.Currency, Calls: u.Calls, Charges: u.Charges, Refunds: u.Refunds,
		Charged: f(u.Charged), Refunded: f(u.Refunded), Released: f(u.Released),
		Spent: f(u.Charged - u.Refunded - u.Released), SpentMinor: u.Charged - u.Refunded - u.Released}
}

// writeUsage writes the caller's usage read-out.
// It is 404 for an unknown caller.
func (s *server) writeUsage(w http.ResponseWriter, r *http.Request, caller string) {
	keys, err := s.engine.CallerKeyUsage(r.Context(), caller) // ErrUnknownCaller
	if err != nil {
		problem.Write(w, err)
		return
	}
	wins, err := s.engine.CallerUsage(r.Context(), caller)
	if err != nil {
		problem.Write(w, err)
		return
	}
	caps, err := s.engine.Caps(r.Context(), caller)
	if err != nil {
		problem.Write(w, err)
		return
	}
	out := usageJSON{Caller: caller, Scope: "caller", Periods: make([]usagePeriodJSON, 0, len(wins)), Caps: []capJSON{},
		Keys: make([]keyUsageJSON, 0, len(keys))}
	for _, c := range caps {
		out.Caps = append(out.Caps, toCapJSON(c))
	}
	for _, ku := range keys {
		out.Keys = append(out.Keys, toKeyUsage(ku, caps))
	}
	for _, win := range wins {
		p := usagePeriodJSON{Period: win.Period, From: win.From, To: win.To, Tools: []toolUsageJSON{}, Totals: []toolUsageJSON{}}
		var totals []store.Usage
		for _, u := range win.Tools {
			p.Tools = append(p.Tools, toToolUsage(u))
			i := 0
			for i < len(totals) && totals[i].Currency != u.Currency {
				i++
			}
			if i == len(totals) {
				totals = append(totals, store.Usage{UsageKey: store.UsageKey{Currency: u.Currency}})
			}
			totals[i].Add(u)
		}
		for _, t := range totals {
			p.Totals = append(p.Totals, toToolUsage(t))
		}
		out.Periods = append(out.Periods, p)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleUsage serves GET /v1/usage: the caller's spend and calls per tool
// in the current UTC day, week and month, as a whole and per key.
func (s *server) handleUsage(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	s.writeUsage(w, r, caller.ID)
}

// handleCallerUsage serves GET /v1/admin/callers/{id}/usage: the same for
// any caller.
func (s *server) handleCallerUsage(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caller, _, ok := pathIDs(w, r, false)
	if !ok {
		return
	}
	s.writeUsage(w, r, caller)
}
