package grpcfailover_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// The library writes to sockets with writev; a peer that went away raises SIGPIPE on the writing
// thread, which would kill a Go program. The library's threads must have it blocked.
func TestLibraryThreadsBlockSIGPIPE(t *testing.T) {
	dial(t, "static:///127.0.0.1:1") // the library's runtime exists from the first Dial on
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	const sigpipe = 13
	threads := 0
	for _, task := range tasks {
		dir := "/proc/self/task/" + task.Name()
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "grpc-failover" {
			continue
		}
		status, err := os.ReadFile(dir + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
				if err != nil {
					t.Fatalf("%s: %q", dir, line)
				}
				if mask&(1<<(sigpipe-1)) == 0 {
					t.Errorf("library thread %s has SIGPIPE unblocked (SigBlk %s)", task.Name(), strings.TrimSpace(hex))
				}
				threads++
			}
		}
	}
	if threads == 0 {
		t.Fatal("found no library thread (named grpc-failover)")
	}
}
