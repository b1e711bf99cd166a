//go:build !js

package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// TestDevSeeds applies the schema and `make seed-local`'s files (seed.sql, seed_dashboard.sql) twice to a
// SQLite file, as wrangler applies them to the local D1: the ledger's invariants hold, the second run
// changes nothing, and the dashboard's counters show 14 days whose money equals the ledger.
func TestDevSeeds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "dev.db"))
	require.NoError(t, err)
	require.NoError(t, sqlstore.Migrate(ctx, db))
	st := sqlstore.New(db)
	apply := func() {
		for _, f := range []string{"seed.sql", "seed_dashboard.sql"} {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			for _, stmt := range sqlstore.SplitStatements(string(src)) {
				_, err := db.Exec(ctx, stmt)
				require.NoError(t, err, "%s: %s", f, stmt)
			}
		}
	}
	apply()
	require.NoError(t, st.CheckInvariants(ctx))
	now := time.Now().UTC()
	q := store.UsageQuery{From: now.Truncate(24 * time.Hour).Add(-20 * 24 * time.Hour), To: now.Add(time.Hour), Bucket: 24 * time.Hour}
	days, err := st.Usage(ctx, q)
	require.NoError(t, err)
	entries, err := st.Entries(ctx, store.EntryFilter{Caller: "demo-history"})
	require.NoError(t, err)
	var charged, refunded int64
	for _, e := range entries {
		switch e.Kind {
		case store.EntryCharge:
			charged -= e.Amount
		case store.EntryRefund:
			refunded += e.Amount
		}
	}
	var gotCharged, gotRefunded, calls int64
	seen := 0
	for _, d := range days {
		gotCharged += d.Charged
		gotRefunded += d.Refunded
		calls += d.Calls
		if d.Charged > 0 {
			seen++
		}
	}
	require.Equal(t, 14, seen, "a day of charges for each of the last 14 days")
	require.Equal(t, []int64{charged, refunded}, []int64{gotCharged, gotRefunded})
	require.Positive(t, refunded)
	require.Positive(t, calls)
	bal, err := st.Balance(ctx, "demo-history", "USD")
	require.NoError(t, err)
	require.Equal(t, 2000-charged+refunded, bal)
	demo, err := st.Balance(ctx, "demo", "USD")
	require.NoError(t, err)
	require.EqualValues(t, 1000, demo, "the README's demo caller is untouched")

	apply()
	require.NoError(t, st.CheckInvariants(ctx))
	again, err := st.Usage(ctx, q)
	require.NoError(t, err)
	require.Equal(t, days, again, "a second run changes nothing")
}
