package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate-go/handler"
	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/engine"
	"github.com/toolgate/toolgate-go/handler/mcp"
	"github.com/toolgate/toolgate-go/store"
)

// Settings is the worker's configuration, read from wrangler vars and
// secrets (or the environment, natively) by SettingsFrom.
type Settings struct {
	// Tools is the catalog document (var TOOLS). Required.
	Tools []byte
	// AdminToken guards /v1/admin/* (secret ADMIN_TOKEN). Empty disables
	// the admin API.
	AdminToken string
	// MCPSessionKey signs MCP session ids so that every isolate accepts
	// them (secret MCP_SESSION_KEY). Empty derives it from AdminToken.
	MCPSessionKey []byte
	// WaitForInProgress is how long duplicates wait for an in-flight call
	// (var WAIT_FOR_IN_PROGRESS_MS; "0" fails fast, empty means 5 s). Negative
	// means fail fast, as handler.Config reads it.
	WaitForInProgress time.Duration
	// CallerCacheTTL is how long an isolate remembers a successful key
	// lookup (var CALLER_CACHE_TTL_MS; empty means one minute, "0" no
	// cache): the longest a revoked or rotated key keeps working on the
	// isolates that did not serve the revocation. Negative means no cache,
	// as handler.Config reads it.
	CallerCacheTTL time.Duration
	// Demo serves the demo upstream under /_demo/ (var DEMO_UPSTREAM=1).
	Demo bool
	// SweepBatch bounds each statement of the cron sweep (var SWEEP_BATCH;
	// zero means 500).
	SweepBatch int
	// StatsRetention is how long usage counters are kept (var STATS_RETENTION_DAYS; zero means
	// DefaultStatsRetention, 90 days); the cron sweep deletes older ones.
	StatsRetention time.Duration
	// TursoURL and TursoToken select libSQL instead of D1 (var
	// TURSO_DATABASE_URL, secret TURSO_AUTH_TOKEN).
	TursoURL, TursoToken string
	// Stripe enables prepaid top-ups through Stripe Checkout: secrets
	// STRIPE_SECRET_KEY (creates Checkout Sessions) and
	// STRIPE_WEBHOOK_SECRET (verifies the webhook; several,
	// comma-separated, during a rotation); vars TOPUP_CURRENCIES (default
	// the catalog's card currencies), TOPUP_MIN and TOPUP_MAX (default 5
	// and 1000, one amount or "USD:5.00,JPY:500"), TOPUP_SUCCESS_URL and
	// TOPUP_CANCEL_URL (where Checkout sends the customer back when the
	// request names none), STRIPE_API_BASE (tests: stripe-mock).
	Stripe StripeSettings
	// FacilitatorURL and FacilitatorAuthorization enable calls paid per
	// request with x402 for the tools with an "x402" price: var
	// FACILITATOR_URL (the x402 facilitator's base URL), secret
	// FACILITATOR_AUTHORIZATION (sent as its Authorization header).
	FacilitatorURL, FacilitatorAuthorization string
	// FacilitatorTimeout bounds each verify and settle (var
	// FACILITATOR_TIMEOUT_MS; empty means 15 s).
	FacilitatorTimeout time.Duration
}

// StripeSettings are the Stripe rail's settings (see Settings.Stripe).
type StripeSettings struct {
	SecretKey      string
	WebhookSecrets []string
	APIBase        string
	Currencies     string
	Min, Max       string
	SuccessURL     string
	CancelURL      string
}

// Enabled reports whether any Stripe route is enabled.
func (s StripeSettings) Enabled() bool { return s.SecretKey != "" || len(s.WebhookSecrets) > 0 }

