// Package handler is toolgate's HTTP surface: a paid tool-call gateway that
// turns duplicate calls with one idempotency key into one upstream execution
// and one charge. New mounts the REST API of openapi.json, the admin API and
// the MCP endpoint (package mcp) on one engine (package engine), which does
// the work and is the only one that moves money; errors become RFC 9457
// problems in one place (package problem). The surfaces translate; they never
// decide or write.
//
// The Engine does the work (scoping, claim, wait-then-replay, charge,
// upstream under heartbeats, complete, refund); New puts the REST API of
// openapi.json on top of it. Both depend only on package store's interfaces.
//
// # Keys and fingerprints
//
// A client's Idempotency-Key is scoped to (caller, tool, key) by ScopedKey,
// so callers never see each other's results. The request's fingerprint is
// the SHA-256 of the tool and the canonical JSON input (see Canonicalize):
// whitespace and key order do not matter, and the upstream receives the
// canonical bytes.
//
// # Answers
//
// A 2xx from the upstream is stored and answered as 200 with a JSON envelope
// {tool, output, upstream, receipt}. Replays return the stored bytes with
// Idempotent-Replayed: true, so they carry the original receipt.
//
// The 4xx rule: an upstream 4xx is the tool's final answer about that input.
// It is refunded, stored and answered as 424 application/problem+json
// (type upstream-rejected) holding the same envelope members; replays return
// it unchanged. Retrying the key does not call the upstream again: send a
// new key with corrected input.
//
// Any other upstream result (5xx, 1xx/3xx, timeout, network error, an answer
// too large to store) is refunded, the key is marked failed, and the answer
// is 502 (504 for a timeout) saying refunded and retryable: a retry with the
// same key executes again and is charged again, so the net charge is one
// price.
package handler

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/mcp"
	"github.com/toolgate/toolgate-go/handler/pay"
	"github.com/toolgate/toolgate-go/handler/pay/stripe"
	"github.com/toolgate/toolgate-go/handler/pay/x402"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 1 << 20

// Config configures New: the engine (see Engine) and the HTTP surfaces.
type Config struct {
	// Store holds records, the ledger and callers. Required.
	Store store.Store
	// Catalog lists the tools (see catalog.ParseCatalog). Required.
	Catalog *catalog.Catalog
	// Upstream calls the tools. Required: engine.HTTPUpstream natively, a
	// fetch-based engine.SendFunc in the worker.
	Upstream engine.Upstream
	// AdminToken guards /v1/admin/*, sent as a bearer token. Empty
	// disables the admin routes: they answer 401.
	AdminToken string
	// NowFunc is the clock; nil means time.Now.
	NowFunc func() time.Time
	// Logger gets one line per call; nil means JSON lines on stderr.
	Logger *slog.Logger
	// WaitForInProgress is how long a duplicate waits for an in-flight call
	// before answering 409; zero means engine.DefaultWaitForInProgress (5 s),
	// negative means not at all (409 at once).
	WaitForInProgress time.Duration
	// MaxBodyBytes limits request bodies (413 above); zero means
	// DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// Rand is the source of owner ids, call ids and caller keys; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// MCP configures the MCP endpoint served at /mcp (see mcp.New). Set
	// MCP.SessionKey from a secret shared by every instance. MCP.X402 is
	// set from X402 (a facilitator enables x402 on both surfaces).
	MCP mcp.Options
	// CallerCacheTTL is how long a successful caller-key lookup is
	// remembered in memory; zero means one minute, negative disables it.
	CallerCacheTTL time.Duration
	// Stripe enables prepaid top-ups through Stripe Checkout and Stripe's
	// webhook; its zero value disables them (501 problem).
	Stripe StripeConfig
	// X402 enables calls paid per request (x402) for the tools that have
	// an x402 price.
	X402 X402Config
	// BackgroundFunc and UsageFlushInterval: see engine.Config.
	BackgroundFunc     func(ctx context.Context, fn func(context.Context))
	UsageFlushInterval time.Duration
}

