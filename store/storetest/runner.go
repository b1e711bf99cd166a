package storetest

import (
	"fmt"
	"strings"
)

// Result is the outcome of one case run by RunAll.
type Result struct {
	Name    string `json:"name"`
	Passed  bool   `json:"passed"`
	Failure string `json:"failure,omitempty"`
}

// failNow is the panic value a caseT uses to stop a failing case.
type failNow struct{}

// caseT is a TB for runners other than `go test`, such as the D1 runner
// inside workerd, where no *testing.T exists.
type caseT struct{ msgs []string }

func (t *caseT) Errorf(format string, args ...any) {
	t.msgs = append(t.msgs, fmt.Sprintf(format, args...))
}
func (t *caseT) FailNow() { panic(failNow{}) }
func (t *caseT) Helper()  {}

// RunAll runs every case sequentially on fresh stores from h, and checks
// the invariants after each, without the testing package's runner.
func RunAll(h Harness) []Result {
	out := make([]Result, 0, len(Cases))
	for _, c := range Cases {
		out = append(out, runOne(h, c))
	}
	return out
}

func runOne(h Harness, c Case) Result {
	return capture(c.Name, func(t *caseT) { RunCase(t, h, c) })
}

// capture runs fn with a caseT and reports it as a Result: passed unless fn
// failed it or panicked.
func capture(name string, fn func(t *caseT)) (res Result) {
	t := &caseT{}
	res.Name = name
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(failNow); !ok {
				t.msgs = append(t.msgs, fmt.Sprintf("panic: %v", p))
			}
		}
		res.Passed = len(t.msgs) == 0
		res.Failure = strings.Join(t.msgs, "\n")
	}()
	fn(t)
	return res
}
