package grpcfailover

// #include "shims.h"
import "C"

import (
	"context"
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Registration is an instance registered in etcd by Register, its lease kept alive in the
// background until Close.
type Registration struct {
	mu  sync.Mutex
	ptr *C.gf_registration
	key string
}

// Register puts addr ("host:port") in etcd under prefix, as the key "<prefix>/<addr>" with the
// value {"Op":0,"Addr":addr,"Metadata":metadata}: the record format of etcd's Go
// naming/endpoints, so grpc-go clients with etcd's resolver find it as well as etcd:/// clients
// of this package. metadata may be nil; {"weight": 10} sets the instance's weight. The record
// lives on a lease of ttl (rounded up to whole seconds), renewed in the background and granted
// anew if it is lost, until Close.
//
// Only the etcd options (WithEtcd, WithEtcdAuth, WithEtcdDialTimeout) are used. Register returns
// once the record is in etcd; Unavailable when etcd cannot be reached within its dial timeout,
// which the context's deadline shortens. If ctx ends first, Register returns ctx's error and a
// registration that completes afterwards is removed again.
func Register(ctx context.Context, prefix, addr string, metadata map[string]any, ttl time.Duration, opts ...Option) (*Registration, error) {
	if abiMismatch {
		return nil, errABI()
	}
	if err := ctx.Err(); err != nil {
		return nil, contextError(err)
	}
	if ttl <= 0 {
		return nil, newStatusError(InvalidArgument, "ttl: must be positive")
	}
	ttlS := min((ttl+time.Second-1)/time.Second, math.MaxUint32)
	o := newDialOptions(opts)
	if deadline, ok := ctx.Deadline(); ok {
		left := millis(time.Until(deadline))
		if current, set := o.etcd["dial_timeout_ms"].(int64); !set || left < current {
			o.etcd["dial_timeout_ms"] = max(left, 1)
		}
	}
	optionsJSON, err := o.json()
	if err != nil {
		return nil, err
	}
	var metadataJSON *string
	if metadata != nil {
		b, err := json.Marshal(metadata)
		if err != nil {
			return nil, newStatusError(InvalidArgument, "metadata: "+err.Error())
		}
		s := string(b)
		metadataJSON = &s
	}

	type outcome struct {
		ptr *C.gf_registration
		err error
	}
	// gf_register blocks and cannot be interrupted: it runs on its own goroutine so that ctx can
	// end the wait.
	result := make(chan outcome, 1)
	go func() {
		ptr, err := register(optionsJSON, prefix, addr, metadataJSON, uint32(ttlS))
		result <- outcome{ptr, err}
	}()
	select {
	case r := <-result:
		if r.err != nil {
			return nil, r.err
		}
		reg := &Registration{ptr: r.ptr, key: strings.TrimRight(prefix, "/") + "/" + addr}
		runtime.SetFinalizer(reg, (*Registration).finalize)
		return reg, nil
	case <-ctx.Done():
		go func() {
			if r := <-result; r.ptr != nil {
				_ = deregister(r.ptr)
			}
		}()
		return nil, contextError(ctx.Err())
	}
}

func register(optionsJSON, prefix, addr string, metadataJSON *string, ttlS uint32) (*C.gf_registration, error) {
	coptions := C.CString(optionsJSON)
	defer C.free(unsafe.Pointer(coptions))
	cprefix := C.CString(prefix)
	defer C.free(unsafe.Pointer(cprefix))
	caddr := C.CString(addr)
	defer C.free(unsafe.Pointer(caddr))
	var cmetadata *C.char
	if metadataJSON != nil {
		cmetadata = C.CString(*metadataJSON)
		defer C.free(unsafe.Pointer(cmetadata))
	}
	configureRuntime()
	r := C.gfgo_register(coptions, cprefix, caddr, cmetadata, C.uint32_t(ttlS))
	if r.code != 0 {
		return nil, newStatusError(Code(r.code), takeCString(r.error))
	}
	return r.registration, nil
}

// Key is the etcd key of the registration: "<prefix>/<addr>".
func (r *Registration) Key() string { return r.key }

// Close stops the keepalives, deletes the key and revokes the lease. It blocks up to about 5 s;
// on Unavailable (etcd could not be told) the record still disappears when its lease expires.
// Calling Close again does nothing and returns nil.
func (r *Registration) Close() error {
	r.mu.Lock()
	p := r.ptr
	r.ptr = nil
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	runtime.SetFinalizer(r, nil)
	return deregister(p)
}

func deregister(p *C.gf_registration) error {
	s := C.gfgo_deregister(p)
	if s.code != 0 {
		return newStatusError(Code(s.code), takeCString(s.error))
	}
	return nil
}

// finalize deregisters a forgotten registration. gf_deregister blocks, and a finalizer must not,
// so it runs on its own goroutine.
func (r *Registration) finalize() {
	p := r.ptr
	if gcStress {
		markFinalized(unsafe.Pointer(p))
		return
	}
	go func() { _ = deregister(p) }()
}
