package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// FaultHarness makes fresh stores whose database calls go through a
// FaultClient, for the fault storms (FaultCases).
type FaultHarness struct {
	// New returns an empty, migrated store over a FaultClient made from
	// cfg, and that client.
	New func(t TB, cfg FaultConfig) (store.Store, *FaultClient)
}

// FaultCase is one scenario under injected faults. The conformance cases
// assert exact outcomes and round trips, which a lost reply changes; a fault
// case asserts only what must hold whatever the faults: every operation
// succeeds or returns an error (an injected one or a store sentinel), and
// once the faults stop, every key can be finished, the ledger shows no
// double charge and no lost credit, and CheckInvariants holds.
type FaultCase struct {
	Name   string
	Config FaultConfig
	Run    func(t TB, s store.Store, fc *FaultClient)
}

// ExerciseFaults runs every fault case against h, each on a fresh store,
// checks the invariants after each with the faults off, and logs the faults
// injected.
func ExerciseFaults(t *testing.T, h FaultHarness) {
	t.Helper()
	for _, c := range FaultCases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			counts := RunFaultCase(t, h, c)
			t.Logf("%s: faults: %s", c.Name, counts)
		})
	}
}

// RunFaultCase runs c on a fresh store from h, then checks the invariants
// with the faults off, and returns the faults injected.
func RunFaultCase(t TB, h FaultHarness, c FaultCase) FaultCounts {
	t.Helper()
	s, fc := h.New(t, c.Config)
	c.Run(t, s, fc)
	fc.SetEnabled(false)
	fc.EndOutage()
	require.NoError(t, s.CheckInvariants(ctx), "invariants after %s", c.Name)
	return fc.Counts()
}

// FaultResult is the outcome of one fault case run by RunAllFaults, and
// the faults it injected.
type FaultResult struct {
	Result
	Faults FaultCounts `json:"faults"`
}

// RunAllFaults runs every fault case sequentially on fresh stores from h,
// like RunAll, without the testing package's runner: the D1 runner inside
// workerd uses it.
func RunAllFaults(h FaultHarness) []FaultResult {
	out := make([]FaultResult, 0, len(FaultCases))
	for _, c := range FaultCases {
		out = append(out, runFaultOne(h, c))
	}
	return out
}

func runFaultOne(h FaultHarness, c FaultCase) FaultResult {
	var counts FaultCounts
	r := capture(c.Name, func(t *caseT) { counts = RunFaultCase(t, h, c) })
	return FaultResult{Result: r, Faults: counts}
}

// stormConfig injects every kind of fault into about a third of the calls.
var stormConfig = FaultConfig{Seed: 1, BeforeRate: 0.15, AfterRate: 0.15, LatencyRate: 0.3, MaxLatency: 2 * time.Millisecond}

