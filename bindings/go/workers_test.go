package grpcfailover_test

import (
	"os"
	"runtime"
	"testing"
)

// The binding asks the library for half as many worker threads as there are CPUs (at least 1,
// at most 4) before its runtime starts: Go's own threads run the callers.
func TestLibraryRunsHalfAsManyWorkersAsCPUs(t *testing.T) {
	if os.Getenv("GF_WORKER_THREADS") != "" {
		t.Skip("GF_WORKER_THREADS sets the count")
	}
	c := dial(t, "static:///127.0.0.1:1")
	s, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := min(max(runtime.NumCPU()/2, 1), 4); s.WorkerThreads != want {
		t.Fatalf("the library runs %d worker threads, want %d (NumCPU %d)", s.WorkerThreads, want, runtime.NumCPU())
	}
}
