// Package stripemock gives tests a Stripe API and Stripe's webhook events
// without the network: Start runs Stripe's official mock server,
// github.com/stripe/stripe-mock, at a pinned version (it validates every
// request against Stripe's OpenAPI document and answers with Stripe's own
// fixtures), and SignedEvent builds an event envelope around one of the
// object builders (CheckoutSession, Charge, Dispute) and signs it with
// stripe-go, the way Stripe signs its deliveries.
//
// It is for tests only: it imports stripe-go and testing, and
// handler/layout_test.go checks that no package but a test imports it, so
// neither ever reaches the wasm. It does not import handler/pay/stripe, so
// that package's internal tests may use it too.
package stripemock

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"
)

// Version is the stripe-mock release Start runs.
const Version = "v0.203.0"

// SpecVersion is the Stripe API version of the OpenAPI document bundled in
// stripe-mock Version. Start runs it with -strict-version-check, so a
// request whose Stripe-Version header names another version is refused
// with 400.
const SpecVersion = "2026-08-26.dahlia"

// module is stripe-mock's module path, installed with go install.
const module = "github.com/stripe/stripe-mock"

// startTimeout bounds the wait for stripe-mock to listen (it parses an 8 MB
// OpenAPI document first: about a second here).
const startTimeout = 60 * time.Second

var installMu sync.Mutex

// Start runs stripe-mock Version on a free port of 127.0.0.1 (HTTP, and
// HTTPS on another free loopback port, which nobody uses but which would
// otherwise bind every interface on :12112) and returns its base URL,
// "http://127.0.0.1:<port>". It runs with -strict-version-check: a
// Stripe-Version header other than SpecVersion gets 400. The process is
// killed when t ends. The binary
// is installed once per machine (see install); t fails, fatally and with go
// install's output, when it can't be.
func Start(t testing.TB) string {
	t.Helper()
	bin, err := install()
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0", "-strict-version-check")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stripemock: %v", err)
	}
	var log safeBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("stripemock: start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		// Reads stdout to its end (so stripe-mock never blocks on a full
		// pipe) and reports the HTTP address it prints once listening:
		// "Listening for HTTP at address: 127.0.0.1:43453".
		const prefix = "Listening for HTTP at address: "
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if a, ok := strings.CutPrefix(line, prefix); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case a := <-addr:
		return "http://" + a
	case <-exited:
		t.Fatalf("stripemock: stripe-mock exited before listening:\n%s", log.String())
	case <-time.After(startTimeout):
		t.Fatalf("stripemock: stripe-mock did not listen within %s:\n%s", startTimeout, log.String())
	}
	return ""
}

// install returns the path of the stripe-mock Version binary, building it
// first if it is not there yet: `go install github.com/stripe/stripe-mock@
// Version` with GOBIN set to a fresh temporary directory beside the final
// one, then an atomic rename into
// <user cache dir>/toolgate/stripe-mock/<Version>/stripe-mock. Test
// processes that install at the same time each rename a complete binary
// over the same name, so none ever runs a half-written one. Once installed
// it needs no network; before, go install fetches the module through
// GOPROXY (or the module cache).
func install() (string, error) {
	installMu.Lock()
	defer installMu.Unlock()
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	name := "stripe-mock"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	bin := filepath.Join(dir, name)
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("install stripe-mock %s: %w", Version, err)
	}
	tmp, err := os.MkdirTemp(dir, ".install-")
	if err != nil {
		return "", fmt.Errorf("install stripe-mock %s: %w", Version, err)
	}
	defer os.RemoveAll(tmp)
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("install stripe-mock %s: no go command: %w", Version, err)
	}
	cmd := exec.Command(goBin, "install", module+"@"+Version)
	cmd.Dir = tmp // outside any module, so go.mod and GOFLAGS=-mod=... of the caller don't apply
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot install stripe-mock: go install %s@%s: %w\n%s", module, Version, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, name), bin); err != nil {
		return "", fmt.Errorf("install stripe-mock %s: %w", Version, err)
	}
	return bin, nil
}

// cacheDir is where install keeps the binary: under os.UserCacheDir, else
// under GOCACHE.
func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		out, goErr := exec.Command("go", "env", "GOCACHE").Output()
		base = strings.TrimSpace(string(out))
		if goErr != nil || base == "" || base == "off" {
			return "", errors.Join(fmt.Errorf("no cache directory for stripe-mock: %w", err), goErr)
		}
	}
	return filepath.Join(base, "toolgate", "stripe-mock", Version), nil
}

// safeBuffer collects stripe-mock's output for failure messages.
type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) WriteString(p string) {
	_, _ = s.Write([]byte(p))
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SignedEvent returns a Stripe event of eventType about object (see the
// builders below), as Stripe delivers it to a webhook endpoint: {id
// "evt_…", object "event", api_version SpecVersion, created, data.object,
// livemode false, pending_webhooks 1, request, type}; and the
// Stripe-Signature header for it, computed by stripe-go's
// webhook.GenerateTestSignedPayload with secret at created (the zero time
// means now). Verify it at a now within tolerance of created.
func SignedEvent(t testing.TB, secret string, eventType string, object map[string]any, created time.Time) (body []byte, header string) {
	t.Helper()
	if created.IsZero() {
		created = time.Now()
	}
	body, err := json.Marshal(map[string]any{
		"id":               NewID("evt_"),
		"object":           "event",
		"api_version":      SpecVersion,
		"created":          created.Unix(),
		"data":             map[string]any{"object": object},
		"livemode":         false,
		"pending_webhooks": 1,
		"request":          map[string]any{"id": nil, "idempotency_key": nil},
		"type":             eventType,
	})
	if err != nil {
		t.Fatalf("stripemock: encode event: %v", err)
	}
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: created})
	return signed.Payload, signed.Header
}