// SettingsFrom reads Settings through getenv. It returns an error naming
// the variable that is missing or malformed.
func SettingsFrom(getenv func(string) string) (Settings, error) {
	s := Settings{
		Tools:      []byte(getenv("TOOLS")),
		AdminToken: getenv("ADMIN_TOKEN"),
		Demo:       getenv("DEMO_UPSTREAM") == "1",
		TursoURL:   getenv("TURSO_DATABASE_URL"),
		TursoToken: getenv("TURSO_AUTH_TOKEN"),
		Stripe: StripeSettings{
			SecretKey:  strings.TrimSpace(getenv("STRIPE_SECRET_KEY")),
			APIBase:    getenv("STRIPE_API_BASE"),
			Currencies: getenv("TOPUP_CURRENCIES"),
			Min:        getenv("TOPUP_MIN"),
			Max:        getenv("TOPUP_MAX"),
			SuccessURL: getenv("TOPUP_SUCCESS_URL"),
			CancelURL:  getenv("TOPUP_CANCEL_URL"),
		},
	}
	s.FacilitatorURL = strings.TrimSpace(getenv("FACILITATOR_URL"))
	s.FacilitatorAuthorization = getenv("FACILITATOR_AUTHORIZATION")
	if v := getenv("FACILITATOR_TIMEOUT_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return Settings{}, fmt.Errorf("settings: FACILITATOR_TIMEOUT_MS %q is not a positive integer", v)
		}
		s.FacilitatorTimeout = time.Duration(ms) * time.Millisecond
	}
	if s.FacilitatorURL != "" {
		if u, err := url.Parse(s.FacilitatorURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return Settings{}, fmt.Errorf("settings: FACILITATOR_URL %q is not an absolute http(s) URL", s.FacilitatorURL)
		}
	}
	for _, sec := range strings.Split(getenv("STRIPE_WEBHOOK_SECRET"), ",") {
		if sec = strings.TrimSpace(sec); sec != "" {
			s.Stripe.WebhookSecrets = append(s.Stripe.WebhookSecrets, sec)
		}
	}
	if len(s.Tools) == 0 {
		return Settings{}, errors.New("settings: TOOLS is empty: set it to the tool catalog JSON (see README)")
	}
	switch k := getenv("MCP_SESSION_KEY"); {
	case k != "":
		s.MCPSessionKey = []byte(k)
	case s.AdminToken != "":
		mac := hmac.New(sha256.New, []byte(s.AdminToken))
		mac.Write([]byte("toolgate mcp session key"))
		s.MCPSessionKey = mac.Sum(nil)
	}
	if v := getenv("WAIT_FOR_IN_PROGRESS_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return Settings{}, fmt.Errorf("settings: WAIT_FOR_IN_PROGRESS_MS %q is not a non-negative integer", v)
		}
		s.WaitForInProgress = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			s.WaitForInProgress = -1
		}
	}
	if v := getenv("CALLER_CACHE_TTL_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 || ms > 3_600_000 {
			return Settings{}, fmt.Errorf("settings: CALLER_CACHE_TTL_MS %q is not an integer from 0 to 3600000 (one hour: the longest a revoked key may keep working)", v)
		}
		s.CallerCacheTTL = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			s.CallerCacheTTL = -1
		}
	}
	if v := getenv("SWEEP_BATCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Settings{}, fmt.Errorf("settings: SWEEP_BATCH %q is not a positive integer", v)
		}
		s.SweepBatch = n
	}
	if v := getenv("STATS_RETENTION_DAYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Settings{}, fmt.Errorf("settings: STATS_RETENTION_DAYS %q is not a positive integer", v)
		}
		s.StatsRetention = time.Duration(n) * 24 * time.Hour
	}
	return s, nil
}

