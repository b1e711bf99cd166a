//go:build !js

package handler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/store"
)

// benchEngine is an Engine on SQLite with an in-process upstream, so the
// numbers are the gateway's own cost.
func benchEngine(b *testing.B) (*engine.Engine, *store.CountingClient, store.Caller) {
	st, db := openStore(b)
	cat, err := catalog.ParseCatalog([]byte(`{"tools": [{"name": "echo", "description": "d", "price": "0.01",
		"currency": "USD", "upstream": {"url": "http://upstream.test/"}}]}`))
	require.NoError(b, err)
	eng, err := engine.New(engine.Config{Store: st, Catalog: cat,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Upstream: engine.UpstreamFunc(func(context.Context, engine.UpstreamRequest) (engine.UpstreamResponse, error) {
			return engine.UpstreamResponse{StatusCode: http.StatusOK, ContentType: "application/json", Body: []byte(`{"ok":true}`)}, nil
		})})
	require.NoError(b, err)
	c := store.Caller{ID: "bench"}
	_, err = st.Credit(context.Background(), store.CreditParams{Caller: c.ID, Currency: "USD",
		Amount: store.MaxAmount, Reference: "bench"})
	require.NoError(b, err)
	return eng, db, c
}

func BenchmarkPaidCall(b *testing.B) {
	eng, db, c := benchEngine(b)
	ctx := context.Background()
	before := db.Count()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := eng.Call(ctx, engine.CallRequest{Caller: c, Tool: "echo", Key: fmt.Sprintf("k%d", i), Input: []byte(`{"q":"x"}`)})
		if err != nil || res.Replayed {
			b.Fatalf("call: %v replayed=%v", err, res.Replayed)
		}
	}
	b.ReportMetric(float64(db.Count()-before)/float64(b.N), "roundtrips/op")
}

func BenchmarkReplay(b *testing.B) {
	eng, db, c := benchEngine(b)
	ctx := context.Background()
	req := engine.CallRequest{Caller: c, Tool: "echo", Key: "k", Input: []byte(`{"q":"x"}`)}
	_, err := eng.Call(ctx, req)
	require.NoError(b, err)
	before := db.Count()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := eng.Call(ctx, req)
		if err != nil || !res.Replayed {
			b.Fatalf("replay: %v replayed=%v", err, res.Replayed)
		}
	}
	b.ReportMetric(float64(db.Count()-before)/float64(b.N), "roundtrips/op")
}
