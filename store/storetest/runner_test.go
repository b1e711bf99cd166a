package storetest_test

import (
	"context"

	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/memory"
	"github.com/toolgate/toolgate-go/store/storetest"
)

// brokenStore double-charges: it forgets the charge state on takeover.
// RunAll must report the cases that catch it, so the D1 runner can fail.
type brokenStore struct{ *memory.Store }

func (b brokenStore) Charge(ctx context.Context, p store.ChargeParams) (store.ChargeResult, error) {
	_, _, _ = b.Store.Refund(ctx, p.Fence, p.Now)
	return b.Store.Charge(ctx, p)
}

func TestRunAllReportsFailures(t *testing.T) {
	t.Parallel()
	ok := storetest.RunAll(storetest.Harness{New: func(storetest.TB) (store.Store, *store.CountingClient) {
		return memory.New(), nil
	}})
	require.Len(t, ok, len(storetest.Cases))
	for _, r := range ok {
		require.True(t, r.Passed, "%s: %s", r.Name, r.Failure)
	}
	bad := storetest.RunAll(storetest.Harness{New: func(storetest.TB) (store.Store, *store.CountingClient) {
		return brokenStore{memory.New()}, nil
	}})
	failed := map[string]string{}
	for _, r := range bad {
		if !r.Passed {
			failed[r.Name] = r.Failure
		}
	}
	require.Contains(t, failed, "CrashAfterChargeThenTakeover")
	require.NotEmpty(t, failed["CrashAfterChargeThenTakeover"])
}
