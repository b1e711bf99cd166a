package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/toolgate/toolgate-go/store"
)

// The cross-process race re-executes the test binary. These variables tell
// a child what to do; TestMain hands control to MaybeChild before m.Run.
const (
	envChild = "TOOLGATE_STORETEST_CHILD" // the DSN the child opens
	envStart = "TOOLGATE_STORETEST_START" // Unix ms at which all children go
	envIndex = "TOOLGATE_STORETEST_INDEX"
)

// ChildPrice is what every child charges; the parent credits enough for
// ChildCovered charges.
const (
	ChildPrice   = 100
	ChildCovered = 3
)

type childReport struct {
	Claim  string `json:"claim"`
	Charge string `json:"charge"`
	Err    string `json:"err,omitempty"`
}

// MaybeChild runs the child side of ProcessRace and exits when the process
// was started as a child; otherwise it returns at once. open turns the DSN
// the parent passed into a store.
func MaybeChild(open func(dsn string) (store.Store, error)) {
	dsn := os.Getenv(envChild)
	if dsn == "" {
		return
	}
	rep := child(dsn, open)
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(0)
}

func child(dsn string, open func(string) (store.Store, error)) childReport {
	s, err := open(dsn)
	if err != nil {
		return childReport{Err: "open: " + err.Error()}
	}
	start, _ := strconv.ParseInt(os.Getenv(envStart), 10, 64)
	time.Sleep(time.Until(time.UnixMilli(start)))
	owner := fmt.Sprintf("proc-%d", os.Getpid())
	var rep childReport
	res, err := s.Claim(ctx, claim("shared", owner, "fp", t0))
	if err != nil {
		return childReport{Err: "claim: " + err.Error()}
	}
	rep.Claim = res.Outcome.String()
	own, err := s.Claim(ctx, claim("own-"+os.Getenv(envIndex), owner, "fp", t0))
	if err != nil {
		return childReport{Err: "claim own: " + err.Error()}
	}
	_, err = s.Charge(ctx, charge(fence(own), "alice", ChildPrice, t0))
	switch {
	case err == nil:
		rep.Charge = "charged"
	case errors.Is(err, store.ErrInsufficientFunds):
		rep.Charge = "insufficient"
	default:
		return childReport{Err: "charge: " + err.Error()}
	}
	return rep
}

// ProcessRace starts n copies of the test binary (whose TestMain calls
// MaybeChild) against dsn, where s is the parent's view of the same
// database. All children claim one shared key at the same instant, then
// each charges its own key against a balance covering ChildCovered charges.
// Exactly one must claim, exactly ChildCovered must charge, nobody may
// error, and the invariants must hold.
func ProcessRace(t *testing.T, s store.Store, dsn string, n int) {
	t.Helper()
	_, err := s.Credit(context.Background(), store.CreditParams{Caller: "alice", Currency: "USD",
		Amount: ChildPrice * ChildCovered, Reference: "process-race", Now: t0})
	require.NoError(t, err)
	start := time.Now().Add(2 * time.Second).UnixMilli()
	reports := make([]childReport, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envChild+"="+dsn, envStart+"="+strconv.FormatInt(start, 10), envIndex+"="+strconv.Itoa(i))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				errs[i] = fmt.Errorf("child %d: %w: %s", i, err, stderr.String())
				return
			}
			errs[i] = json.Unmarshal(out, &reports[i])
		}(i)
	}
	wg.Wait()
	claimed, charged := 0, 0
	for i, r := range reports {
		require.NoError(t, errs[i])
		require.Empty(t, r.Err, "child %d", i)
		switch r.Claim {
		case "claimed":
			claimed++
		case "in_progress":
		default:
			t.Fatalf("child %d: claim outcome %q", i, r.Claim)
		}
		if r.Charge == "charged" {
			charged++
		} else {
			require.Equal(t, "insufficient", r.Charge)
		}
	}
	require.Equal(t, 1, claimed, "exactly one process claims the shared key")
	require.Equal(t, ChildCovered, charged, "the balance covers exactly this many charges")
	bal, err := s.Balance(context.Background(), "alice", "USD")
	require.NoError(t, err)
	require.Equal(t, int64(0), bal)
	require.NoError(t, s.CheckInvariants(context.Background()))
}
