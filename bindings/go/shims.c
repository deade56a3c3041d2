// The trampolines declared in shims.h.
#include "shims.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>



static void gfgo_done_plain(gfgo_done *d, uintptr_t handle, int32_t code,
                     const uint8_t *response, size_t response_len, const char *message) {
	size_t message_len = strlen(message);
	size_t size = response_len + message_len + 1;
	char *text = d->text;
	d->block = NULL;
	if (size > GFGO_INLINE) {
		text = d->block = malloc(size);
		if (text == NULL) {
			abort();
		}
	}
	if (response_len > 0) {
		memcpy(text, response, response_len);
	}
	memcpy(text + response_len, message, message_len + 1);
	d->handle = handle;
	d->code = code;
	d->message = NULL;
	d->response = NULL;
	d->response_len = response_len;
	d->result = NULL;
	d->headers = 0;
	d->trailers = 0;
}

static void gfgo_done_result(gfgo_done *d, uintptr_t handle, gf_result *result) {
	d->handle = handle;
	d->result = result;
	d->block = NULL;
	d->code = gf_result_code(result);
	d->message = gf_result_message(result);
	d->response = gf_result_response(result, &d->response_len);
	d->headers = gf_result_header_count(result);
	d->trailers = gf_result_trailer_count(result);
}

// The completion queue of every call whose caller waits as a goroutine.
static gf_queue *gfgo_queue;


gfgo_queue_made gfgo_queue_init(void) {
	gfgo_queue_made m = {-1, 0, NULL};
	m.code = gf_queue_new(&gfgo_queue, &m.error);
	if (m.code == 0) {
		m.fd = gf_queue_fd(gfgo_queue);
	}
	return m;
}

// Calls in flight that go through the queue. A call waiting on its own thread stops spinning
// when one starts (as the library's blocking calls stop when a second caller blocks).
static atomic_long gfgo_overlapping;

// Takes up to max outcomes from the queue into out (C memory: cgo checks Go memory passed to C
// on every call); returns how many.
size_t gfgo_poll(gfgo_done *out, size_t max) {
	gf_completion taken[256];
	if (max > 256) {
		max = 256;
	}
	size_t n = gf_queue_poll(gfgo_queue, taken, max);
	for (size_t i = 0; i < n; i++) {
		gfgo_done_result(&out[i], (uintptr_t)taken[i].tag, taken[i].result);
	}
	atomic_fetch_sub_explicit(&gfgo_overlapping, (long)n, memory_order_relaxed);
	return n;
}

// A call whose caller waits on its own thread, blocked in gfgo_wait: the completion callback
// hands the outcome over and posts the semaphore, waking that thread directly.
struct gfgo_waiter {
	sem_t posted;
	// Set (release) once done is written, before the semaphore is posted: a spinning waiter
	// reads done without waiting on the semaphore.
	atomic_int ready;
	gfgo_done done;
};

static void gfgo_on_done_wake(void *user_data, int32_t code, const uint8_t *response,
                       size_t response_len, const char *message) {
	gfgo_waiter *w = user_data;
	gfgo_done_plain(&w->done, 0, code, response, response_len, message);
	atomic_store_explicit(&w->ready, 1, memory_order_release);
	sem_post(&w->posted);
}

static void gfgo_on_result_wake(void *user_data, gf_result *result) {
	gfgo_waiter *w = user_data;
	gfgo_done_result(&w->done, 0, result);
	atomic_store_explicit(&w->ready, 1, memory_order_release);
	sem_post(&w->posted);
}

// The waiter spins before it sleeps, as the library's own blocking calls do (README, "Threads
// and memory"): waking a sleeping thread takes tens of microseconds on a virtual machine. It
// spins for twice the mean duration of recent waits (at least 20 us, at most the limit), not
// at all when that mean is above the limit (GF_SYNC_SPIN_US, default 250 us; 0 turns it off;
// always off on one CPU), and stops when another call starts.
static _Atomic uint64_t gfgo_mean_wait_ns;
static _Atomic uint64_t gfgo_spin_limit_ns;

void gfgo_set_spin_limit_us(uint64_t us) {
	uint64_t ns = us > UINT64_MAX / 1000 ? UINT64_MAX : us * 1000;
	atomic_store_explicit(&gfgo_spin_limit_ns, ns, memory_order_relaxed);
}

static uint64_t gfgo_now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void gfgo_spin(gfgo_waiter *w, uint64_t started) {
	uint64_t limit = atomic_load_explicit(&gfgo_spin_limit_ns, memory_order_relaxed);
	uint64_t mean = atomic_load_explicit(&gfgo_mean_wait_ns, memory_order_relaxed);
	if (limit == 0 || mean > limit) {
		return;
	}
	uint64_t budget = mean > UINT64_MAX / 2 ? UINT64_MAX : 2 * mean;
	uint64_t floor = limit < 20000 ? limit : 20000;
	budget = budget < floor ? floor : budget > limit ? limit : budget;
	for (;;) {
		for (int i = 0; i < 64; i++) {
			if (atomic_load_explicit(&w->ready, memory_order_acquire)) {
				return;
			}
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#elif defined(__aarch64__)
			__asm__ __volatile__("yield");
#endif
		}
		if (atomic_load_explicit(&gfgo_overlapping, memory_order_relaxed) > 0 ||
		    gfgo_now_ns() - started > budget) {
			return;
		}
	}
}

