package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/store"
)

// This file is the engine's account side: the one way money comes in
// (Credit), the callers it belongs to, and the read models the surfaces
// show (Balance, Trace). The REST, MCP and admin surfaces go through these
// and never touch the store themselves.

// CreditRequest is money coming into a caller's prepaid balance: an admin
// credit today, a top-up or a credit-back later.
type CreditRequest struct {
	Caller    string
	Currency  string
	Amount    int64 // minor units, > 0
	Reference string
}

// Credit adds req.Amount to the caller's balance once per reference: a
// repeat with the same values changes nothing and reports Applied false. It
// returns ErrUnknownCaller for a caller that does not exist (a credit to a
// mistyped id would make a balance nobody can spend),
// store.ErrReferenceConflict for a reference reused with other values,
// store.ErrInvalidAmount or store.ErrUnknownCurrency for bad money, and a
// *StoreError when the store fails.
func (e *Engine) Credit(ctx context.Context, req CreditRequest) (store.CreditResult, error) {
	if _, err := e.store.CallerByID(ctx, req.Caller); errors.Is(err, store.ErrNotFound) {
		return store.CreditResult{}, fmt.Errorf("%w: %q", ErrUnknownCaller, req.Caller)
	} else if err != nil {
		return store.CreditResult{}, storeError("find caller", err)
	}
	res, err := e.store.Credit(ctx, store.CreditParams{Caller: req.Caller, Currency: req.Currency,
		Amount: req.Amount, Reference: req.Reference, Now: e.now()})
	if err != nil {
		return store.CreditResult{}, storeError("credit caller", err)
	}
	return res, nil
}

// CreateCaller registers a caller with a new random key and returns the
// key, which exists only in this answer (the store keeps its SHA-256). It
// returns store.ErrConflict (wrapped) when the id is taken and a
// *StoreError when the store fails.
func (e *Engine) CreateCaller(ctx context.Context, id, name string) (store.Caller, string, error) {
	if id == "" {
		var err error
		if id, err = e.newID("c_"); err != nil {
			return store.Caller{}, "", err
		}
	}
	key, err := newCallerKey(e.rand)
	if err != nil {
		return store.Caller{}, "", err
	}
	c := store.Caller{ID: id, Name: name, KeyHash: HashKey(key),
		CreatedAt: store.FromUnixMilli(store.UnixMilli(e.now()))}
	if err := e.store.CreateCaller(ctx, c); err != nil {
		return store.Caller{}, "", storeError("create caller", err)
	}
	return c, key, nil
}

// Balance returns the caller's balance in currency, in minor units (0 when
// nothing was ever credited). It returns a *StoreError when the store fails.
func (e *Engine) Balance(ctx context.Context, callerID, currency string) (int64, error) {
	b, err := e.store.Balance(ctx, callerID, currency)
	if err != nil {
		return 0, storeError("read balance", err)
	}
	return b, nil
}

// CallTrace is one of a caller's calls under one key and tool: the record
// and the ledger entries that moved its money.
type CallTrace struct {
	Tool    catalog.Tool
	Record  store.Record
	Entries []store.Entry
}

// Trace returns the caller's calls under key for each of tools that has a
// record (none: an empty slice). It looks only at the caller's own scoped
// keys, so another caller's call under the same key string is invisible.
// It returns a *StoreError when the store fails.
func (e *Engine) Trace(ctx context.Context, callerID, key string, tools []catalog.Tool) ([]CallTrace, error) {
	var out []CallTrace
	for _, t := range tools {
		scoped := ScopedKey(callerID, t.Name, key)
		rec, err := e.store.Peek(ctx, scoped)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError("peek key", err)
		}
		entries, err := e.store.Entries(ctx, store.EntryFilter{Caller: callerID, Key: scoped})
		if err != nil {
			return nil, storeError("read entries", err)
		}
		out = append(out, CallTrace{Tool: t, Record: rec, Entries: entries})
	}
	return out, nil
}
