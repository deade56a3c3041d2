package grpcfailover

// No Go code runs on a library thread, so a library thread never waits for the Go scheduler
// (the one exception is the log thread, which exists to wait for its callback: log.go). A
// call's caller waits in one of two ways:
// - alone in flight, blocked in C on its own thread (gfgo_wait, which is gf_queue_wait: the
//   library wakes the thread when the outcome arrives, spinning first as its blocking calls do);
// - otherwise as a goroutine: the call's outcome goes to the dispatcher's completion queue,
//   whose descriptor the dispatcher goroutine waits on through Go's netpoller; the dispatcher
//   hands each outcome to its caller.

// #include "shims.h"
import "C"

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Version is the version of the linked library, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.gf_version())
}

// abiMismatch is set when the library loaded at run time implements another C ABI than the
// header this package was compiled against.
var abiMismatch = uint32(C.gf_abi_version()) != uint32(C.GF_ABI_VERSION)

func errABI() error {
	return newStatusError(FailedPrecondition, "the loaded libgrpc_failover implements another C ABI than the header this package was built with")
}

// Client is a gRPC client for one target. It is safe for concurrent use by any number of
// goroutines. Close it when done; a finalizer closes a forgotten client, but only when the
// garbage collector gets to it.
type Client struct {
	// ptr is freed (gf_close) only by the finalizer, once no goroutine can reach the Client, so
	// calls use it without a lock; each keeps c reachable (runtime.KeepAlive) for as long as the
	// library uses the handle. Close shuts the client down with gf_client_shutdown, which is
	// safe against calls entering the library at the same moment and leaves the handle valid.
	ptr    *C.gf_client
	closed atomic.Bool
	target string
}

// Dial creates a client for target: "etcd:///<prefix>" (instances under <prefix>/ in etcd, in
// the record format of etcd's naming/endpoints) or "static:///host:port,host:port". It does not
// wait for the network: an unreachable etcd or instance shows up in the calls' errors. A
// malformed target or option fails with InvalidArgument.
func Dial(target string, opts ...Option) (*Client, error) {
	if abiMismatch {
		return nil, errABI()
	}
	o := newDialOptions(opts)
	optionsJSON, err := o.json()
	if err != nil {
		return nil, err
	}
	configureRuntime()
	if err := startDispatcher(); err != nil {
		return nil, err
	}
	ctarget := C.CString(target)
	defer C.free(unsafe.Pointer(ctarget))
	coptions := C.CString(optionsJSON)
	defer C.free(unsafe.Pointer(coptions))
	r := C.gfgo_connect(ctarget, coptions)
	if r.code != 0 {
		return nil, newStatusError(Code(r.code), takeCString(r.error))
	}
	c := &Client{ptr: r.client, target: target}
	runtime.SetFinalizer(c, (*Client).finalize)
	return c, nil
}

// Target is the target the client was dialed with.
func (c *Client) Target() string { return c.target }

// Close stops resolving, closes the connections and ends every call in flight with Canceled.
// It does not wait for anything, and it is safe while other goroutines are calling on the
// client. Calling Close again does nothing; calls on a closed client fail with Canceled. It
// always returns nil. The few bytes of the handle itself are freed by the garbage collector.
func (c *Client) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		C.gf_client_shutdown(c.ptr)
		runtime.KeepAlive(c)
	}
	return nil
}

func (c *Client) finalize() {
	if gcStress {
		markFinalized(unsafe.Pointer(c.ptr))
		return
	}
	c.closed.Store(true)
	if p := c.ptr; p != nil {
		c.ptr = nil
		C.gf_close(p)
	}
}

// closedError is the error of a call the library refused because the client was shut down
// meanwhile (Close racing the call); otherwise err itself.
func (c *Client) closedError(err *StatusError) error {
	if err.code == FailedPrecondition && c.closed.Load() {
		return errClosed()
	}
	return err
}

func errClosed() error {
	return newStatusError(Canceled, "the client is closed")
}

// pending is one call between its start and its completion. It reaches the dispatcher through a
// cgo.Handle; pending values are reused.
type pending struct {
	done chan struct{}
	// Written by the dispatcher before it signals done.
	code     Code
	message  string
	response []byte
	// Asked for by the caller, filled in by the dispatcher.
	wantHeader, wantTrailer bool
	header, trailer         Metadata
}