static void gfgo_record_wait(uint64_t took) {
	// mean += (took - mean) / 8; racing updates may lose a sample: the mean is a hint.
	uint64_t mean = atomic_load_explicit(&gfgo_mean_wait_ns, memory_order_relaxed);
	uint64_t next = mean == 0 ? (took ? took : 1) : mean - mean / 8 + took / 8;
	atomic_store_explicit(&gfgo_mean_wait_ns, next, memory_order_relaxed);
}

static gfgo_waiter *gfgo_waiter_new(void) {
	gfgo_waiter *w = malloc(sizeof *w);
	if (w == NULL) {
		abort();
	}
	if (sem_init(&w->posted, 0, 0) != 0) {
		abort();
	}
	atomic_init(&w->ready, 0);
	return w;
}

static void gfgo_waiter_free(gfgo_waiter *w) {
	sem_destroy(&w->posted);
	free(w);
}

// Blocks until the call completes; frees the waiter and returns the outcome (release it with
// gfgo_release).
gfgo_done gfgo_wait(gfgo_waiter *w) {
	uint64_t started = gfgo_now_ns();
	gfgo_spin(w, started);
	while (sem_wait(&w->posted) != 0) {
		if (errno != EINTR) {
			abort();
		}
	}
	gfgo_record_wait(gfgo_now_ns() - started);
	gfgo_done d = w->done;
	gfgo_waiter_free(w);
	return d;
}

gfgo_done *gfgo_batch(size_t n) { return malloc(n * sizeof(gfgo_done)); }

void gfgo_release(gfgo_done *done, size_t n) {
	for (size_t i = 0; i < n; i++) {
		gf_result_free(done[i].result);
		free(done[i].block);
	}
}


// A call's caller waits in gfgo_wait (handle 0), on a waiter made here, or as a goroutine for
// the outcome that the queue hands to the dispatcher with this handle.
static void gfgo_before_start(gfgo_start *s, uintptr_t handle) {
	if (handle != 0) {
		atomic_fetch_add_explicit(&gfgo_overlapping, 1, memory_order_relaxed);
	} else {
		s->waiter = gfgo_waiter_new();
	}
}

// A rejected call never completes: its waiter goes now, or it no longer counts as overlapping.
static void gfgo_after_start(gfgo_start *s) {
	if (s->code == 0) {
		return;
	}
	if (s->waiter != NULL) {
		gfgo_waiter_free(s->waiter);
		s->waiter = NULL;
	} else {
		atomic_fetch_sub_explicit(&gfgo_overlapping, 1, memory_order_relaxed);
	}
}

// Starts a call without call options (handle as in gfgo_before_start).
gfgo_start gfgo_invoke(gf_client *client, const char *method, const uint8_t *request,
                       size_t request_len, uint32_t timeout_ms, uintptr_t handle,
                       int want_call) {
	gfgo_start s = {NULL, 0, NULL, NULL};
	gf_call **call = want_call ? &s.call : NULL;
	gfgo_before_start(&s, handle);
	if (handle != 0) {
		s.code = gf_invoke_queued(client, method, request, request_len, timeout_ms, gfgo_queue,
		                          handle, call, &s.error);
	} else {
		s.code = gf_invoke_async(client, method, request, request_len, timeout_ms,
		                         gfgo_on_done_wake, s.waiter, call, &s.error);
	}
	gfgo_after_start(&s);
	return s;
}

// Starts a call with call options (handle as in gfgo_before_start). The metadata comes as one
// buffer: entry i has its NUL-terminated key at md + md_index[3i] and its value at
// md + md_index[3i+1], of length md_index[3i+2].
gfgo_start gfgo_invoke_ex(gf_client *client, const char *method, const uint8_t *request,
                          size_t request_len, uint32_t timeout_ms, int32_t wait_for_ready,
                          const char *md, const size_t *md_index, size_t md_count,
                          uintptr_t handle, int want_call) {
	gfgo_start s = {NULL, 0, NULL, NULL};
	gf_call_options *o = gf_call_options_new();
	gf_call_options_set_timeout_ms(o, timeout_ms);
	gf_call_options_set_wait_for_ready(o, wait_for_ready);
	for (size_t i = 0; i < md_count; i++) {
		const size_t *e = md_index + 3 * i;
		s.code = gf_call_options_add_metadata(o, md + e[0], (const uint8_t *)md + e[1], e[2],
		                                      &s.error);
		if (s.code != 0) {
			gf_call_options_free(o);
			return s;
		}
	}
	gf_call **call = want_call ? &s.call : NULL;
	gfgo_before_start(&s, handle);
	if (handle != 0) {
		s.code = gf_invoke_queued_ex(client, method, request, request_len, o, gfgo_queue, handle,
		                             call, &s.error);
	} else {
		s.code = gf_invoke_async_ex(client, method, request, request_len, o,
		                            gfgo_on_result_wake, s.waiter, call, &s.error);
	}
	gf_call_options_free(o);
	gfgo_after_start(&s);
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


gfgo_stats gfgo_client_stats(gf_client *client) {
	gfgo_stats s = {NULL, 0, NULL};
	s.code = gf_client_stats(client, &s.json, &s.error);
	return s;
}

gfgo_registered gfgo_register(const char *options_json, const char *prefix,
                              const char *addr, const char *metadata_json,
                              uint32_t ttl_s) {
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
