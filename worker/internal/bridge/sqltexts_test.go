package bridge

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// registry is a shim's side of sqlTexts: what it was handed, by id.
type registry map[int]string

func newTexts(t *testing.T) (*sqlTexts, registry) {
	t.Helper()
	reg := registry{}
	return &sqlTexts{register: func(id int, text string) bool {
		_, dup := reg[id]
		require.False(t, dup, "id %d registered twice", id)
		reg[id] = text
		return true
	}}, reg
}

func TestSQLTextsOneIDPerText(t *testing.T) {
	t.Parallel()
	texts, reg := newTexts(t)
	const constant = "SELECT key FROM idempotency WHERE key = ?"
	id, ok := texts.id(constant)
	require.True(t, ok)
	again, ok := texts.id(constant)
	require.True(t, ok)
	require.Equal(t, id, again, "the same constant")

	built := strings.Clone(constant) // same text, other bytes (as a query built per call)
	same, ok := texts.id(built)
	require.True(t, ok)
	require.Equal(t, id, same)

	prefix := constant[:len("SELECT key")] // same address, shorter: another text
	other, ok := texts.id(prefix)
	require.True(t, ok)
	require.NotEqual(t, id, other)

	require.Equal(t, registry{id: constant, other: "SELECT key"}, reg, "each text handed over once, under its id")
	_, ok = texts.id("")
	require.False(t, ok)
}

func TestSQLTextsFullTableSendsText(t *testing.T) {
	t.Parallel()
	texts, reg := newTexts(t)
	for i := range maxSQLTexts {
		_, ok := texts.id("SELECT " + strconv.Itoa(i))
		require.True(t, ok)
	}
	_, ok := texts.id("SELECT -1")
	require.False(t, ok, "no room: the text crosses in full")
	id, ok := texts.id("SELECT " + strconv.Itoa(7))
	require.True(t, ok, "known texts keep their ids")
	require.Equal(t, "SELECT 7", reg[id])
	require.Len(t, reg, maxSQLTexts)
}

func TestSQLTextsRegisterRefused(t *testing.T) {
	t.Parallel()
	texts := &sqlTexts{register: func(int, string) bool { return false }}
	_, ok := texts.id("SELECT 1")
	require.False(t, ok)
	var none *sqlTexts
	_, ok = none.id("SELECT 1")
	require.False(t, ok)
}

func TestAppendBatchSendsIDs(t *testing.T) {
	t.Parallel()
	texts, reg := newTexts(t)
	got, _, err := appendBatch(nil, []string{"SELECT ?", "SELECT ?"}, [][]any{{1}, {2}}, texts)
	require.NoError(t, err)
	require.Equal(t, `[[1,[1]],[1,[2]]]`, string(got))
	require.Equal(t, registry{1: "SELECT ?"}, reg)
}