var pendingPool = sync.Pool{New: func() any { return &pending{done: make(chan struct{}, 1)} }}

func (p *pending) release() {
	*p = pending{done: p.done}
	pendingPool.Put(p)
}

var runtimeConfigured sync.Once

// configureRuntime asks the library for half as many worker threads as there are CPUs (at
// least 1, at most 4), before its runtime starts: in a Go program, Go's own threads run the
// callers (README, "Threads and memory"). GF_WORKER_THREADS, when set, wins. Does nothing when
// the runtime already runs (started by another user of the library in this process). Then
// routes the library's logs to slog at the logger's current level (log.go), at every call.
func configureRuntime() {
	defer routeLogs(false)
	runtimeConfigured.Do(func() {
		n := min(max(runtime.NumCPU()/2, 1), 4)
		// 9 FAILED_PRECONDITION when the runtime already runs: its count stays.
		_ = C.gf_set_worker_threads(C.uint32_t(n), nil)
	})
}

var dispatcher struct {
	once sync.Once
	err  error
}

// startDispatcher creates the completion queue and starts the goroutine that hands completed calls
// to their callers, once per process.
func startDispatcher() error {
	dispatcher.once.Do(func() {
		m := C.gfgo_queue_init()
		if m.code != 0 {
			dispatcher.err = newStatusError(Code(m.code), takeCString(m.error))
			return
		}
		// The library owns the queue's descriptor; the File gets a duplicate (non-blocking,
		// as the original), which makes a File that waits in the netpoller, not on a thread.
		syscall.ForkLock.RLock()
		fd, err := syscall.Dup(int(m.fd))
		if err == nil {
			syscall.CloseOnExec(fd)
		}
		syscall.ForkLock.RUnlock()
		if err != nil {
			dispatcher.err = newStatusError(Internal, "completion queue: "+err.Error())
			return
		}
		go dispatch(os.NewFile(uintptr(fd), "grpcfailover completions"))
	})
	return dispatcher.err
}

// dispatch waits for completed calls and hands each to its caller. The library's threads never
// run Go code; this goroutine copies every outcome into Go memory.
func dispatch(wake *os.File) {
	const batchSize = 256
	cbatch := C.gfgo_batch(batchSize)
	if cbatch == nil {
		panic("grpcfailover: out of memory")
	}
	batch := unsafe.Slice(cbatch, batchSize)
	raw, err := wake.SyscallConn()
	if err != nil {
		panic("grpcfailover: completion queue: " + err.Error())
	}
	// The netpoller is edge-triggered: it wakes this goroutine for outcomes that arrive after
	// the queue was found empty (gf_queue_poll empties the descriptor then). So poll inside
	// Read's function, which runs after Read armed the wait: when it finds nothing, Read parks
	// until the next outcome.
	n := 0
	take := func(uintptr) bool {
		n = int(C.gfgo_poll(cbatch, batchSize))
		return n > 0
	}
	for {
		if err := raw.Read(take); err != nil {
			panic("grpcfailover: completion queue: " + err.Error())
		}
		for i := range batch[:n] {
			complete(&batch[i])
		}
		C.gfgo_release(cbatch, C.size_t(n))
	}
}

// complete copies a call's outcome into its pending and wakes the caller.
func complete(d *C.gfgo_done) {
	p := cgo.Handle(d.handle).Value().(*pending)
	p.fill(d)
	p.done <- struct{}{}
}

// fill copies a call's outcome into Go memory.
func (p *pending) fill(d *C.gfgo_done) {
	p.code = Code(d.code)
	if p.code == OK {
		p.response = C.GoBytes(unsafe.Pointer(d.response), C.int(d.response_len))
	} else {
		p.message = C.GoString(d.message)
	}
	if p.wantHeader {
		p.header = readMetadata(d.result, 0, int(d.headers))
	}
	if p.wantTrailer {
		p.trailer = readMetadata(d.result, 1, int(d.trailers))
	}
}

func readMetadata(r *C.gf_result, trailer C.int, n int) Metadata {
	md := make(Metadata, n)
	for i := 0; i < n; i++ {
		e := C.gfgo_result_entry(r, trailer, C.size_t(i))
		key := C.GoString(e.key)
		md[key] = append(md[key], string(C.GoBytes(unsafe.Pointer(e.value), C.int(e.len))))
	}
	return md
}