// Engine returns the engine's part of c. Its log lines carry the status
// that package problem maps a call's error to.
func (c Config) Engine() engine.Config {
	return engine.Config{Store: c.Store, Catalog: c.Catalog, Upstream: c.Upstream, NowFunc: c.NowFunc,
		Logger: c.Logger, WaitForInProgress: c.WaitForInProgress, Rand: c.Rand,
		CallerCacheTTL: c.CallerCacheTTL, BackgroundFunc: c.BackgroundFunc, UsageFlushInterval: c.UsageFlushInterval,
		StatusFunc: func(err error) int { return problem.For(err).Status },
		Checkout:   c.checkout(), Topups: c.Stripe.Topups, PerCall: c.perCall()}
}

// checkout is the Stripe rail, or nil unless both the API key and a
// webhook secret are configured: a top-up sold without the webhook could be
// paid and never credited.
func (c Config) checkout() pay.Checkout {
	if c.Stripe.SecretKey == "" || len(c.Stripe.WebhookSecrets) == 0 {
		return nil
	}
	return &stripe.Rail{Client: &stripe.Client{SecretKey: c.Stripe.SecretKey, BaseURL: c.Stripe.APIBase, Send: c.Stripe.Send}}
}

//go:embed openapi.json
var openAPIFS embed.FS

// OpenAPI returns the OpenAPI 3.1 document of the routes New serves.
func OpenAPI() []byte {
	b, _ := openAPIFS.ReadFile("openapi.json")
	return b
}

type server struct {
	engine     *engine.Engine
	adminToken string
	maxBody    int64
	toolsJSON  []byte
	mcp        mcp.Options
	stripe     StripeConfig
	perCall    bool // x402 is enabled
}

// route is one method and path of the API; routes() is the list the mux,
// the 405 answers and the OpenAPI test share.
type route struct {
	method  string
	path    string
	handler http.HandlerFunc
}

func (s *server) routes() []route {
	return []route{
		{http.MethodPost, "/v1/tools/{tool}/call", s.handleCall},
		{http.MethodGet, "/v1/tools", s.handleTools},
		{http.MethodGet, "/v1/balance", s.handleBalance},
		{http.MethodGet, "/v1/usage", s.handleUsage},
		{http.MethodGet, "/v1/calls/{key}", s.handleGetCall},
		{http.MethodPost, "/v1/topups", s.handleCreateTopup},
		{http.MethodGet, "/v1/topups/{id}", s.handleGetTopup},
		{http.MethodPost, "/v1/webhooks/stripe", s.handleStripeWebhook},
		{http.MethodPost, "/v1/admin/callers", s.handleCreateCaller},
		{http.MethodPost, "/v1/admin/credits", s.handleCredit},
		{http.MethodGet, "/v1/admin/callers", s.handleCallers},
		{http.MethodPost, "/v1/admin/callers/{id}/keys", s.handleCreateKey},
		{http.MethodGet, "/v1/admin/callers/{id}/keys", s.handleListKeys},
		{http.MethodPost, "/v1/admin/callers/{id}/keys/{keyId}/revoke", s.handleRevokeKey},
		{http.MethodPost, "/v1/admin/callers/{id}/keys/{keyId}/rotate", s.handleRotateKey},
		{http.MethodGet, "/v1/admin/callers/{id}/usage", s.handleCallerUsage},
		{http.MethodPut, "/v1/admin/callers/{id}/caps", s.handlePutCap},
		{http.MethodGet, "/v1/admin/callers/{id}/caps", s.handleGetCaps},
		{http.MethodDelete, "/v1/admin/callers/{id}/caps", s.handleDeleteCap},
		{http.MethodGet, "/v1/admin/stats", s.handleStats},
		{http.MethodGet, "/v1/admin/calls", s.handleCalls},
		{http.MethodGet, "/v1/admin/attention", s.handleAttention},
		{http.MethodGet, "/healthz", s.handleHealth},
		{http.MethodGet, "/openapi.json", s.handleOpenAPI},
	}
}

