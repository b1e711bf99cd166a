//go:build !js

package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
)

var fingerprintRE = regexp.MustCompile(`^v1:[0-9a-f]{64}$`)

// FuzzCallRequest checks request parsing and fingerprinting: key
// validation, scoping, canonicalisation (idempotent, meaning-preserving) and
// the fingerprint, then sends the request through the engine on SQLite and
// checks that a canonical re-send replays it byte for byte. Seeds live in
// testdata/fuzz/FuzzCallRequest.
func FuzzCallRequest(f *testing.F) {
	f.Add("k", []byte(`{"a":1}`))
	f.Add("k", []byte(`{"t":"\ud800"}`))
	f.Add("k", []byte(`{"t":"\ud83d\ude00"}`))
	f.Add("k", []byte(strings.Repeat("[", 200)+strings.Repeat("]", 200)))
	st, _ := openStore(f)
	cat, err := catalog.ParseCatalog([]byte(`{"tools": [{"name": "free", "description": "d", "price": "0",
		"currency": "USD", "upstream": {"url": "http://upstream.test/"}}]}`))
	require.NoError(f, err)
	eng, err := engine.New(engine.Config{Store: st, Catalog: cat,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Upstream: engine.UpstreamFunc(func(_ context.Context, r engine.UpstreamRequest) (engine.UpstreamResponse, error) {
			return engine.UpstreamResponse{StatusCode: http.StatusOK, ContentType: "application/json", Body: r.Body}, nil
		})})
	require.NoError(f, err)
	var n atomic.Int64

	f.Fuzz(func(t *testing.T, key string, body []byte) {
		keyErr := engine.ValidateIdempotencyKey(key)
		if keyErr == nil {
			sk := engine.ScopedKey("caller", "free", key)
			require.Len(t, sk, 67)
			require.NoError(t, store.ValidateKey(sk))
		}
		canonical, inErr := engine.Canonicalize(body)
		if inErr == nil {
			require.True(t, json.Valid(canonical), "%q", canonical)
			again, err := engine.Canonicalize(canonical)
			require.NoError(t, err)
			require.Equal(t, canonical, again, "canonical form is a fixed point")
			require.Equal(t, decodeNumbers(t, body), decodeNumbers(t, canonical), "same meaning")
			fp := engine.Fingerprint("free", canonical)
			require.Regexp(t, fingerprintRE, fp)
			require.NotEqual(t, fp, engine.Fingerprint("other", canonical))
		}

		c := store.Caller{ID: fmt.Sprintf("fuzz-%d", n.Add(1))}
		ctx := context.Background()
		res, err := eng.Call(ctx, engine.CallRequest{Caller: c, Tool: "free", Key: key, Input: body})
		switch {
		case keyErr != nil:
			require.ErrorIs(t, err, engine.ErrInvalidIdempotencyKey)
		case inErr != nil:
			var ie *engine.InvalidInputError
			require.ErrorAs(t, err, &ie)
		default:
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.StatusCode)
			require.False(t, res.Replayed)
			again, err := eng.Call(ctx, engine.CallRequest{Caller: c, Tool: "free", Key: key, Input: canonical})
			require.NoError(t, err)
			require.True(t, again.Replayed)
			require.Equal(t, res.Body, again.Body)
		}
	})
}

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v))
	return v
}

// FuzzParseIdempotencyKey checks the Idempotency-Key parser: it never
// panics, a parsed key written back as an sf-string parses to itself, and a
// bare value without a comma is its own key.
func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{`k`, `"k"`, `"a, b"`, `a, b`, `"a\"b"`, `"`, `"a";p`, `order:42;retry 1`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := engine.ParseIdempotencyKey([]string{v})
		if err != nil {
			require.ErrorIs(t, err, engine.ErrInvalidIdempotencyKey)
			return
		}
		trimmed := strings.Trim(v, " \t")
		if !strings.HasPrefix(trimmed, `"`) {
			require.Equal(t, trimmed, key)
			require.NotContains(t, key, ",")
			return
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
		again, err := engine.ParseIdempotencyKey([]string{quoted})
		require.NoError(t, err, quoted)
		require.Equal(t, key, again)
	})
}