// FaultCases are the fault storms.
var FaultCases = []FaultCase{
	{"StormClaimChargeFinish", stormConfig, func(t TB, s store.Store, fc *FaultClient) {
		st := newStorm(s, fc, 5, 100)
		st.credit(t, 3, 2000)
		require.NoError(t, st.run(8, 12, t0))
		fc.SetEnabled(false)
		st.credit(t, 1, 500) // after the storm: credits still count once
		// After the leases: every key is finished by a fresh attempt,
		// replayed if it completed, taken over with its charge if not.
		for _, k := range st.keys {
			p := claimCharge(k, "finisher-"+k, "alice", st.price, at(3*lease))
			res, err := s.ClaimCharge(ctx, p)
			require.NoError(t, err)
			if res.Outcome == store.OutcomeCompleted {
				continue
			}
			require.Equal(t, store.OutcomeClaimed.String(), res.Outcome.String(), "key %s", k)
			require.NoError(t, res.ChargeErr)
			f := store.Fence{Key: k, Owner: p.Owner, Generation: res.Record.Generation}
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: at(3 * lease),
				Response: store.Response{StatusCode: 200, Body: []byte(k)}}))
		}
		// One net price per key, every credit once.
		for _, k := range st.keys {
			requireNet(t, s, k, st.price, st.price)
			rec, err := s.Peek(ctx, k)
			require.NoError(t, err)
			require.Equal(t, store.StatusCompleted, rec.Status)
			require.Equal(t, store.ChargeCharged, rec.Charge.State)
		}
		requireBalance(t, s, "alice", st.credited-int64(len(st.keys))*st.price)
		require.Positive(t, fc.Counts().Before)
		require.Positive(t, fc.Counts().After)
	}},

	{"StormHoldCaptureFinish", stormConfig, func(t TB, s store.Store, fc *FaultClient) {
		// Metered: every claim holds 100, every Complete captures 37.
		st := newStorm(s, fc, 5, 100)
		used := int64(37)
		st.capture = &used
		st.credit(t, 3, 2000)
		require.NoError(t, st.run(8, 12, t0))
		fc.SetEnabled(false)
		for _, k := range st.keys {
			p := st.claimCharge(k, "finisher-"+k, at(3*lease))
			res, err := s.ClaimCharge(ctx, p)
			require.NoError(t, err)
			if res.Outcome == store.OutcomeCompleted {
				continue
			}
			require.Equal(t, store.OutcomeClaimed.String(), res.Outcome.String(), "key %s", k)
			require.NoError(t, res.ChargeErr)
			f := store.Fence{Key: k, Owner: p.Owner, Generation: res.Record.Generation}
			require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: at(3 * lease), Capture: &used,
				Response: store.Response{StatusCode: 200, Body: []byte(k)}}))
		}
		// Per key: never more than one maximum at any entry, and in the end
		// the capture, or the whole maximum where a Complete's release was
		// cut off from it (only without batches); never a second release.
		var spent int64
		for _, k := range st.keys {
			rec, err := s.Peek(ctx, k)
			require.NoError(t, err)
			require.Equal(t, []any{store.StatusCompleted, store.ChargeCharged, store.HoldCaptured},
				[]any{rec.Status, rec.Charge.State, rec.Charge.Hold}, "key %s", k)
			requireNet(t, s, k, st.price, rec.Charge.Amount)
			require.Contains(t, []int64{used, st.price}, rec.Charge.Amount, "key %s", k)
			spent += rec.Charge.Amount
		}
		requireBalance(t, s, "alice", st.credited-spent)
		require.Positive(t, fc.Counts().Before)
		require.Positive(t, fc.Counts().After)
	}},

	{"StormAbandonedChargesSwept", stormConfig, func(t TB, s store.Store, fc *FaultClient) {
		st := newStorm(s, fc, 6, 100)
		st.credit(t, 2, 1000)
		st.abandon = true
		require.NoError(t, st.run(8, 6, t0))
		// Sweep past the TTL, under faults, until a sweep gets through
		// with nothing left: every abandoned charge is refunded before its
		// record goes, whatever the faults.
		gone := func() bool {
			for _, k := range st.keys {
				if _, err := s.Peek(ctx, k); !errors.Is(err, store.ErrNotFound) {
					return false // still there, or unknown under a fault
				}
			}
			return true
		}
		for i := 0; ; i++ {
			require.Less(t, i, 200, "sweep did not finish under faults")
			n, err := s.Sweep(ctx, at(ttl+2*lease), 2)
			requireAllowed(t, err, "sweep")
			if err == nil && n == 0 && gone() {
				break
			}
		}
		fc.SetEnabled(false)
		for _, k := range st.keys {
			_, err := s.Peek(ctx, k)
			require.ErrorIs(t, err, store.ErrNotFound, "key %s swept", k)
			requireNet(t, s, k, st.price, 0)
		}
		requireBalance(t, s, "alice", st.credited)
	}},

	{"OutageMidStorm", FaultConfig{Seed: 2, LatencyRate: 0.5, MaxLatency: time.Millisecond}, func(t TB, s store.Store, fc *FaultClient) {
		st := newStorm(s, fc, 4, 100)
		st.credit(t, 1, 1000)
		// The database is down when the storm starts, and comes back once
		// it has refused 20 calls (or the storm is over).
		fc.StartOutage()
		done := make(chan struct{})
		var stormErr error
		go func() {
			defer close(done)
			stormErr = st.run(8, 10, t0)
		}()
		for fc.Counts().Outage < 20 {
			select {
			case <-done:
			case <-time.After(time.Millisecond):
				continue
			}
			break
		}
		fc.EndOutage()
		<-done
		require.NoError(t, stormErr)
		require.GreaterOrEqual(t, fc.Counts().Outage, int64(20))
		for _, k := range st.keys {
			p := claimCharge(k, "finisher-"+k, "alice", st.price, at(3*lease))
			res, err := s.ClaimCharge(ctx, p)
			require.NoError(t, err)
			if res.Outcome == store.OutcomeClaimed {
				f := store.Fence{Key: k, Owner: p.Owner, Generation: res.Record.Generation}
				require.NoError(t, s.Complete(ctx, store.CompleteParams{Fence: f, Now: at(3 * lease),
					Response: store.Response{StatusCode: 200, Body: []byte(k)}}))
			}
			requireNet(t, s, k, st.price, st.price)
		}
		requireBalance(t, s, "alice", st.credited-int64(len(st.keys))*st.price)
	}},
}

// storm drives paid calls on a few keys from many goroutines at once, the
// way the engine does, through a store whose database injects faults.
type storm struct {
	s        store.Store
	fc       *FaultClient
	keys     []string
	price    int64
	abandon  bool // claim and charge only, never finish
	credited int64
	// capture, if set, makes price a metered maximum: every claim holds
	// it and every Complete captures *capture.
	capture *int64
}

// claimCharge is the storm's claim and charge (or hold) of key by owner.
func (st *storm) claimCharge(key, owner string, now time.Time) store.ClaimChargeParams {
	p := claimCharge(key, owner, "alice", st.price, now)
	p.Hold = st.capture != nil
	return p
}