// New returns the HTTP API over an Engine built from cfg (see openapi.json).
// It returns the error of engine.New.
func New(cfg Config) (http.Handler, error) {
	g, err := NewGateway(cfg)
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Gateway is the HTTP API and the jobs the worker's cron runs on its
// engine.
type Gateway struct {
	http.Handler
	engine *engine.Engine
}

// ReconcilePayments settles again the per-call payments whose settle
// outcome is unknown (see engine.ReconcilePayments): the cron's job.
func (g *Gateway) ReconcilePayments(ctx context.Context, limit int) (engine.ReconcileResult, error) {
	return g.engine.ReconcilePayments(ctx, limit)
}

// NewGateway is New, keeping the jobs.
func NewGateway(cfg Config) (*Gateway, error) {
	if cfg.X402.FacilitatorURL == "" && cfg.Catalog != nil {
		for _, t := range cfg.Catalog.Tools() {
			if t.X402 != nil {
				return nil, fmt.Errorf("new handler: tool %q has an x402 price but no facilitator is configured (FACILITATOR_URL)", t.Name)
			}
		}
	}
	e, err := engine.New(cfg.Engine())
	if err != nil {
		return nil, fmt.Errorf("new handler: %w", err)
	}
	s := &server{engine: e, adminToken: cfg.AdminToken, maxBody: cfg.MaxBodyBytes, mcp: cfg.MCP, stripe: cfg.Stripe, perCall: cfg.X402.FacilitatorURL != ""}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	s.mcp.X402 = s.perCall // MCP sells per call exactly when REST does
	if s.toolsJSON, err = toolsDocument(cfg.Catalog); err != nil {
		return nil, fmt.Errorf("new handler: %w", err)
	}
	return &Gateway{Handler: s.mux(), engine: e}, nil
}

func (s *server) mux() http.Handler {
	mux := http.NewServeMux()
	byPath := map[string]map[string]http.HandlerFunc{}
	var order []string
	for _, rt := range s.routes() {
		if byPath[rt.path] == nil {
			byPath[rt.path] = map[string]http.HandlerFunc{}
			order = append(order, rt.path)
		}
		byPath[rt.path][rt.method] = rt.handler
		if rt.method == http.MethodGet {
			byPath[rt.path][http.MethodHead] = rt.handler
		}
	}
	for _, path := range order {
		mux.Handle(path, methods(byPath[path]))
	}
	mux.Handle("/mcp", mcp.New(s.engine, s.mcp))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { problem.Write(w, problem.ErrRouteNotFound) })
	return recoverPanics(s.engine.Logger())(countRoundTrips(refuseUncleanPaths(mux)))
}

// refuseUncleanPaths answers 404 for a path that is not in its clean form
// (with "." or ".." segments, or "//"), where http.ServeMux would redirect
// to the cleaned path. In the worker, the URL parser has already resolved
// dot segments, so the native server and the worker answer alike.
func refuseUncleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != clean {
			problem.Write(w, problem.ErrRouteNotFound)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// methods dispatches on the request method and answers 405 problem+json,
// with Allow, for the others.
func methods(hs map[string]http.HandlerFunc) http.Handler {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		if hs[m] != nil {
			allow = append(allow, m)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := hs[r.Method]
		if h == nil {
			problem.Write(w, &problem.MethodNotAllowedError{Allow: strings.Join(allow, ", ")})
			return
		}
		h(w, r)
	})
}

// countRoundTrips installs the per-request round-trip counter that the call
// log line reports.
func countRoundTrips(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(engine.CountRoundTrips(r.Context())))
	})
}

