package handler

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/toolgate/toolgate-go/handler/catalog"
	"github.com/toolgate/toolgate-go/handler/problem"
	"github.com/toolgate/toolgate-go/store"
)

// The admin stats API, which the dashboard (/dashboard) reads. Amounts are
// integers in minor units; "currencies" gives each currency's decimals, so a
// client formats them without guessing. Query parameters are checked before
// anything is read: a bad one is a 400 problem.

// Range bounds of GET /v1/admin/stats.
const (
	maxHourRange = 31 * 24 * time.Hour
	maxDayRange  = 366 * 24 * time.Hour
	// topCallers is how many callers the stats answer ranks.
	topCallers = 10
	// attentionLimit bounds each list of GET /v1/admin/attention.
	attentionLimit = 50
	// callerListLimit bounds GET /v1/admin/callers.
	callerListLimit = 1000
)

// counters is the JSON of one row of counters.
type counters struct {
	Currency    string  `json:"currency"`
	Calls       int64   `json:"calls"`
	FreeCalls   int64   `json:"freeCalls"`
	Replays     int64   `json:"replays"`
	Waits       int64   `json:"waits"`
	R402        int64   `json:"paymentRequired"`
	R409        int64   `json:"inProgress"`
	R422        int64   `json:"mismatches"`
	Fail5xx     int64   `json:"failures5xx"`
	FailTimeout int64   `json:"failuresTimeout"`
	Fail4xx     int64   `json:"failures4xx"`
	Charges     int64   `json:"charges"`
	Charged     int64   `json:"charged"`
	Refunds     int64   `json:"refunds"`
	Refunded    int64   `json:"refunded"`
	Released    int64   `json:"released"` // what metered calls' holds gave back
	Net         int64   `json:"net"`      // charged - refunded - released
	Credits     int64   `json:"credits"`
	Credited    int64   `json:"credited"`
	LatencyMs   int64   `json:"latencyMsSum"`
	Latency     []int64 `json:"latencyHistogram"`
}

func countersOf(u store.Usage) counters {
	return counters{Currency: u.Currency, Calls: u.Calls, FreeCalls: u.FreeCalls, Replays: u.Replays, Waits: u.Waits,
		R402: u.R402, R409: u.R409, R422: u.R422, Fail5xx: u.Fail5xx, FailTimeout: u.FailTimeout, Fail4xx: u.Fail4xx,
		Charges: u.Charges, Charged: u.Charged, Refunds: u.Refunds, Refunded: u.Refunded, Released: u.Released,
		Net:     u.Charged - u.Refunded - u.Released,
		Credits: u.Credits, Credited: u.Credited, LatencyMs: u.LatencyMs, Latency: u.Latency[:]}
}

// currencyInfo is what a client needs to format a currency's minor units.
type currencyInfo struct {
	Decimals int `json:"decimals"`
}

func currenciesOf(rows ...[]store.Usage) map[string]currencyInfo {
	out := map[string]currencyInfo{}
	for _, us := range rows {
		for _, u := range us {
			if d, err := store.Decimals(u.Currency); err == nil {
				out[u.Currency] = currencyInfo{Decimals: d}
			}
		}
	}
	return out
}

// statsQuery reads and checks the query of GET /v1/admin/stats.
func (s *server) statsQuery(q url.Values) (store.UsageQuery, string, error) {
	bucket := q.Get("bucket")
	uq := store.UsageQuery{Caller: q.Get("caller"), Tool: q.Get("tool")}
	var span time.Duration
	switch bucket {
	case "", "day":
		bucket, uq.Bucket, span = "day", 24*time.Hour, maxDayRange
	case "hour":
		uq.Bucket, span = time.Hour, maxHourRange
	default:
		return uq, "", &problem.BadRequestError{Reason: "bucket must be hour or day"}
	}
	if uq.Caller != "" && !catalog.ValidName(uq.Caller, "_.:-") {
		return uq, "", &problem.BadRequestError{Reason: "caller must be a caller id"}
	}
	if uq.Tool != "" && !catalog.ValidName(uq.Tool, "_.-") {
		return uq, "", &problem.BadRequestError{Reason: "tool must be a tool name"}
	}
	now := s.engine.Now().UTC()
	to, err := parseInstant(q.Get("to"), now)
	if err != nil {
		return uq, "", &problem.BadRequestError{Reason: "to: " + err.Error()}
	}
	defaultSpan := 30 * 24 * time.Hour
	if uq.Bucket == time.Hour {
		defaultSpan = 48 * time.Hour
	}
	from, err := parseInstant(q.Get("from"), to.Add(-defaultSpan))
	if err != nil {
		return uq, "", &problem.BadRequestError{Reason: "from: " + err.Error()}
	}
	// Whole buckets: from down, to up.
	uq.From = from.Truncate(uq.Bucket)
	uq.To = to.Truncate(uq.Bucket)
	if uq.To.Before(to) {
		uq.To = uq.To.Add(uq.Bucket)
	}
	switch {
	case !from.Before(to):
		return uq, "", &problem.BadRequestError{Reason: "from must be before to"}
	case uq.To.Sub(uq.From) > span:
		return uq, "", &problem.BadRequestError{Reason: "the range is too long: at most " +
			strconv.Itoa(int(span/(24*time.Hour))) + " days with bucket=" + bucket}
	}
	return uq, bucket, nil
}