// Invoke calls a unary method ("/package.Service/Method") with the serialized request and
// returns the serialized response.
//
// The context's deadline is the call's deadline across all attempts; cancelling the context
// cancels the call. Such a call returns a *StatusError with code Canceled or DeadlineExceeded
// that also matches errors.Is(err, context.Canceled / context.DeadlineExceeded). Any other
// failure is a *StatusError with the call's gRPC code: Unavailable when no instance could take
// it, the server's code otherwise.
func (c *Client) Invoke(ctx context.Context, method string, request []byte, opts ...CallOption) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError(err)
	}
	var timeoutMs C.uint32_t
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, contextError(context.DeadlineExceeded)
		}
		timeoutMs = C.uint32_t(min(millis(left), math.MaxUint32))
	}
	cfg := callConfig{waitForReady: -1}
	for _, o := range opts {
		o.apply(&cfg)
	}

	// Every pointer handed to C lives only for the duration of the start call: the library
	// copies the method, the request and the metadata before it returns.
	cmethod := make([]byte, len(method)+1)
	copy(cmethod, method)
	var creq *C.uint8_t
	if len(request) > 0 {
		creq = (*C.uint8_t)(unsafe.Pointer(&request[0]))
	}
	var ccomp *C.char
	if strings.IndexByte(cfg.compression, 0) >= 0 {
		return nil, newStatusError(InvalidArgument, "compression: contains a NUL byte")
	}
	if cfg.compression != "" {
		comp := make([]byte, len(cfg.compression)+1)
		copy(comp, cfg.compression)
		ccomp = (*C.char)(unsafe.Pointer(&comp[0]))
	}
	var cmd *C.char
	var cindex *C.size_t
	md, index := encodeMetadata(cfg.metadata)
	if len(index) > 0 {
		cmd = (*C.char)(unsafe.Pointer(&md[0]))
		cindex = &index[0]
	}
	done := ctx.Done()
	wantCall := C.int(0)
	if done != nil {
		wantCall = 1
	}
	p := pendingPool.Get().(*pending)
	p.wantHeader, p.wantTrailer = cfg.header != nil, cfg.trailer != nil
	onThread := inFlight.Add(1) == 1 && !forceDispatcher
	defer inFlight.Add(-1)
	var handle C.uintptr_t
	var h cgo.Handle
	if !onThread {
		h = cgo.NewHandle(p)
		handle = C.uintptr_t(h)
	}

	if c.closed.Load() {
		if !onThread {
			h.Delete()
		}
		p.release()
		return nil, errClosed()
	}
	ptr := c.ptr
	stressPoint(unsafe.Pointer(ptr))
	var s C.gfgo_start
	if cfg.plain() {
		s = C.gfgo_invoke(ptr, (*C.char)(unsafe.Pointer(&cmethod[0])), creq, C.size_t(len(request)),
			timeoutMs, handle, wantCall)
	} else {
		s = C.gfgo_invoke_ex(ptr, (*C.char)(unsafe.Pointer(&cmethod[0])), creq, C.size_t(len(request)),
			timeoutMs, C.int32_t(cfg.waitForReady), ccomp, cmd, cindex, C.size_t(len(index)/3),
			handle, wantCall)
	}
	stressPoint(unsafe.Pointer(ptr))
	runtime.KeepAlive(c)
	if s.code != 0 {
		// Rejected: the call never completes.
		if !onThread {
			h.Delete()
		}
		p.release()
		return nil, c.closedError(newStatusError(Code(s.code), takeCString(s.error)))
	}

	var cancelled bool
	if onThread {
		cancelled = waitOnThread(ctx, s, p)
	} else {
		cancelled = waitForDispatcher(done, s, p)
		h.Delete()
	}
	// The client must stay reachable until the call is over: its finalizer would close it and
	// end the call with Canceled.
	stressPoint(unsafe.Pointer(ptr))
	runtime.KeepAlive(c)

	if cfg.header != nil {
		*cfg.header = p.header
	}
	if cfg.trailer != nil {
		*cfg.trailer = p.trailer
	}
	code, message, response := p.code, p.message, p.response
	p.release()
	if code == OK {
		return response, nil
	}
	// A call that ended on its own just as the context ended keeps its own status.
	if cancelled && (code == Canceled || code == DeadlineExceeded) {
		return nil, contextError(ctx.Err())
	}
	err := newStatusError(code, message)
	// The library's timer and the context's may fire a moment apart: a deadline the library
	// enforced is the context's when the context's has passed too.
	if code == DeadlineExceeded && hasDeadline && !time.Now().Before(deadline) {
		err.cause = context.DeadlineExceeded
	}
	return nil, err
}