// recoverPanics turns a panic into a 500 problem. The engine has already
// refunded and failed the key it held, so the ledger invariant holds.
func recoverPanics(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("panic", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !sw.wrote {
					problem.Write(sw, errors.New("panic"))
				}
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authenticate returns the request's caller, or writes the problem.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request) (store.Caller, bool) {
	c, err := s.engine.Authenticate(r.Context(), engine.BearerToken(r))
	if err != nil {
		problem.Write(w, err)
		return store.Caller{}, false
	}
	return c, true
}

// handleCall serves POST /v1/tools/{tool}/call.
func (s *server) handleCall(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	e := s.engine
	start := e.Now()
	tool := r.PathValue("tool")
	reject := func(caller string, err error) {
		e.LogRejected(ctx, caller, tool, start, err)
		s.writeCallError(w, r, tool, err)
	}
	t, known := e.Catalog().Tool(tool)
	perCall := known && t.X402 != nil && s.perCall
	if payment, ok, perr := x402.PaymentFromHeader(r.Header); ok {
		if !perCall {
			reject("", fmt.Errorf("%w: %q", engine.ErrPerCallDisabled, tool))
			return
		}
		s.callPerCall(w, r, t, payment, perr)
		return
	}
	if perCall && engine.BearerToken(r) == "" {
		// No account and no payment: the offer (the engine's 402).
		_, err := e.Call(ctx, engine.CallRequest{Tool: tool})
		s.writeCallError(w, r, tool, err)
		return
	}
	caller, err := e.Authenticate(ctx, engine.BearerToken(r))
	if err != nil {
		reject("", err)
		return
	}
	key, err := engine.ParseIdempotencyKey(r.Header.Values("Idempotency-Key"))
	if err != nil {
		reject(caller.ID, err)
		return
	}
	body, err := readBody(w, r, s.maxBody)
	if err != nil {
		reject(caller.ID, err)
		return
	}
	res, err := e.Call(ctx, engine.CallRequest{Caller: caller, Tool: tool,
		Key: key, Input: body, Header: r.Header})
	if err != nil {
		s.writeCallError(w, r, tool, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", res.ContentType)
	h.Set("Cache-Control", "no-store")
	if res.Replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	if res.FallbackFor != "" {
		h.Set("Toolgate-Fallback-For", res.FallbackFor)
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(res.Body)
}

// readBody reads the whole body, or returns problem.ErrBodyTooLarge past limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	tooLarge := fmt.Errorf("%w: the limit is %d bytes", problem.ErrBodyTooLarge, limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge
	}
	if err != nil {
		return nil, &problem.BadRequestError{Reason: "the body could not be read"}
	}
	return b, nil
}

type toolJSON struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Price       string          `json:"price"`
	Currency    string          `json:"currency"`
	InputSchema json.RawMessage `json:"inputSchema"`
	// Metered is a metered price's terms; Price is then its maximum.
	Metered *catalog.MeteredTerms `json:"metered,omitempty"`
	// Free is the tool's free tier.
	Free *freeJSON `json:"free,omitempty"`
}

type freeJSON struct {
	Calls int64        `json:"calls"`
	Per   store.Period `json:"per"`
}

func toolsDocument(c *catalog.Catalog) ([]byte, error) {
	var doc struct {
		Tools []toolJSON `json:"tools"`
	}
	doc.Tools = []toolJSON{}
	for _, t := range c.Tools() {
		tj := toolJSON{Name: t.Name, Description: t.Description, Price: t.PriceString(), Currency: t.Currency,
			InputSchema: t.InputSchema, Metered: t.MeteredTerms()}
		if f := t.Free; f != nil {
			tj.Free = &freeJSON{Calls: f.Calls, Per: f.Per}
		}
		doc.Tools = append(doc.Tools, tj)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode tools: %w", err)
	}
	return b, nil
}

// handleTools serves GET /v1/tools: the public catalog, without upstreams.
func (s *server) handleTools(w http.ResponseWriter, r *http.Request) {
	writeRaw(w, http.StatusOK, s.toolsJSON)
}

type balanceJSON struct {
	Currency string `json:"currency"`
	Amount   string `json:"amount"`
	Minor    int64  `json:"minor"`
}

// handleBalance serves GET /v1/balance[?currency=USD]: the caller's balance
// in each currency of the catalog, or in the one asked for.
func (s *server) handleBalance(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	currencies := s.engine.Catalog().Currencies()
	if c := r.URL.Query().Get("currency"); c != "" {
		if _, err := store.Decimals(c); err != nil {
			problem.Write(w, &problem.BadRequestError{Reason: fmt.Sprintf("currency %q is not supported", c)})
			return
		}
		currencies = []string{c}
	}
	out := struct {
		Caller   string        `json:"caller"`
		Balances []balanceJSON `json:"balances"`
	}{Caller: caller.ID, Balances: []balanceJSON{}}
	for _, cur := range currencies {
		b, err := s.engine.Balance(r.Context(), caller.ID, cur)
		if err != nil {
			problem.Write(w, err)
			return
		}
		out.Balances = append(out.Balances, balanceJSON{Currency: cur, Amount: store.FormatAmount(b, cur), Minor: b})
	}
	writeJSON(w, http.StatusOK, out)
}

type callJSON struct {
	Tool           string       `json:"tool"`
	Status         store.Status `json:"status"`
	ChargeState    string       `json:"chargeState"`
	Amount         string       `json:"amount"`
	Currency       string       `json:"currency"`
	Generation     int64        `json:"generation"`
	CreatedAt      time.Time    `json:"createdAt"`
	UpdatedAt      time.Time    `json:"updatedAt"`
	LeaseExpiresAt time.Time    `json:"leaseExpiresAt"`
	ExpiresAt      time.Time    `json:"expiresAt"`
	ResponseStatus int          `json:"responseStatus,omitempty"`
	Error          string       `json:"error,omitempty"`
	// Hold is a metered call's charged hold: "held" while it runs,
	// "captured" once its answer was stored (Amount is then what was
	// captured); Max is the maximum it held. Absent once refunded.
	Hold   string       `json:"hold,omitempty"`
	Max    string       `json:"max,omitempty"`
	Events []traceEvent `json:"events"`
}

type traceEvent struct {
	Type         string    `json:"type"`
	At           time.Time `json:"at"`
	Amount       string    `json:"amount,omitempty"`
	BalanceAfter string    `json:"balanceAfter,omitempty"`
}

// handleGetCall serves GET /v1/calls/{key}[?tool=name]: the caller's own
// records under key (one per tool), with their ledger entries as trace
// events. It looks only at the caller's scoped keys, so another caller's
// record under the same key string is invisible.
func (s *server) handleGetCall(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	if err := engine.ValidateIdempotencyKey(key); err != nil {
		problem.Write(w, err)
		return
	}
	tools := s.engine.Catalog().Tools()
	if name := r.URL.Query().Get("tool"); name != "" {
		t, ok := s.engine.Catalog().Tool(name)
		if !ok {
			problem.Write(w, fmt.Errorf("%w: %q", engine.ErrUnknownTool, name))
			return
		}
		tools = []catalog.Tool{t}
	}
	traces, err := s.engine.Trace(r.Context(), caller.ID, key, tools)
	if err != nil {
		problem.Write(w, err)
		return
	}
	out := struct {
		Key   string     `json:"key"`
		Calls []callJSON `json:"calls"`
	}{Key: key}
	for _, tr := range traces {
		out.Calls = append(out.Calls, describeCall(tr.Tool, tr.Record, tr.Entries))
	}
	if len(out.Calls) == 0 {
		problem.Write(w, problem.ErrCallNotFound)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func describeCall(t catalog.Tool, rec store.Record, entries []store.Entry) callJSON {
	cur := rec.Charge.Currency
	if cur == "" {
		cur = t.Currency
	}
	amount := int64(0)
	if rec.Charge.State == store.ChargeCharged {
		amount = rec.Charge.Amount
	}
	c := callJSON{Tool: t.Name, Status: rec.Status, ChargeState: string(rec.Charge.State),
		Amount: store.FormatAmount(amount, cur), Currency: cur, Generation: rec.Generation,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, LeaseExpiresAt: rec.LeaseExpiresAt,
		ExpiresAt: rec.ExpiresAt, Error: rec.Error}
	if rec.Response != nil {
		c.ResponseStatus = rec.Response.StatusCode
	}
	if h := rec.Charge.Hold; rec.Charge.State == store.ChargeCharged && (h == store.HoldHeld || h == store.HoldCaptured) {
		c.Hold, c.Max = string(h), store.FormatAmount(rec.Charge.Max, cur)
	}
	c.Events = []traceEvent{{Type: "created", At: rec.CreatedAt}}
	for _, en := range entries {
		c.Events = append(c.Events, traceEvent{Type: en.Kind, At: en.CreatedAt,
			Amount: store.FormatAmount(en.Amount, en.Currency), BalanceAfter: store.FormatAmount(en.BalanceAfter, en.Currency)})
	}
	if rec.Status != store.StatusInProgress {
		c.Events = append(c.Events, traceEvent{Type: string(rec.Status), At: rec.UpdatedAt})
	}
	return c
}

// handleHealth serves GET /healthz. It does not touch the store.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeRaw(w, http.StatusOK, []byte(`{"ok":true}`))
}

// handleOpenAPI serves GET /openapi.json.
func (s *server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	writeRaw(w, http.StatusOK, OpenAPI())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		problem.Write(w, fmt.Errorf("encode response: %w", err))
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