// newApp wires the handler to a store and an upstream, and adds the demo
// upstream when s.Demo is set.
func newApp(st store.Store, up engine.Upstream, s Settings, logger *slog.Logger) (out http.Handler, err error) {
	cat, err := catalog.ParseCatalog(s.Tools)
	if err != nil {
		return nil, fmt.Errorf("TOOLS: %w", err)
	}
	stripeCfg, err := stripeConfig(s.Stripe, cat, up)
	if err != nil {
		return nil, err
	}
	if logger != nil {
		switch st := s.Stripe; {
		case st.SecretKey == "" && len(st.WebhookSecrets) == 0:
			logger.Info("top-ups disabled: set the secrets STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET to sell them through Stripe Checkout")
		case len(st.WebhookSecrets) == 0:
			logger.Warn("top-ups disabled: STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not, and a top-up sold without the webhook could be paid and never credited")
		case st.SecretKey == "":
			logger.Warn("top-ups disabled: STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not; the webhook still applies events to existing top-ups")
		}
	}
	x402Cfg := handler.X402Config{FacilitatorURL: s.FacilitatorURL, Authorization: s.FacilitatorAuthorization,
		Timeout: s.FacilitatorTimeout}
	if f, ok := up.(engine.SendFunc); ok {
		x402Cfg.Send = f // the Worker's fetch; natively nil: net/http
	}
	g, err := handler.NewGateway(handler.Config{
		Store:             st,
		Catalog:           cat,
		Upstream:          up,
		AdminToken:        s.AdminToken,
		Logger:            logger,
		WaitForInProgress: s.WaitForInProgress,
		CallerCacheTTL:    s.CallerCacheTTL,
		MCP:               mcp.Options{SessionKey: s.MCPSessionKey},
		Stripe:            stripeCfg,
		X402:              x402Cfg,
		BackgroundFunc:    background,
	})
	if err != nil {
		return nil, err
	}
	var h http.Handler = g
	defer func() {
		if err == nil {
			out = &gatewayHandler{Handler: out, jobs: g}
		}
	}()
	if serveDashboard != nil {
		h = serveDashboard(h)
	}
	if !s.Demo && len(extraRoutes) == 0 {
		return h, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	if s.Demo {
		mux.HandleFunc("POST /_demo/echo", demoEcho)
		mux.HandleFunc("POST /_demo/fail", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"the demo upstream always fails"}`, http.StatusInternalServerError)
		})
	}
	for _, add := range extraRoutes {
		add(mux)
	}
	return mux, nil
}

// gatewayHandler is the app's handler, with the gateway's cron jobs.
type gatewayHandler struct {
	http.Handler
	jobs *handler.Gateway
}

// reconcileLimit bounds the payments one cron invocation settles again.
const reconcileLimit = 20

// reconcile runs the payment reconciler if h is the app's handler.
func reconcile(ctx context.Context, h http.Handler, logger *slog.Logger) {
	g, ok := h.(*gatewayHandler)
	if !ok {
		return
	}
	r, err := g.jobs.ReconcilePayments(ctx, reconcileLimit)
	if logger == nil {
		return
	}
	if err != nil {
		logger.Error("reconcile payments failed", "err", err)
	}
	if r.Due > 0 {
		logger.Info("reconcile payments", "due", r.Due, "settled", r.Settled, "creditedBack", r.CreditedBack,
			"failed", r.Failed, "pending", r.Pending)
	}
}

// stripeConfig is the handler's Stripe configuration from s: the API
// requests go out through the worker's fetch, or net/http natively. Top-up currencies default to the catalog's
// currencies that a card can pay (not CREDIT or USDC).
func stripeConfig(s StripeSettings, cat *catalog.Catalog, up engine.Upstream) (handler.StripeConfig, error) {
	cfg := handler.StripeConfig{SecretKey: s.SecretKey, WebhookSecrets: s.WebhookSecrets, APIBase: s.APIBase}
	if !s.Enabled() {
		return cfg, nil
	}
	// In the Worker the upstream is the fetch bridge, which Stripe's calls
	// use too; natively Send stays nil and the Stripe client uses net/http
	// (naming *engine.HTTPUpstream here would link net/http's client into
	// the wasm: about 1.1 MB gzip).
	if f, ok := up.(engine.SendFunc); ok {
		cfg.Send = f
	}
	currencies := s.Currencies
	if currencies == "" {
		var cards []string
		for _, c := range cat.Currencies() {
			if c != "CREDIT" && c != "USDC" {
				cards = append(cards, c)
			}
		}
		if len(cards) == 0 {
			cards = []string{"USD"}
		}
		currencies = strings.Join(cards, ",")
	}
	policy, err := engine.ParseTopupPolicy(currencies, s.Min, s.Max)
	if err != nil {
		return handler.StripeConfig{}, fmt.Errorf("settings: TOPUP_CURRENCIES, TOPUP_MIN, TOPUP_MAX: %w", err)
	}
	policy.SuccessURL, policy.CancelURL = s.SuccessURL, s.CancelURL
	cfg.Topups = policy
	return cfg, nil
}

// longestLease returns the longest lease of cat's tools (a catalog has at
// least one). After a crash, a retry that waits this long finds the
// abandoned call's lease expired and takes the key over instead of waiting
// for it: the worker's crash Retry-After.
func longestLease(cat *catalog.Catalog) time.Duration {
	var d time.Duration
	for _, t := range cat.Tools() {
		d = max(d, t.Lease)
	}
	return d
}

// extraRoutes are added by build-tagged files: the D1 conformance runner
// exists only in the test build (-tags conformance).
var extraRoutes []func(*http.ServeMux)

// demoEcho is the demo upstream: it answers {"echo": <input>}.
func demoEcho(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || !json.Valid(body) {
		http.Error(w, `{"error":"send JSON"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"echo":%s}`, body)
}

// sweep deletes expired records in batches of batch until a batch comes
// back short or maxBatches ran, so one cron invocation stays bounded.
func sweep(ctx context.Context, st store.Idempotency, now time.Time, batch, maxBatches int) (int, error) {
	if batch <= 0 {
		batch = 500
	}
	total := 0
	for i := 0; i < maxBatches; i++ {
		n, err := st.Sweep(ctx, now, batch)
		total += n
		if err != nil {
			return total, fmt.Errorf("sweep: %w", err)
		}
		if n < batch {
			break
		}
	}
	return total, nil
}