// Calls in flight on all clients. A call started when no other is in flight waits blocked in C
// on its own thread, which the library wakes directly: the shortest hand-off, and the one that
// matters when calls run one after another. At most one call waits so at a time (the one that
// found no other in flight), so one completion queue serves them all. A call that overlaps others waits as a goroutine
// for the dispatcher instead, so that concurrent calls hold no threads and no Ps.
var inFlight atomic.Int32

// forceDispatcher sends every call through the dispatcher (the tests of that path set it).
var forceDispatcher bool

// waitOnThread blocks this goroutine's thread in C until the call completes, cancelling the call
// if the context ends first. Reports whether it cancelled.
func waitOnThread(ctx context.Context, s C.gfgo_start, p *pending) bool {
	call := s.call
	var stop func() bool
	var cancelReturned atomic.Bool
	if call != nil {
		stop = context.AfterFunc(ctx, func() {
			C.gf_call_cancel(call)
			cancelReturned.Store(true)
		})
	}
	d := C.gfgo_wait()
	p.fill(&d)
	C.gfgo_release(&d, 1)
	cancelled := false
	if stop != nil {
		if !stop() {
			// The context ended: the cancel func runs or ran; the handle is freed after it.
			cancelled = true
			for !cancelReturned.Load() {
				runtime.Gosched()
			}
		}
		C.gf_call_free(call)
	}
	return cancelled
}

// waitForDispatcher waits as a goroutine for the dispatcher to complete the call, cancelling the
// call if done closes first. Reports whether it cancelled.
func waitForDispatcher(done <-chan struct{}, s C.gfgo_start, p *pending) bool {
	if done == nil {
		<-p.done
		return false
	}
	cancelled := false
	select {
	case <-p.done:
	case <-done:
		C.gf_call_cancel(s.call)
		cancelled = true
		// Every started call completes exactly once, also a cancelled one; p is reused only
		// after that.
		<-p.done
	}
	C.gf_call_free(s.call)
	return cancelled
}

// encodeMetadata lays out key/value pairs as gfgo_invoke reads them.
func encodeMetadata(kv []string) ([]byte, []C.size_t) {
	if len(kv) == 0 {
		return nil, nil
	}
	size := 0
	for _, s := range kv {
		size += len(s) + 1
	}
	buf := make([]byte, 0, size)
	index := make([]C.size_t, 0, len(kv)/2*3)
	for i := 0; i+1 < len(kv); i += 2 {
		key, value := kv[i], kv[i+1]
		index = append(index, C.size_t(len(buf)))
		buf = append(buf, key...)
		buf = append(buf, 0)
		index = append(index, C.size_t(len(buf)), C.size_t(len(value)))
		buf = append(buf, value...)
	}
	return buf, index
}

// Stats is a snapshot of a client's counters and instances.
type Stats struct {
	Target             string          `json:"target"`
	Calls              uint64          `json:"calls"`
	CallsFailed        uint64          `json:"calls_failed"`
	Attempts           uint64          `json:"attempts"`
	Retries            uint64          `json:"retries"`
	TransparentRetries uint64          `json:"transparent_retries"`
	Hedges             uint64          `json:"hedges"`
	HedgesWon          uint64          `json:"hedges_won"` // calls won by a hedge after the first attempt
	ThrottledRetries   uint64          `json:"throttled_retries"`
	RetryTokens        *float64        `json:"retry_tokens"`
	WorkerThreads      int             `json:"worker_threads"` // the library's, process-wide
	Policy             string          `json:"policy"`
	Resolved           bool            `json:"resolved"`
	ResolverError      string          `json:"resolver_error"`
	Connections        ConnectionStats `json:"connections"`
	WRR                *WRRStats       `json:"wrr"`  // weighted_round_robin only
	Etcd               *EtcdStats      `json:"etcd"` // etcd targets only
	Instances          []InstanceStats `json:"instances"`
}

