package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/toolgate/toolgate-go/store"
)

// ErrCapNotFound means an admin request named a spending cap the caller
// does not have.
var ErrCapNotFound = errors.New("cap not found")

// SetCap sets a spending cap of a caller, or of one of its keys (p.Key;
// store.AnyKey for the caller as a whole), at the engine's clock. It
// returns ErrUnknownCaller, store.ErrUnknownCurrency, store.ErrInvalidAmount
// or store.ErrInvalidArgument (wrapped) for bad input, with nothing
// changed, and a *StoreError when the store fails.
func (e *Engine) SetCap(ctx context.Context, p store.SetCapParams) (store.Cap, error) {
	if err := e.requireCaller(ctx, p.Caller); err != nil {
		return store.Cap{}, err
	}
	if p.Key == "" {
		// The caller's original key: what authentication names it.
		p.Key = store.OriginalKeyID
	}
	if p.Key != store.AnyKey {
		keys, err := e.Keys(ctx, p.Caller)
		if err != nil {
			return store.Cap{}, err
		}
		known := false
		for _, k := range keys {
			known = known || k.ID == p.Key
		}
		if !known {
			// A cap on a key the caller does not have would never apply.
			return store.Cap{}, fmt.Errorf("%w: %q", ErrKeyNotFound, p.Key)
		}
	}
	p.Now = e.now()
	c, err := e.store.SetCap(ctx, p)
	if err != nil {
		return store.Cap{}, storeError("set cap", err)
	}
	return c, nil
}

// Caps returns a caller's spending caps with their current spend. It
// returns ErrUnknownCaller, or a *StoreError when the store fails.
func (e *Engine) Caps(ctx context.Context, caller string) ([]store.Cap, error) {
	if err := e.requireCaller(ctx, caller); err != nil {
		return nil, err
	}
	caps, err := e.store.Caps(ctx, caller, e.now())
	if err != nil {
		return nil, storeError("read caps", err)
	}
	return caps, nil
}

// DeleteCap removes the caller's spending cap on key (store.AnyKey for the
// caller as a whole, "" for its original key) in currency, and the spend
// kept for its windows; the ledger keeps every charge. It returns
// ErrUnknownCaller, ErrCapNotFound (wrapped) when there is no such cap,
// with nothing changed, and a *StoreError when the store fails.
func (e *Engine) DeleteCap(ctx context.Context, caller, key, currency string) error {
	if err := e.requireCaller(ctx, caller); err != nil {
		return err
	}
	if key == "" {
		key = store.OriginalKeyID
	}
	err := e.store.DeleteCap(ctx, caller, key, currency)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s cap of %q", ErrCapNotFound, currency, key)
	}
	if err != nil {
		return storeError("delete cap", err)
	}
	return nil
}

func (e *Engine) requireCaller(ctx context.Context, id string) error {
	if _, err := e.store.CallerByID(ctx, id); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrUnknownCaller, id)
	} else if err != nil {
		return storeError("find caller", err)
	}
	return nil
}
