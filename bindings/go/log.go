package grpcfailover

// #include "shims.h"
import "C"

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// The library's log records (connection attempts and failures, etcd re-listings, outlier
// ejections, internal errors) go to a *slog.Logger: slog.Default() unless SetLogger names
// another. The library logs the levels that logger's handler is enabled for, read at SetLogger,
// Dial and Register: with slog's default handler that is INFO and above; a handler at
// slog.LevelDebug also gets the connection attempts.
//
// Records reach Go on the library's log thread, one at a time, never on the thread that logged,
// so a slow handler holds up only later records (4,096 wait; past that they are dropped and a
// WARN record says how many), never a call. When GF_LOG is set in the environment and
// SetLogger is never called, records go to stderr at the GF_LOG level instead, as in C.

var (
	logger     atomic.Pointer[slog.Logger]
	logRouting sync.Mutex
	logRouted  bool
)

// SetLogger routes the library's log records to l (nil: back to slog.Default()) from now on,
// process-wide: one logger for every Client and Registration. Safe for concurrent use.
func SetLogger(l *slog.Logger) {
	logger.Store(l)
	routeLogs(true)
}

func currentLogger() *slog.Logger {
	if l := logger.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// slogTrace is the slog level of the library's TRACE records (slog has none; DEBUG is -4).
const slogTrace = slog.LevelDebug - 4

// routeLogs points the library's log callback at gfgoLog (once) and sets the library's level to
// the most detailed one the logger is enabled for. Explicit (SetLogger) routing happens even
// when GF_LOG is set; the implicit one of Dial and Register leaves GF_LOG's stderr in place.
func routeLogs(explicit bool) {
	logRouting.Lock()
	defer logRouting.Unlock()
	if !explicit && !logRouted && os.Getenv("GF_LOG") != "" {
		return
	}
	level := C.int32_t(C.GF_LOG_OFF)
	h := currentLogger().Handler()
	ctx := context.Background()
	for _, l := range []struct {
		slog slog.Level
		gf   C.int32_t
	}{
		{slogTrace, C.GF_LOG_TRACE},
		{slog.LevelDebug, C.GF_LOG_DEBUG},
		{slog.LevelInfo, C.GF_LOG_INFO},
		{slog.LevelWarn, C.GF_LOG_WARN},
		{slog.LevelError, C.GF_LOG_ERROR},
	} {
		if h.Enabled(ctx, l.slog) {
			level = l.gf
			break
		}
	}
	if logRouted {
		_ = C.gf_set_log_level(level, nil)
		return
	}
	// 9 FAILED_PRECONDITION only when the program installed a Rust logger of its own.
	if C.gfgo_route_logs(level) == 0 {
		logRouted = true
	}
}

//export gfgoLog
func gfgoLog(level C.int32_t, target, message *C.char) {
	var l slog.Level
	switch level {
	case C.GF_LOG_ERROR:
		l = slog.LevelError
	case C.GF_LOG_WARN:
		l = slog.LevelWarn
	case C.GF_LOG_INFO:
		l = slog.LevelInfo
	case C.GF_LOG_DEBUG:
		l = slog.LevelDebug
	default:
		l = slogTrace
	}
	lg := currentLogger()
	ctx := context.Background()
	if !lg.Enabled(ctx, l) {
		return
	}
	lg.Log(ctx, l, C.GoString(message), slog.String("target", C.GoString(target)))
}
