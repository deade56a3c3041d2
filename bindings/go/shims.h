// Trampolines between the Go binding and the C ABI (include/grpc_failover.h), compiled by cgo.
// They only pass arguments and results by value, so that no Go pointer is written by C and one
// cgo call does what would otherwise take several; every decision (how a caller waits, when it
// spins, what a valid argument is) is the library's or the Go code's.
#ifndef GRPCFAILOVER_GO_SHIMS_H
#define GRPCFAILOVER_GO_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "grpc_failover.h"

// A completed call's outcome: its result, and the fields Go reads, read out in C.
typedef struct {
	uintptr_t handle;
	int32_t code;
	const char *message;
	const uint8_t *response;
	size_t response_len;
	gf_result *result;
	size_t headers;
	size_t trailers;
} gfgo_done;

typedef struct {
	int fd;
	int32_t code;
	char *error;
} gfgo_queue_made;

// Makes the two completion queues: the dispatcher's, whose descriptor it returns, and the one a
// caller alone in flight waits on with gfgo_wait. Once per process.
gfgo_queue_made gfgo_queue_init(void);

// Takes up to max (at most 256) outcomes from the dispatcher's queue into out (C memory: cgo
// checks Go memory passed to C on every call); returns how many.
size_t gfgo_poll(gfgo_done *out, size_t max);

// Blocks until the call started with handle 0 completes (gf_queue_wait) and returns its outcome
// (release it with gfgo_release).
gfgo_done gfgo_wait(void);

gfgo_done *gfgo_batch(size_t n);
void gfgo_release(gfgo_done *done, size_t n);

// The outcome of starting a call, returned by value.
typedef struct {
	gf_call *call;
	int32_t code;
	char *error;
} gfgo_start;

// Starts a call without call options. Its outcome goes to the dispatcher's queue with this
// handle, or, for handle 0, to the queue gfgo_wait waits on.
gfgo_start gfgo_invoke(gf_client *client, const char *method, const uint8_t *request,
                       size_t request_len, uint32_t timeout_ms, uintptr_t handle, int want_call);

// Starts a call with call options (handle as in gfgo_invoke). The metadata comes as one buffer:
// entry i has its NUL-terminated key at md + md_index[3i] and its value at md + md_index[3i+1],
// of length md_index[3i+2]. compression is NULL for the client's choice.
gfgo_start gfgo_invoke_ex(gf_client *client, const char *method, const uint8_t *request,
                          size_t request_len, uint32_t timeout_ms, int32_t wait_for_ready,
                          const char *compression, const char *md, const size_t *md_index,
                          size_t md_count, uintptr_t handle, int want_call);

typedef struct {
	const char *key;
	const uint8_t *value;
	size_t len;
} gfgo_entry;

gfgo_entry gfgo_result_entry(const gf_result *r, int trailer, size_t i);

typedef struct {
	gf_client *client;
	int32_t code;
	char *error;
} gfgo_connected;

gfgo_connected gfgo_connect(const char *target, const char *options_json);

typedef struct {
	char *json;
	int32_t code;
	char *error;
} gfgo_stats;

gfgo_stats gfgo_client_stats(gf_client *client);

// The client's metrics text (gf_client_metrics), in the json field.
gfgo_stats gfgo_client_metrics(gf_client *client);

typedef struct {
	gf_registration *registration;
	int32_t code;
	char *error;
} gfgo_registered;

gfgo_registered gfgo_register(const char *options_json, const char *prefix, const char *addr,
                              const char *metadata_json, uint32_t ttl_s);

typedef struct {
	int32_t code;
	char *error;
} gfgo_status;

gfgo_status gfgo_deregister(gf_registration *registration);

// Routes the library's log records, at level and above, to the Go function gfgoLog (log.go).
// Returns gf_set_log_callback's code.
int32_t gfgo_route_logs(int32_t level);

#endif
