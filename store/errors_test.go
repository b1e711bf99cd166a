package store

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEverySentinelIsAnAnswer keeps IsAnswer's list equal to the Err
// variables declared in errors.go: a sentinel missing from it would be taken
// for an outage (a 503 and retries) instead of an answer.
func TestEverySentinelIsAnAnswer(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	require.NoError(t, err)
	declared := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, spec := range g.Specs {
			for _, name := range spec.(*ast.ValueSpec).Names {
				if strings.HasPrefix(name.Name, "Err") {
					declared++
				}
			}
		}
	}
	require.Equal(t, declared, len(answers), "every Err variable of errors.go is in answers, once")
	for _, a := range answers {
		require.True(t, IsAnswer(fmt.Errorf("wrapped: %w", a)), a.Error())
	}
	require.True(t, IsAnswer(&InsufficientFundsError{}))
	require.False(t, IsAnswer(errors.New("d1: Network connection lost")))
	require.False(t, IsAnswer(nil))
}
