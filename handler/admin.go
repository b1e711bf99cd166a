package handler

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/handler/safejson"
	"github.com/toolgate/toolgate-go/store"
)

// requireAdmin checks the admin bearer token in constant time, or writes 401.
func (s *server) requireAdmin(w http.ResponseWriter, r *http.Request) bool {
	if s.adminToken == "" || !equalSecret(engine.BearerToken(r), s.adminToken) {
		problem.Write(w, engine.ErrUnauthorized)
		return false
	}
	return true
}

// decodeBody reads a JSON object into v, refusing unknown fields.
func (s *server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(w, r, s.maxBody)
	if err != nil {
		return err
	}
	if err := safejson.DecodeStrict(body, v); err != nil {
		return &problem.BadRequestError{Reason: "the body is not the expected JSON object: " + err.Error()}
	}
	return nil
}

// handleCreateCaller serves POST /v1/admin/callers {"name": "...", "id": optional}.
// The answer holds the caller's key; it is shown this once and stored only
// as its SHA-256.
func (s *server) handleCreateCaller(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	var in struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		problem.Write(w, err)
		return
	}
	if in.Name == "" || len(in.Name) > 200 {
		problem.Write(w, &problem.BadRequestError{Reason: "name is required (at most 200 bytes)"})
		return
	}
	if in.ID != "" && !catalog.ValidName(in.ID, "_.:-") {
		problem.Write(w, &problem.BadRequestError{Reason: "id must be 1-64 characters of A-Z a-z 0-9 _ . : -"})
		return
	}
	c, key, err := s.engine.CreateCaller(r.Context(), in.ID, in.Name)
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, struct {
		ID        string    `json:"id"`
		Name      string    `json:"name"`
		Key       string    `json:"key"`
		CreatedAt time.Time `json:"createdAt"`
	}{c.ID, c.Name, key, c.CreatedAt})
}

// handleCredit serves POST /v1/admin/credits
// {"caller": "...", "amount": "10.00", "currency": "USD", "reference": "..."}.
// It is idempotent by reference: a repeat answers 200 with applied false
// and Idempotent-Replayed: true; a first credit answers 201.
func (s *server) handleCredit(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	var in struct {
		Caller    string `json:"caller"`
		Amount    string `json:"amount"`
		Currency  string `json:"currency"`
		Reference string `json:"reference"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		problem.Write(w, err)
		return
	}
	if !catalog.ValidName(in.Caller, "_.:-") {
		problem.Write(w, &problem.BadRequestError{Reason: "caller must be a caller id"})
		return
	}
	if err := engine.ValidateIdempotencyKey(in.Reference); err != nil {
		problem.Write(w, &problem.BadRequestError{Reason: "reference must be 1-255 printable ASCII characters"})
		return
	}
	amount, err := store.ParseAmount(in.Amount, in.Currency)
	if err != nil {
		problem.Write(w, fmt.Errorf("parse amount: %w", err))
		return
	}
	res, err := s.engine.Credit(r.Context(), engine.CreditRequest{Caller: in.Caller, Currency: in.Currency,
		Amount: amount, Reference: in.Reference})
	if err != nil {
		problem.Write(w, err)
		return
	}
	status := http.StatusCreated
	if !res.Applied {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, status, struct {
		Applied   bool   `json:"applied"`
		Caller    string `json:"caller"`
		Currency  string `json:"currency"`
		Balance   string `json:"balance"`
		Reference string `json:"reference"`
	}{res.Applied, in.Caller, in.Currency, store.FormatAmount(res.Balance, in.Currency), in.Reference})
}

// equalSecret compares two secrets in constant time, whatever their lengths.
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
