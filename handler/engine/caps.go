package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/toolgate/toolgate-go/store"
)

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

func (e *Engine) requireCaller(ctx context.Context, id string) error {
	if _, err := e.store.CallerByID(ctx, id); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrUnknownCaller, id)
	} else if err != nil {
		return storeError("find caller", err)
	}
	return nil
}
