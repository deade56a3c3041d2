//go:build !grpcfailover_pkgconfig

package grpcfailover

// Links the library built in this repository (make build) and records its directory as the
// rpath, so tests and programs built from this checkout run without LD_LIBRARY_PATH. CGO_CFLAGS
// and CGO_LDFLAGS come first on the command line, so they point elsewhere when set; for an
// installed library, build with -tags grpcfailover_pkgconfig instead.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -Wl,-rpath,${SRCDIR}/../../target/release -lgrpc_failover
import "C"
