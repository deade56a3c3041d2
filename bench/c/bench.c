/*
 * C ABI benchmark: 64-byte Echo through libgrpc_failover.
 *
 *   bench sync  <target> <threads> <seconds>    N threads calling gf_invoke on one client
 *   bench async <target> <in_flight> <seconds>  one thread keeping K gf_invoke_async calls in flight
 *   bench paced <target> <calls_per_s> <seconds> one thread calling gf_invoke at a fixed rate,
 *                                                sleeping between calls
 *
 * Each takes an optional options_json last. Prints one JSON line: calls, calls_per_s, p50_us,
 * p99_us, errors, first_call_ms, and the client's CPU time (user + system, all its threads, from
 * getrusage) over the measured window: cpu_us_per_call per successful call and cores (CPU
 * seconds per wall second).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "grpc_failover.h"

static const char *METHOD = "/bench.Svc/Echo";
static uint8_t payload[64];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User + system CPU time of the whole process (every thread, the library's runtime too). */
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Latencies in microseconds, appended by many threads. */
typedef struct {
    uint32_t *v;
    size_t len, cap;
    pthread_mutex_t mu;
} lat_log;

static void lat_push(lat_log *l, uint32_t us) {
    pthread_mutex_lock(&l->mu);
    if (l->len == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->len++] = us;
    pthread_mutex_unlock(&l->mu);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* From gf_connect to the end of the first call: connection (and TLS) handshake included. */
static double first_call_ms;

static void report(const char *mode, int conc, lat_log *l, double elapsed, double cpu, long errors) {
    qsort(l->v, l->len, sizeof *l->v, cmp_u32);
    uint32_t p50 = l->len ? l->v[(size_t)((double)(l->len - 1) * 0.50)] : 0;
    uint32_t p99 = l->len ? l->v[(size_t)((double)(l->len - 1) * 0.99)] : 0;
    printf("{\"mode\":\"%s\",\"concurrency\":%d,\"calls\":%zu,\"calls_per_s\":%.1f,\"p50_us\":%u,\"p99_us\":%u,\"errors\":%ld,\"first_call_ms\":%.2f,\"cpu_us_per_call\":%.2f,\"cores\":%.3f}\n",
           mode, conc, l->len, (double)l->len / elapsed, p50, p99, errors, first_call_ms,
           l->len ? cpu * 1e6 / (double)l->len : 0.0, cpu / elapsed);
}

static gf_client *client;
static double deadline;
static lat_log lats = {.mu = PTHREAD_MUTEX_INITIALIZER};
static atomic_long errors;

/* One blocking Echo: its latency logged, or an error counted. */
static void timed_call(void) {
    gf_bytes out;
    double t = now_s();
    int32_t rc = gf_invoke(client, METHOD, payload, sizeof payload, 5000, &out, NULL);
    if (rc == GF_OK && out.len == sizeof payload) {
        lat_push(&lats, (uint32_t)((now_s() - t) * 1e6));
    } else {
        atomic_fetch_add(&errors, 1);
    }
    gf_bytes_free(&out);
}

static void *sync_worker(void *arg) {
    (void)arg;
    while (now_s() < deadline) {
        timed_call();
    }
    return NULL;
}

/* Paced: one caller holding `rate` calls per second, each call due at start + i / rate; a call
 * that is late starts at once (the schedule does not slip, so the rate holds on average). */
static void paced(double rate, double start) {
    for (long i = 0;; i++) {
        double due = start + (double)i / rate;
        if (due >= deadline) return;
        struct timespec ts = {.tv_sec = (time_t)due, .tv_nsec = (long)((due - (double)(time_t)due) * 1e9)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        timed_call();
    }
}

/* Async: each completion records its latency and starts the next call from the callback. */
static atomic_long outstanding;
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;

typedef struct {
    double started;
} slot;

static void on_done(void *user_data, int32_t code, const uint8_t *resp, size_t len, const char *msg);

static void start_call(slot *s) {
    s->started = now_s();
    if (gf_invoke_async(client, METHOD, payload, sizeof payload, 5000, on_done, s, NULL, NULL) != GF_OK) {
        atomic_fetch_add(&errors, 1);
        if (atomic_fetch_sub(&outstanding, 1) == 1) {
            pthread_mutex_lock(&done_mu);
            pthread_cond_signal(&done_cv);
            pthread_mutex_unlock(&done_mu);
        }
    }
}

static void on_done(void *user_data, int32_t code, const uint8_t *resp, size_t len, const char *msg) {
    (void)resp;
    (void)msg;
    slot *s = user_data;
    if (code == GF_OK && len == sizeof payload) {
        lat_push(&lats, (uint32_t)((now_s() - s->started) * 1e6));
    } else {
        atomic_fetch_add(&errors, 1);
    }
    if (now_s() < deadline) {
        start_call(s);
        return;
    }
    if (atomic_fetch_sub(&outstanding, 1) == 1) {
        pthread_mutex_lock(&done_mu);
        pthread_cond_signal(&done_cv);
        pthread_mutex_unlock(&done_mu);
    }
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr,
                "usage: %s sync|async|paced <target> <concurrency|calls_per_s> <seconds> [options_json]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "sync") != 0 && strcmp(mode, "async") != 0 && strcmp(mode, "paced") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    int conc = atoi(argv[3]);
    double seconds = atof(argv[4]);
    memset(payload, 7, sizeof payload);
    char *err = NULL;
    double connect_start = now_s();
    if (gf_connect(argv[2], argc == 6 ? argv[5] : NULL, &client, &err) != GF_OK) {
        fprintf(stderr, "connect: %s\n", err);
        return 1;
    }
    {
        gf_bytes out;
        if (gf_invoke(client, METHOD, payload, sizeof payload, 5000, &out, &err) != GF_OK) {
            fprintf(stderr, "first call: %s\n", err);
            return 1;
        }
        gf_bytes_free(&out);
        first_call_ms = (now_s() - connect_start) * 1e3;
    }
    /* Warm up the connection. */
    for (int i = 0; i < 100; i++) {
        gf_bytes out;
        gf_invoke(client, METHOD, payload, sizeof payload, 5000, &out, NULL);
        gf_bytes_free(&out);
    }
    double cpu_start = cpu_s();
    double start = now_s();
    deadline = start + seconds;
    if (strcmp(mode, "paced") == 0) {
        paced(atof(argv[3]), start);
        conc = 1;
    } else if (strcmp(mode, "sync") == 0) {
        pthread_t *t = calloc((size_t)conc, sizeof *t);
        for (int i = 0; i < conc; i++) pthread_create(&t[i], NULL, sync_worker, NULL);
        for (int i = 0; i < conc; i++) pthread_join(t[i], NULL);
        free(t);
    } else {
        slot *slots = calloc((size_t)conc, sizeof *slots);
        atomic_store(&outstanding, conc);
        for (int i = 0; i < conc; i++) start_call(&slots[i]);
        pthread_mutex_lock(&done_mu);
        while (atomic_load(&outstanding) > 0) pthread_cond_wait(&done_cv, &done_mu);
        pthread_mutex_unlock(&done_mu);
        free(slots);
    }
    double elapsed = now_s() - start;
    report(mode, conc, &lats, elapsed, cpu_s() - cpu_start, atomic_load(&errors));
    gf_close(client);
    free(lats.v);
    return 0;
}