// ConnectionStats counts the connection attempts of a client's instances (gRFC A94).
type ConnectionStats struct {
	AttemptsSucceeded uint64 `json:"attempts_succeeded"`
	AttemptsFailed    uint64 `json:"attempts_failed"`
	Disconnections    uint64 `json:"disconnections"`
	Open              uint64 `json:"open"`
}

// WRRStats counts weighted round robin scheduler updates (gRFC A78).
type WRRStats struct {
	RRFallback                 uint64 `json:"rr_fallback"`                    // updates where no instance had a weight of its own
	EndpointWeightNotYetUsable uint64 `json:"endpoint_weight_not_yet_usable"` // instances without a weight in their metadata
}

// EtcdStats counts what the etcd resolver saw.
type EtcdStats struct {
	Puts          uint64 `json:"puts"`
	Deletes       uint64 `json:"deletes"`
	Resyncs       uint64 `json:"resyncs"` // re-listings after the watch's revision was compacted
	WatchRestarts uint64 `json:"watch_restarts"`
}

// InstanceStats is the state of one instance of a client's target.
type InstanceStats struct {
	Address        string          `json:"address"`
	Weight         float64         `json:"weight"`
	Metadata       json.RawMessage `json:"metadata"`
	State          string          `json:"state"` // IDLE, CONNECTING, READY, TRANSIENT_FAILURE, SHUTDOWN
	Healthy        bool            `json:"healthy"`
	Ejected        bool            `json:"ejected"`
	EjectedUntilMs uint64          `json:"ejected_until_ms"`
	Ejections      uint64          `json:"ejections"`
	Unejections    uint64          `json:"unejections"`
	HealthChanges  uint64          `json:"health_changes"`
	Calls          uint64          `json:"calls"`
	Failures       uint64          `json:"failures"`
	InFlight       uint64          `json:"in_flight"`
	LastError      string          `json:"last_error"`
	// KeepaliveTimeMs is the keepalive interval of the instance's next connections (0: off);
	// it doubles each time the server answers GOAWAY "too_many_pings".
	KeepaliveTimeMs uint64 `json:"keepalive_time_ms"`
}

// Stats returns the client's counters and the state of each instance. It does not block.
func (c *Client) Stats() (*Stats, error) {
	if c.closed.Load() {
		return nil, errClosed()
	}
	text, err := c.libString(func(p *C.gf_client) C.gfgo_stats { return C.gfgo_client_stats(p) })
	if err != nil {
		return nil, err
	}
	var s Stats
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		return nil, newStatusError(Internal, "stats: "+err.Error())
	}
	return &s, nil
}

// Metrics returns the client's metrics in the Prometheus text format (gf_client_metrics): the
// gRFC A66 client metrics (grpc_client_attempt_duration_seconds and the rest, labelled
// grpc_method, grpc_target and grpc_status; methods not listed in the "metrics.methods" option,
// WithRawOption("metrics", ...), are labelled "other") and the library's own grpc_failover_*
// counters and per-instance gauges. Serve it from a scrape endpoint. It does not block.
func (c *Client) Metrics() (string, error) {
	if c.closed.Load() {
		return "", errClosed()
	}
	return c.libString(func(p *C.gf_client) C.gfgo_stats { return C.gfgo_client_metrics(p) })
}

// libString calls a shim that returns a string of the library's (stats JSON, metrics text) for
// the client, and copies it out.
func (c *Client) libString(call func(*C.gf_client) C.gfgo_stats) (string, error) {
	ptr := c.ptr
	stressPoint(unsafe.Pointer(ptr))
	r := call(ptr)
	stressPoint(unsafe.Pointer(ptr))
	runtime.KeepAlive(c)
	if r.code != 0 {
		return "", c.closedError(newStatusError(Code(r.code), takeCString(r.error)))
	}
	return takeCString(r.json), nil
}

// takeCString copies a string the library returned and frees it.
func takeCString(s *C.char) string {
	if s == nil {
		return ""
	}
	defer C.gf_string_free(s)
	return C.GoString(s)
}