// parseInstant reads an RFC 3339 instant or a UTC date (2006-01-02), or
// returns def for "".
func parseInstant(v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 instant or a YYYY-MM-DD date")
	}
	return t, nil
}

// handleStats serves GET /v1/admin/stats: totals per currency, a series per
// bucket and currency, the same per tool, and the top callers by net.
func (s *server) handleStats(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	q, bucket, err := s.statsQuery(r.URL.Query())
	if err != nil {
		problem.Write(w, err)
		return
	}
	ctx := r.Context()
	read := func(uq store.UsageQuery) []store.Usage {
		if err != nil {
			return nil
		}
		var us []store.Usage
		us, err = s.engine.Usage(ctx, uq)
		return us
	}
	whole := q
	whole.Bucket = 0
	series := read(q)
	totals := read(whole)
	byTool := whole
	byTool.ByTool = true
	tools := read(byTool)
	byCaller := whole
	byCaller.ByCaller = true
	callers := read(byCaller)
	if err != nil {
		problem.Write(w, err)
		return
	}
	type seriesRow struct {
		Start time.Time `json:"start"`
		counters
	}
	type toolRow struct {
		Tool string `json:"tool"`
		counters
	}
	type callerRow struct {
		Caller string    `json:"caller"`
		LastAt time.Time `json:"lastAt"`
		counters
	}
	out := struct {
		From       time.Time               `json:"from"`
		To         time.Time               `json:"to"`
		Bucket     string                  `json:"bucket"`
		Tool       string                  `json:"tool,omitempty"`
		Caller     string                  `json:"caller,omitempty"`
		Currencies map[string]currencyInfo `json:"currencies"`
		Totals     []counters              `json:"totals"`
		Series     []seriesRow             `json:"series"`
		Tools      []toolRow               `json:"tools"`
		TopCallers []callerRow             `json:"topCallers"`
	}{From: q.From, To: q.To, Bucket: bucket, Tool: q.Tool, Caller: q.Caller,
		Currencies: currenciesOf(totals), Totals: []counters{}, Series: []seriesRow{}, Tools: []toolRow{}, TopCallers: []callerRow{}}
	for _, u := range totals {
		out.Totals = append(out.Totals, countersOf(u))
	}
	for _, u := range series {
		out.Series = append(out.Series, seriesRow{Start: u.Hour.UTC(), counters: countersOf(u)})
	}
	for _, u := range tools {
		out.Tools = append(out.Tools, toolRow{Tool: u.Tool, counters: countersOf(u)})
	}
	sort.SliceStable(callers, func(i, j int) bool {
		ni, nj := callers[i].Charged-callers[i].Refunded-callers[i].Released, callers[j].Charged-callers[j].Refunded-callers[j].Released
		if ni != nj {
			return ni > nj
		}
		return callers[i].Calls+callers[i].Replays > callers[j].Calls+callers[j].Replays
	})
	for _, u := range callers[:min(len(callers), topCallers)] {
		out.TopCallers = append(out.TopCallers, callerRow{Caller: u.Caller, LastAt: u.LastAt.UTC(), counters: countersOf(u)})
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

// callerBalanceJSON is one currency of a caller in GET /v1/admin/callers.
type callerBalanceJSON struct {
	Currency string `json:"currency"`
	Decimals int    `json:"decimals"`
	Balance  int64  `json:"balance"`
	Owed     int64  `json:"owed"`
}

// handleCallers serves GET /v1/admin/callers: every caller (up to 1000, by
// id) with balances, debts and when it was last seen.
func (s *server) handleCallers(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	cs, err := s.engine.CallerSummaries(r.Context(), callerListLimit)
	if err != nil {
		problem.Write(w, err)
		return
	}
	type callerJSON struct {
		ID        string              `json:"id"`
		Name      string              `json:"name"`
		CreatedAt time.Time           `json:"createdAt"`
		LastSeen  *time.Time          `json:"lastSeen"`
		Balances  []callerBalanceJSON `json:"balances"`
	}
	out := struct {
		Callers []callerJSON `json:"callers"`
	}{Callers: []callerJSON{}}
	for _, c := range cs {
		cj := callerJSON{ID: c.ID, Name: c.Name, CreatedAt: c.CreatedAt.UTC(), Balances: balancesJSON(c.Balances)}
		if !c.LastSeen.IsZero() {
			t := c.LastSeen.UTC()
			cj.LastSeen = &t
		}
		out.Callers = append(out.Callers, cj)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}

func balancesJSON(bs []store.CallerBalance) []callerBalanceJSON {
	out := make([]callerBalanceJSON, 0, len(bs))
	for _, b := range bs {
		d, _ := store.Decimals(b.Currency)
		out = append(out, callerBalanceJSON{Currency: b.Currency, Decimals: d, Balance: b.Balance, Owed: b.Owed})
	}
	return out
}

// adminCallJSON is one record in GET /v1/admin/calls and the attention list.
type adminCallJSON struct {
	Key    string `json:"key"` // the scoped key (a hash): the caller's own key is never stored
	Caller string `json:"caller"`
	callJSON
}

func (s *server) adminCalls(cs []store.CallSummary) []adminCallJSON {
	out := make([]adminCallJSON, 0, len(cs))
	for _, c := range cs {
		t, ok := s.engine.Catalog().Tool(c.Tool)
		if !ok {
			t = catalog.Tool{Name: c.Tool}
		}
		out = append(out, adminCallJSON{Key: c.Key, Caller: c.Caller, callJSON: describeCall(t, c.Record, c.Entries)})
	}
	return out
}

// handleCalls serves GET /v1/admin/calls?status=&tool=&caller=&limit=: the
// most recently updated records with their traces.
func (s *server) handleCalls(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	q := r.URL.Query()
	cq := store.CallQuery{Status: store.Status(q.Get("status")), Tool: q.Get("tool"), Caller: q.Get("caller"), Limit: 50}
	switch cq.Status {
	case "", store.StatusInProgress, store.StatusCompleted, store.StatusFailed:
	default:
		problem.Write(w, &problem.BadRequestError{Reason: "status must be in_progress, completed or failed"})
		return
	}
	if cq.Tool != "" && !catalog.ValidName(cq.Tool, "_.-") {
		problem.Write(w, &problem.BadRequestError{Reason: "tool must be a tool name"})
		return
	}
	if cq.Caller != "" && !catalog.ValidName(cq.Caller, "_.:-") {
		problem.Write(w, &problem.BadRequestError{Reason: "caller must be a caller id"})
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxCallsLimit {
			problem.Write(w, &problem.BadRequestError{Reason: "limit must be an integer from 1 to 200"})
			return
		}
		cq.Limit = n
	}
	cs, err := s.engine.Calls(r.Context(), cq)
	if err != nil {
		problem.Write(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		Calls []adminCallJSON `json:"calls"`
	}{s.adminCalls(cs)})
}

// handleAttention serves GET /v1/admin/attention: calls in progress past
// their lease (abandoned; the next cron sweep refunds and fails them),
// callers who owe money, x402 payments whose settle outcome is not known
// yet (the cron settles them again), and x402 payments whose settle failed
// after the answer was delivered (recorded losses).
func (s *server) handleAttention(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	now := s.engine.Now()
	stuck, err := s.engine.Calls(r.Context(), store.CallQuery{StuckAt: now, Limit: attentionLimit})
	if err != nil {
		problem.Write(w, err)
		return
	}
	cs, err := s.engine.CallerSummaries(r.Context(), callerListLimit)
	if err != nil {
		problem.Write(w, err)
		return
	}
	pending, err := s.engine.PendingSettlements(r.Context(), attentionLimit)
	if err != nil {
		problem.Write(w, err)
		return
	}
	losses, err := s.engine.Losses(r.Context(), attentionLimit)
	if err != nil {
		problem.Write(w, err)
		return
	}
	type owedJSON struct {
		Caller string `json:"caller"`
		callerBalanceJSON
	}
	type settlementJSON struct {
		Payer         string    `json:"payer"`
		Amount        string    `json:"amount"`
		Currency      string    `json:"currency"`
		State         string    `json:"state"`
		Attempts      int       `json:"attempts"`
		NextAttemptAt time.Time `json:"nextAttemptAt"`
		ValidBefore   time.Time `json:"validBefore"`
		Delivered     bool      `json:"delivered"`
		Reason        string    `json:"reason,omitempty"`
	}
	out := struct {
		At                 time.Time        `json:"at"`
		Stuck              []adminCallJSON  `json:"stuck"`
		Owed               []owedJSON       `json:"owed"`
		PendingSettlements []settlementJSON `json:"pendingSettlements"`
		Losses             []settlementJSON `json:"losses"`
	}{At: now.UTC(), Stuck: s.adminCalls(stuck), Owed: []owedJSON{}, PendingSettlements: []settlementJSON{},
		Losses: []settlementJSON{}}
	view := func(p store.Payment) settlementJSON {
		return settlementJSON{Payer: p.Caller, Amount: store.FormatAmount(p.Amount, p.Currency), Currency: p.Currency,
			State: string(p.State), Attempts: p.Attempts, NextAttemptAt: p.NextAttemptAt.UTC(),
			ValidBefore: p.ValidBefore.UTC(), Delivered: p.Delivered, Reason: p.Reason}
	}
	for _, p := range pending {
		out.PendingSettlements = append(out.PendingSettlements, view(p))
	}
	for _, p := range losses {
		out.Losses = append(out.Losses, view(p))
	}
	for _, c := range cs {
		for _, b := range balancesJSON(c.Balances) {
			if b.Owed > 0 && len(out.Owed) < attentionLimit {
				out.Owed = append(out.Owed, owedJSON{Caller: c.ID, callerBalanceJSON: b})
			}
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}
