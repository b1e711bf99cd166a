package memory_test

import (
	"testing"

	"github.com/toolgate/toolgate-go/store"
	"github.com/toolgate/toolgate-go/store/memory"
	"github.com/toolgate/toolgate-go/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, storetest.Harness{New: func(storetest.TB) (store.Store, *store.CountingClient) {
		return memory.New(), nil
	}})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, storetest.Harness{New: func(storetest.TB) (store.Store, *store.CountingClient) {
		return memory.New(), nil
	}})
}
