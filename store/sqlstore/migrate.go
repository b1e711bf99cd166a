package sqlstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/toolgate/toolgate-go/store"
)

// Migrations holds the schema as plain .sql files. The same files serve
// `wrangler d1 migrations apply` (wrangler.toml's migrations_dir) and Migrate.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Migrate applies the embedded migrations that db has not seen yet. It
// records them in wrangler's d1_migrations table, so a database migrated by
// wrangler is not migrated again and vice versa.
//
// On a Batcher each file and its record are one atomic batch: a crash
// leaves the file wholly applied or not at all, and of two processes
// migrating at once the second fails its batch (0002 rebuilds a table and
// adds a column, which cannot run twice), finds the file recorded and goes
// on. Without a Batcher (libSQL over HTTP) the statements run one by one:
// migrate such a database from one process.
func Migrate(ctx context.Context, db store.DbClient) error {
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS d1_migrations(
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	rows, err := db.Query(ctx, `SELECT name FROM d1_migrations`)
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	applied := make(map[string]bool, len(rows))
	for _, r := range rows {
		applied[asString(r[0])] = true
	}
	names, err := fs.Glob(Migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("glob migrations: %w", err)
	}
	sort.Strings(names)
	for _, path := range names {
		name := strings.TrimPrefix(path, "migrations/")
		if applied[name] {
			continue
		}
		src, err := Migrations.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read migration %s: %w", name, err)
		}
		if err := apply(ctx, db, name, SplitStatements(string(src))); err != nil {
			return err
		}
	}
	return nil
}

const recordMigrationSQL = `INSERT INTO d1_migrations (name) VALUES (?) ON CONFLICT(name) DO NOTHING`

// apply runs one migration's statements and records it: in one batch on a
// Batcher, else one by one.
func apply(ctx context.Context, db store.DbClient, name string, stmts []string) error {
	if b, ok := store.BatcherOf(db); ok {
		batch := make([]store.Stmt, 0, len(stmts)+1)
		for _, st := range stmts {
			batch = append(batch, store.Stmt{Query: st})
		}
		batch = append(batch, store.Stmt{Query: recordMigrationSQL, Args: []any{name}})
		if _, err := b.Batch(ctx, batch); err != nil {
			// Another process may have applied it first.
			rows, rerr := db.Query(ctx, `SELECT 1 FROM d1_migrations WHERE name = ?`, name)
			if rerr == nil && len(rows) == 1 {
				return nil
			}
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
		return nil
	}
	for _, stmt := range stmts {
		if _, err := db.Exec(ctx, stmt); err != nil && !columnExists(stmt, err) {
			return fmt.Errorf("apply migration %s: %w", name, err)
		}
	}
	if _, err := db.Exec(ctx, recordMigrationSQL, name); err != nil {
		return fmt.Errorf("record migration %s: %w", name, err)
	}
	return nil
}

// SplitStatements splits a SQL script into statements. It understands
// comments, quoted strings and CREATE TRIGGER ... BEGIN ... END bodies, whose
// inner semicolons do not end the statement.
func SplitStatements(src string) []string {
	var (
		out  []string
		cur  strings.Builder
		code strings.Builder // cur without comments or strings, for keyword checks
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
		code.Reset()
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			cur.WriteByte('\n')
			code.WriteByte(' ')
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				i = len(src)
			} else {
				i += end + 3
			}
			cur.WriteByte(' ')
			code.WriteByte(' ')
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for j < len(src) {
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(src) {
				j = len(src) - 1
			}
			cur.WriteString(src[i : j+1])
			code.WriteString(" x ")
			i = j
		case c == ';':
			words := strings.Fields(strings.ToUpper(code.String()))
			inTrigger := len(words) >= 2 && words[0] == "CREATE" && containsTrigger(words)
			if inTrigger && words[len(words)-1] != "END" {
				cur.WriteByte(c)
				code.WriteString(" ; ")
				continue
			}
			flush()
		default:
			cur.WriteByte(c)
			code.WriteByte(c)
		}
	}
	flush()
	return out
}

func containsTrigger(words []string) bool {
	for _, w := range words[1:min(len(words), 4)] {
		if w == "TRIGGER" {
			return true
		}
	}
	return false
}

// columnExists reports whether err is an ALTER TABLE ... ADD COLUMN that
// another process applied first: SQLite has no ADD COLUMN IF NOT EXISTS, so
// this keeps two processes migrating at once safe.
func columnExists(stmt string, err error) bool {
	return strings.HasPrefix(strings.ToUpper(stmt), "ALTER TABLE") && strings.Contains(err.Error(), "duplicate column name")
}