func newStorm(s store.Store, fc *FaultClient, keys int, price int64) *storm {
	st := &storm{s: s, fc: fc, price: price}
	for i := 0; i < keys; i++ {
		st.keys = append(st.keys, fmt.Sprintf("storm-%d", i))
	}
	return st
}

// credit credits alice n times amount, each under its own reference,
// retrying each until it gets through: a retry after a lost reply must not
// credit twice.
func (st *storm) credit(t TB, n int, amount int64) {
	t.Helper()
	for i := 0; i < n; i++ {
		ref := fmt.Sprintf("storm-credit-%d-%d", st.credited, i)
		for try := 0; ; try++ {
			require.Less(t, try, 100, "credit did not get through")
			_, err := st.s.Credit(ctx, store.CreditParams{Caller: "alice", Currency: "USD", Amount: amount, Reference: ref, Now: t0})
			requireAllowed(t, err, "credit")
			if err == nil {
				break
			}
		}
	}
	st.credited += int64(n) * amount
}

// requireAllowed fails t unless err is nil, an injected fault, or one of the
// store's sentinel errors.
func requireAllowed(t TB, err error, op string) {
	t.Helper()
	if err == nil || errors.Is(err, ErrInjected) {
		return
	}
	for _, s := range []error{store.ErrFencedOut, store.ErrInsufficientFunds, store.ErrNotFound} {
		if errors.Is(err, s) {
			return
		}
	}
	require.NoError(t, err, "%s: an error that is neither injected nor a sentinel", op)
}

// run starts workers goroutines that each make calls attempts at random keys
// at now, waits for them, and returns what went wrong: an error that is
// neither injected nor a store sentinel, or a panic.
func (st *storm) run(workers, calls int, now time.Time) error {
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[w] = fmt.Errorf("worker %d: %v", w, p)
				}
			}()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for c := 0; c < calls; c++ {
				if err := st.call(st.keys[rng.IntN(len(st.keys))], fmt.Sprintf("w%d-c%d", w, c), rng, now); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// call is one attempt at key by owner: claim and charge, then complete, or
// refund and fail, each retried a few times on error with the same fence,
// as the engine does. An attempt that runs out of tries abandons the key
// (it stays in progress with its charge until its lease runs out). It
// returns an error only for an error that is neither injected nor a store
// sentinel.
func (st *storm) call(key, owner string, rng *rand.Rand, now time.Time) error {
	const tries = 3
	check := func(err error, op string) error {
		if err == nil || errors.Is(err, ErrInjected) || errors.Is(err, store.ErrFencedOut) ||
			errors.Is(err, store.ErrInsufficientFunds) || errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("%s %s by %s: %w", op, key, owner, err)
	}
	var res store.ClaimChargeResult
	var err error
	for i := 0; i < tries; i++ {
		res, err = st.s.ClaimCharge(ctx, st.claimCharge(key, owner, now))
		if cerr := check(err, "claim and charge"); cerr != nil {
			return cerr
		}
		if err == nil {
			break
		}
	}
	if err != nil || res.Outcome != store.OutcomeClaimed || st.abandon {
		return nil
	}
	if res.ChargeErr != nil {
		// Like the engine: an unknown charge leaves the key to its lease
		// (insufficient funds cannot happen here: the balance covers
		// every key).
		return check(res.ChargeErr, "charge")
	}
	f := store.Fence{Key: key, Owner: owner, Generation: res.Record.Generation}
	retry := func(op string, fn func() error) (bool, error) {
		for i := 0; i < tries; i++ {
			err := fn()
			if cerr := check(err, op); cerr != nil {
				return false, cerr
			}
			if err == nil {
				return true, nil
			}
			if errors.Is(err, store.ErrFencedOut) {
				return false, nil
			}
		}
		return false, nil
	}
	if rng.IntN(2) == 0 {
		_, err := retry("complete", func() error {
			return st.s.Complete(ctx, store.CompleteParams{Fence: f, Now: now, Capture: st.capture,
				Response: store.Response{StatusCode: 200, Body: []byte(owner)}})
		})
		return err
	}
	ok, err := retry("refund", func() error {
		_, _, err := st.s.Refund(ctx, f, now)
		return err
	})
	if !ok || err != nil {
		return err
	}
	_, err = retry("fail", func() error { return st.s.Fail(ctx, f, "storm", now) })
	return err
}

// requireNet checks that key's ledger entries, charges minus refunds, stay
// between 0 and price entry by entry (no double charge, no double refund)
// and end at want.
func requireNet(t TB, s store.Store, key string, price, want int64) {
	t.Helper()
	entries, err := s.Entries(ctx, store.EntryFilter{Key: key})
	require.NoError(t, err)
	var net int64
	for _, e := range entries {
		net -= e.Amount
		require.GreaterOrEqual(t, net, int64(0), "key %s: refunded more than charged", key)
		require.LessOrEqual(t, net, price, "key %s: charged twice", key)
	}
	require.Equal(t, want, net, "net charge of %s", key)
}
