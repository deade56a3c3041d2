package grpcfailover

import "os"

// GRPCFAILOVER_TEST_DISPATCHER_ONLY=1 runs the whole suite with every call waiting for the
// dispatcher, including calls that would otherwise wait on their own thread (run_tests.sh does).
func init() {
	forceDispatcher = os.Getenv("GRPCFAILOVER_TEST_DISPATCHER_ONLY") != ""
}
