package handler

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// capJSON is a spending cap as the admin API shows it.
type capJSON struct {
	Key       *string    `json:"key,omitempty"` // absent: the caller as a whole
	Currency  string     `json:"currency"`
	Limit     string     `json:"limit"`
	Reset     string     `json:"reset"`
	Spent     string     `json:"spent"`
	Remaining string     `json:"remaining"`
	ResetsAt  *time.Time `json:"resetsAt,omitempty"` // absent for reset never
}

func toCapJSON(c store.Cap) capJSON {
	out := capJSON{Currency: c.Currency, Limit: store.FormatAmount(c.Limit, c.Currency), Reset: string(c.Reset),
		Spent: store.FormatAmount(c.Spent, c.Currency), Remaining: store.FormatAmount(max(c.Limit-c.Spent, 0), c.Currency)}
	if c.Key != store.AnyKey {
		k := c.Key
		out.Key = &k
	}
	if !c.ResetsAt.IsZero() {
		r := c.ResetsAt
		out.ResetsAt = &r
	}
	return out
}

// capKey names the key of a cap as the admin API does: absent (nil) is the
// caller as a whole (store.AnyKey), "" the caller's original key, else a
// key id.
func capKey(key *string) (string, error) {
	if key == nil {
		return store.AnyKey, nil
	}
	if *key != "" && !catalog.ValidName(*key, "_.:-") {
		return "", &problem.BadRequestError{Reason: "key must be a key id (1-64 characters of A-Z a-z 0-9 _ . : -), \"\" for the caller's original key, or left out for the caller as a whole"}
	}
	return *key, nil
}

// handlePutCap serves PUT /v1/admin/callers/{id}/caps
// {"currency": "USD", "limit": "5.00", "reset": "daily", "key": optional}:
// it creates or replaces the cap of the caller (no key) or of one of its
// keys (its id; "" or "k_original" is the caller's original key) in that
// currency. A key the caller does not have is 404.
func (s *server) handlePutCap(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	var in struct {
		Currency string  `json:"currency"`
		Limit    string  `json:"limit"`
		Reset    string  `json:"reset"`
		Key      *string `json:"key"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		problem.Write(w, err)
		return
	}
	key, err := capKey(in.Key)
	if err != nil {
		problem.Write(w, err)
		return
	}
	if !store.CapReset(in.Reset).Valid() {
		problem.Write(w, &problem.BadRequestError{Reason: "reset must be daily, weekly, monthly or never"})
		return
	}
	if _, err := store.Decimals(in.Currency); err != nil {
		problem.Write(w, &problem.BadRequestError{Reason: "currency " + in.Currency + " is not supported"})
		return
	}
	limit, err := store.ParseAmount(in.Limit, in.Currency)
	if err != nil {
		problem.Write(w, &problem.BadRequestError{Reason: "limit must be a non-negative decimal string in " + in.Currency + ", such as \"5.00\": " + err.Error()})
		return
	}
	c, err := s.engine.SetCap(r.Context(), store.SetCapParams{Caller: r.PathValue("id"), Key: key,
		Currency: in.Currency, Limit: limit, Reset: store.CapReset(in.Reset)})
	if err != nil {
		problem.Write(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toCapJSON(c))
}

// handleGetCaps serves GET /v1/admin/callers/{id}/caps: the caller's caps
// with their spend in the current window.
func (s *server) handleGetCaps(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	caps, err := s.engine.Caps(r.Context(), r.PathValue("id"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	out := make([]capJSON, 0, len(caps))
	for _, c := range caps {
		out = append(out, toCapJSON(c))
	}
	writeJSON(w, http.StatusOK, struct {
		Caller string    `json:"caller"`
		Caps   []capJSON `json:"caps"`
	}{r.PathValue("id"), out})
}

// handleDeleteCap serves DELETE /v1/admin/callers/{id}/caps?currency=USD
// [&key=...]: it removes the cap named as PUT names it (key left out: the
// caller as a whole; "" or "k_original": the original key; else a key id)
// and answers 204. Parameters other than currency and key, or either of
// them twice, are 400: a misspelt key must not delete the caller's cap.
// No such cap is 404 cap-not-found, nothing changed.
func (s *server) handleDeleteCap(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		problem.Write(w, &problem.BadRequestError{Reason: "the query string is malformed: " + err.Error()})
		return
	}
	for name, vs := range q {
		if (name != "currency" && name != "key") || len(vs) != 1 {
			problem.Write(w, &problem.BadRequestError{Reason: "name the cap with currency and, for a key's cap, key, each once; nothing else"})
			return
		}
	}
	var named *string
	if vs, ok := q["key"]; ok {
		named = &vs[0]
	}
	key, err := capKey(named)
	if err != nil {
		problem.Write(w, err)
		return
	}
	currency := q.Get("currency")
	if _, err := store.Decimals(currency); err != nil {
		problem.Write(w, &problem.BadRequestError{Reason: "currency is required and must be supported: got " + strconv.Quote(currency)})
		return
	}
	if err := s.engine.DeleteCap(r.Context(), r.PathValue("id"), key, currency); err != nil {
		problem.Write(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
