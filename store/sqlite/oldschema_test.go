//go:build !js

package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/sqlite"
	"github.com/toolgate/toolgate-go/store/sqlstore"
)

// openMigratedBefore opens a new SQLite database that has seen every
// embedded migration sorted before the file named next, as an older
// version of toolgate left it (recorded in d1_migrations as wrangler does),
// so that a test can put old rows in it and then migrate.
func openMigratedBefore(t *testing.T, next string) store.DbClient {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "old.db"))
	require.NoError(t, err)
	_, err = db.Exec(ctx, `CREATE TABLE d1_migrations(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)`)
	require.NoError(t, err)
	names, err := sqlstore.Migrations.ReadDir("migrations")
	require.NoError(t, err)
	for _, n := range names {
		if n.Name() >= next {
			break
		}
		src, err := sqlstore.Migrations.ReadFile("migrations/" + n.Name())
		require.NoError(t, err)
		for _, stmt := range sqlstore.SplitStatements(string(src)) {
			_, err := db.Exec(ctx, stmt)
			require.NoError(t, err, n.Name())
		}
		_, err = db.Exec(ctx, `INSERT INTO d1_migrations (name) VALUES (?)`, n.Name())
		require.NoError(t, err)
	}
	return db
}
