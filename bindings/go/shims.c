// The trampolines declared in shims.h.
#include "shims.h"

#include <stdio.h>

#include "_cgo_export.h"

// The dispatcher's completion queue, and the one a caller alone in flight waits on.
static gf_queue *gfgo_queue;
static gf_queue *gfgo_solo_queue;

gfgo_queue_made gfgo_queue_init(void) {
	gfgo_queue_made m = {-1, 0, NULL};
	m.code = gf_queue_new(&gfgo_queue, &m.error);
	if (m.code == 0) {
		m.code = gf_queue_new(&gfgo_solo_queue, &m.error);
	}
	if (m.code == 0) {
		m.fd = gf_queue_fd(gfgo_queue);
	}
	return m;
}

static void gfgo_done_result(gfgo_done *d, uintptr_t handle, gf_result *result) {
	d->handle = handle;
	d->result = result;
	d->code = gf_result_code(result);
	d->message = gf_result_message(result);
	d->response = gf_result_response(result, &d->response_len);
	d->headers = gf_result_header_count(result);
	d->trailers = gf_result_trailer_count(result);
}

size_t gfgo_poll(gfgo_done *out, size_t max) {
	gf_completion taken[256];
	if (max > 256) {
		max = 256;
	}
	size_t n = gf_queue_poll(gfgo_queue, taken, max);
	for (size_t i = 0; i < n; i++) {
		gfgo_done_result(&out[i], (uintptr_t)taken[i].tag, taken[i].result);
	}
	return n;
}

gfgo_done gfgo_wait(void) {
	gf_completion taken;
	size_t n = 0;
	char *error = NULL;
	// Fails only for invalid arguments or on a library thread: neither happens here.
	if (gf_queue_wait(gfgo_solo_queue, &taken, 1, &n, &error) != 0) {
		fprintf(stderr, "grpcfailover: gf_queue_wait: %s\n", error);
		abort();
	}
	gfgo_done d;
	gfgo_done_result(&d, (uintptr_t)taken.tag, taken.result);
	return d;
}

gfgo_done *gfgo_batch(size_t n) { return malloc(n * sizeof(gfgo_done)); }

void gfgo_release(gfgo_done *done, size_t n) {
	for (size_t i = 0; i < n; i++) {
		gf_result_free(done[i].result);
	}
}

static gf_queue *gfgo_queue_for(uintptr_t handle) {
	return handle != 0 ? gfgo_queue : gfgo_solo_queue;
}

gfgo_start gfgo_invoke(gf_client *client, const char *method, const uint8_t *request,
                       size_t request_len, uint32_t timeout_ms, uintptr_t handle, int want_call) {
	gfgo_start s = {NULL, 0, NULL};
	s.code = gf_invoke_queued(client, method, request, request_len, timeout_ms,
	                          gfgo_queue_for(handle), handle, want_call ? &s.call : NULL,
	                          &s.error);
	return s;
}

gfgo_start gfgo_invoke_ex(gf_client *client, const char *method, const uint8_t *request,
                          size_t request_len, uint32_t timeout_ms, int32_t wait_for_ready,
                          const char *compression, const char *md, const size_t *md_index,
                          size_t md_count, uintptr_t handle, int want_call) {
	gfgo_start s = {NULL, 0, NULL};
	gf_call_options *o = gf_call_options_new();
	gf_call_options_set_timeout_ms(o, timeout_ms);
	gf_call_options_set_wait_for_ready(o, wait_for_ready);
	if (compression != NULL) {
		s.code = gf_call_options_set_compression(o, compression, &s.error);
		if (s.code != 0) {
			gf_call_options_free(o);
			return s;
		}
	}
	for (size_t i = 0; i < md_count; i++) {
		const size_t *e = md_index + 3 * i;
		s.code = gf_call_options_add_metadata(o, md + e[0], (const uint8_t *)md + e[1], e[2],
		                                      &s.error);
		if (s.code != 0) {
			gf_call_options_free(o);
			return s;
		}
	}
	s.code = gf_invoke_queued_ex(client, method, request, request_len, o, gfgo_queue_for(handle),
	                             handle, want_call ? &s.call : NULL, &s.error);
	gf_call_options_free(o);
	return s;
}

gfgo_entry gfgo_result_entry(const gf_result *r, int trailer, size_t i) {
	gfgo_entry e = {"", NULL, 0};
	if (trailer) {
		gf_result_trailer(r, i, &e.key, &e.value, &e.len);
	} else {
		gf_result_header(r, i, &e.key, &e.value, &e.len);
	}
	return e;
}

gfgo_connected gfgo_connect(const char *target, const char *options_json) {
	gfgo_connected c = {NULL, 0, NULL};
	c.code = gf_connect(target, options_json, &c.client, &c.error);
	return c;
}

gfgo_stats gfgo_client_metrics(gf_client *client) {
	gfgo_stats s = {NULL, 0, NULL};
	s.code = gf_client_metrics(client, &s.json, &s.error);
	return s;
}

gfgo_stats gfgo_client_stats(gf_client *client) {
	gfgo_stats s = {NULL, 0, NULL};
	s.code = gf_client_stats(client, &s.json, &s.error);
	return s;
}

gfgo_registered gfgo_register(const char *options_json, const char *prefix, const char *addr,
                              const char *metadata_json, uint32_t ttl_s) {
	gfgo_registered r = {NULL, 0, NULL};
	r.code = gf_register(options_json, prefix, addr, metadata_json, ttl_s, &r.registration,
	                     &r.error);
	return r;
}

gfgo_status gfgo_deregister(gf_registration *registration) {
	gfgo_status s = {0, NULL};
	s.code = gf_deregister(registration, &s.error);
	return s;
}

// The library calls this on its log thread; the strings stay the library's.
static void gfgo_log(void *user_data, int32_t level, const char *target, const char *message) {
	(void)user_data;
	gfgoLog(level, (char *)target, (char *)message);
}

int32_t gfgo_route_logs(int32_t level) {
	return gf_set_log_callback(level, gfgo_log, NULL, NULL);
}
