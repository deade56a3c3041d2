package grpcfailover

import (
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// The GC stress mode (go test -tags grpcfailover_gcstress) checks that every handle stays
// reachable for as long as C uses it, which is what the runtime.KeepAlive after each cgo call is
// for. Around each cgo call that takes a handle it forces a full collection and waits for the
// finalizers it queued; a handle whose owner was finalized meanwhile makes the call panic. In
// this mode finalizers only record the handle (and leak it), so a missing KeepAlive shows up as
// that panic instead of a use-after-free.

var finalized sync.Map // unsafe.Pointer of handles whose owner's finalizer ran

func markFinalized(p unsafe.Pointer) {
	if p != nil {
		finalized.Store(p, struct{}{})
	}
}

// stressPoint is a no-op unless built with the grpcfailover_gcstress tag.
func stressPoint(p unsafe.Pointer) {
	if !gcStress {
		return
	}
	collect()
	if _, dead := finalized.Load(p); dead {
		panic("grpcfailover: a handle's owner was finalized while the handle was in use (missing runtime.KeepAlive)")
	}
}

type sentinel struct {
	_ *int
	_ [2]uintptr
}

// collect runs two full collections, each followed by a wait for a sentinel's finalizer.
// Finalizers run one batch at a time on one goroutine, so when the second sentinel has run,
// every finalizer the first collection queued has run too.
func collect() {
	for i := 0; i < 2; i++ {
		ran := make(chan struct{})
		runtime.SetFinalizer(&sentinel{}, func(*sentinel) { close(ran) })
		runtime.GC()
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			panic("grpcfailover: gc stress: finalizers did not run within 5 s")
		}
	}
}