// NewID returns prefix followed by 24 random hexadecimal digits, the shape
// of Stripe's ids ("evt_", "ch_", "pi_", "cs_test_", ...).
func NewID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// orNil returns nil for "", so that an absent reference is JSON null, as in
// Stripe's objects.
func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// CheckoutSession returns a Checkout Session object (mode payment, hosted)
// as Stripe sends it in checkout.session.* events: the top-up's caller and
// id in metadata, the id as client_reference_id, amountTotal in minor units
// of currency (sent lower-case), paymentStatus ("paid", "unpaid",
// "no_payment_required"), status ("open", "complete", "expired"), and
// paymentIntent ("" for null: an expired session has none). The url is set
// only while the session is open, as Stripe does.
func CheckoutSession(id, caller, topupID string, amountTotal int64, currency, paymentStatus, status, paymentIntent string) map[string]any {
	now := time.Now().Unix()
	var url any
	if status == "open" {
		url = "https://checkout.stripe.com/c/pay/" + id
	}
	return map[string]any{
		"id":                   id,
		"object":               "checkout.session",
		"after_expiration":     nil,
		"amount_subtotal":      amountTotal,
		"amount_total":         amountTotal,
		"automatic_tax":        map[string]any{"enabled": false, "liability": nil, "status": nil},
		"cancel_url":           "https://agent.example/topup/cancel",
		"client_reference_id":  orNil(topupID),
		"created":              now - 60,
		"currency":             strings.ToLower(currency),
		"customer":             nil,
		"customer_creation":    "if_required",
		"customer_details":     map[string]any{"email": "owner@agent.example", "phone": nil, "tax_exempt": "none", "tax_ids": []any{}},
		"customer_email":       nil,
		"expires_at":           now + 24*3600,
		"livemode":             false,
		"locale":               nil,
		"metadata":             map[string]any{"caller": caller, "topup_id": topupID},
		"mode":                 "payment",
		"payment_intent":       orNil(paymentIntent),
		"payment_method_types": []any{"card"},
		"payment_status":       paymentStatus,
		"status":               status,
		"submit_type":          nil,
		"subscription":         nil,
		"success_url":          "https://agent.example/topup/success",
		"total_details":        map[string]any{"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
		"ui_mode":              "hosted",
		"url":                  url,
	}
}

// Charge returns a captured card charge as Stripe sends it in charge.*
// events: amount and amountRefunded (the total refunded so far) in minor
// units of currency (sent lower-case), refunded true once all of it is,
// and metadata (the PaymentIntent's, which a top-up's session sets through
// payment_intent_data; nil means {}).
func Charge(id, paymentIntent string, amount, amountRefunded int64, currency string, metadata map[string]string) map[string]any {
	md := map[string]any{}
	for k, v := range metadata {
		md[k] = v
	}
	return map[string]any{
		"id":                  id,
		"object":              "charge",
		"amount":              amount,
		"amount_captured":     amount,
		"amount_refunded":     amountRefunded,
		"balance_transaction": NewID("txn_"),
		"billing_details":     map[string]any{"address": nil, "email": "owner@agent.example", "name": nil, "phone": nil},
		"captured":            true,
		"created":             time.Now().Unix() - 3600,
		"currency":            strings.ToLower(currency),
		"customer":            nil,
		"description":         nil,
		"disputed":            false,
		"failure_code":        nil,
		"failure_message":     nil,
		"livemode":            false,
		"metadata":            md,
		"outcome":             map[string]any{"network_status": "approved_by_network", "reason": nil, "risk_level": "normal", "seller_message": "Payment complete.", "type": "authorized"},
		"paid":                true,
		"payment_intent":      orNil(paymentIntent),
		"payment_method":      NewID("pm_"),
		"receipt_url":         "https://pay.stripe.com/receipts/payment/test",
		"refunded":            amountRefunded >= amount,
		"status":              "succeeded",
	}
}

// Dispute returns a dispute as Stripe sends it in charge.dispute.created:
// amount in minor units of currency (sent lower-case), the disputed charge
// and its PaymentIntent, reason "fraudulent", status "needs_response".
func Dispute(id, charge, paymentIntent string, amount int64, currency string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"id":                   id,
		"object":               "dispute",
		"amount":               amount,
		"balance_transactions": []any{},
		"charge":               charge,
		"created":              now,
		"currency":             strings.ToLower(currency),
		"evidence":             map[string]any{"customer_email_address": nil, "uncategorized_text": nil},
		"evidence_details":     map[string]any{"due_by": now + 7*24*3600, "has_evidence": false, "past_due": false, "submission_count": 0},
		"is_charge_refundable": false,
		"livemode":             false,
		"metadata":             map[string]any{},
		"payment_intent":       orNil(paymentIntent),
		"reason":               "fraudulent",
		"status":               "needs_response",
	}
}
