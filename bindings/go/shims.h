// Trampolines between the Go binding and the C ABI (include/grpc_failover.h), compiled by cgo.
#ifndef GRPCFAILOVER_GO_SHIMS_H
#define GRPCFAILOVER_GO_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "grpc_failover.h"

// No Go code runs on a library thread, so a library thread never waits for the Go scheduler. A
// call's caller waits in one of two ways:
// - alone in flight, blocked in C on its own thread (gfgo_wait): the call's completion callback
//   (C, on the library thread) posts a semaphore;
// - otherwise as a goroutine: the call's outcome goes to the library's completion queue
//   (gf_invoke_queued), whose descriptor the dispatcher goroutine waits on through Go's
//   netpoller; the dispatcher hands each outcome to its caller.
#define GFGO_INLINE 224

// A completed call's outcome. Outcomes from the queue, and calls with call options, keep their
// result and point into it. The callbacks of a call without call options copy response and
// message, one after the other, into text (inline, or a malloc'd block when larger); message
// and response are then NULL (see pending.fill).
typedef struct {
	uintptr_t handle;
	int32_t code;
	const char *message;
	const uint8_t *response;
	size_t response_len;
	gf_result *result;
	void *block;
	size_t headers;
	size_t trailers;
	char text[GFGO_INLINE];
} gfgo_done;

typedef struct {
	int fd;
	int32_t code;
	char *error;
} gfgo_queue_made;

// A call whose caller waits on its own thread (see shims.c).
typedef struct gfgo_waiter gfgo_waiter;

// The outcome of starting a call, returned by value so that no Go pointer is written by C.
typedef struct {
	gf_call *call;
	int32_t code;
	char *error;
	// Set when the caller waits on its thread (handle 0): pass it to gfgo_wait.
	gfgo_waiter *waiter;
} gfgo_start;

typedef struct {
	const char *key;
	const uint8_t *value;
	size_t len;
} gfgo_entry;

typedef struct {
	gf_client *client;
	int32_t code;
	char *error;
} gfgo_connected;

typedef struct {
	char *json;
	int32_t code;
	char *error;
} gfgo_stats;

typedef struct {
	gf_registration *registration;
	int32_t code;
	char *error;
} gfgo_registered;

typedef struct {
	int32_t code;
	char *error;
} gfgo_status;

gfgo_queue_made gfgo_queue_init(void);
size_t gfgo_poll(gfgo_done *out, size_t max);
void gfgo_set_spin_limit_us(uint64_t us);
gfgo_done gfgo_wait(gfgo_waiter *w);
gfgo_done *gfgo_batch(size_t n);
void gfgo_release(gfgo_done *done, size_t n);
gfgo_start gfgo_invoke(gf_client *client, const char *method, const uint8_t *request,
                       size_t request_len, uint32_t timeout_ms, uintptr_t handle,
                       int want_call);
gfgo_start gfgo_invoke_ex(gf_client *client, const char *method, const uint8_t *request,
                          size_t request_len, uint32_t timeout_ms, int32_t wait_for_ready,
                          const char *md, const size_t *md_index, size_t md_count,
                          uintptr_t handle, int want_call);
gfgo_entry gfgo_result_entry(const gf_result *r, int trailer, size_t i);
gfgo_connected gfgo_connect(const char *target, const char *options_json);
gfgo_stats gfgo_client_stats(gf_client *client);
gfgo_registered gfgo_register(const char *options_json, const char *prefix,
                              const char *addr, const char *metadata_json,
                              uint32_t ttl_s);
gfgo_status gfgo_deregister(gf_registration *registration);

#endif
