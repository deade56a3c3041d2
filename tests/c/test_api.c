/*
 * test_api.c: the C ABI of grpc-failover exercised from C11 against real gf-testserver
 * processes. Run by tests/c/run.sh, natively and under valgrind (with GF_TEST_SCALE < 1).
 * Usage: test_api_c [case-name-substring...]
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/epoll.h>

static const char *echo_addr;  /* answers at once */
static const char *nf_addr;    /* answers every call with 5 NOT_FOUND */
static const char *slow_addr;  /* answers after 2 s */
static const char *stall_addr; /* answers after 10 min: calls end by deadline, cancel, close */

#define ECHO "/gf.test.Echo/Echo"
#define WHOAMI "/gf.test.Echo/Whoami"
#define SLOW_SERVER_MS 2000

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

static gf_client *connect_to(const char *addr_list)
{
    char target[512];
    snprintf(target, sizeof target, "static:///%s", addr_list);
    gf_client *client = NULL;
    char *err = NULL;
    int32_t rc = gf_connect(target, NULL, &client, &err);
    if (rc != GF_OK || client == NULL) {
        gft_fatal("gf_connect(%s) = %d: %s", target, rc, err ? err : "(no message)");
    }
    if (err != NULL) {
        gft_fatal("gf_connect succeeded but wrote an error message");
    }
    return client;
}

static bool contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* Waits, with a timeout, until a counter reaches a target. Signalled by latch_add. */
typedef struct latch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_long count;
} latch;

static void latch_init(latch *l)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->count, 0);
}

static void latch_destroy(latch *l)
{
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

/* The count goes up under the mutex: a waiter that sees the final count cannot return (and
 * free the latch with its stack frame) while this callback is still using the mutex. */
static void latch_add(latch *l)
{
    pthread_mutex_lock(&l->mu);
    atomic_fetch_add(&l->count, 1);
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* True when the count reached `target` within `timeout_ms`. */
static bool latch_wait(latch *l, long target, long timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (atomic_load(&l->count) < target && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &until);
    }
    bool reached = atomic_load(&l->count) >= target;
    pthread_mutex_unlock(&l->mu);
    return reached;
}

/* Waits for callbacks that must come: a timeout is fatal, because carrying on would free
 * memory that the library's callbacks still write to. */
static void latch_wait_or_die(latch *l, long target, const char *what)
{
    if (!latch_wait(l, target, (long)g_gft_timeout_s * 1000 * 3 / 4)) {
        gft_fatal("%s: %ld of %ld callbacks ran (lost callbacks or a deadlock)", what,
                  atomic_load(&l->count), target);
    }
}

/* Prints the client's stats (each instance's last_error says why a connection ended). */
static void print_stats(gf_client *client)
{
    char *json = NULL;
    if (gf_client_stats(client, &json, NULL) == GF_OK) {
        printf("  stats: %s\n", json);
    }
    gf_string_free(json);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---------------------------------------------------------------------------------------- */
/* Cases                                                                                    */

static void test_version_and_abi(void)
{
    const char *v = gf_version();
    CHECK(v != NULL && v[0] != '\0');
    CHECK(gf_version() == v);
    CHECKF(gf_abi_version() == GF_ABI_VERSION, "library %u, header %d", gf_abi_version(),
           GF_ABI_VERSION);
}

static void test_null_is_a_no_op(void)
{
    gf_client_shutdown(NULL);
    gf_close(NULL);
    gf_bytes_free(NULL);
    gf_bytes empty = {NULL, 0};
    gf_bytes_free(&empty);
    CHECK(empty.data == NULL && empty.len == 0);
    gf_string_free(NULL);
    gf_call_cancel(NULL);
    gf_call_free(NULL);
    gf_result_free(NULL);
    gf_call_options_free(NULL);
    gf_call_options_set_timeout_ms(NULL, 5);
    gf_call_options_set_wait_for_ready(NULL, 1);

    char *err = (char *)"sentinel";
    CHECK_CODE(gf_deregister(NULL, &err), GF_OK, err);
    CHECK(err == NULL);

    CHECK_CODE(gf_result_code(NULL), GF_INVALID_ARGUMENT, "");
    CHECK(gf_result_message(NULL) != NULL && gf_result_message(NULL)[0] == '\0');
    size_t len = 99;
    CHECK(gf_result_response(NULL, &len) == NULL && len == 0);
    CHECK(gf_result_response(NULL, NULL) == NULL);
    CHECK(gf_result_header_count(NULL) == 0);
    CHECK(gf_result_trailer_count(NULL) == 0);
    CHECK_CODE(gf_result_header(NULL, 0, NULL, NULL, NULL), GF_INVALID_ARGUMENT, "");
    CHECK_CODE(gf_result_trailer(NULL, 0, NULL, NULL, NULL), GF_INVALID_ARGUMENT, "");
}

static void check_echo(gf_client *client, size_t size)
{
    uint8_t *req = size ? malloc(size) : NULL;
    for (size_t i = 0; i < size; i++) {
        req[i] = (uint8_t)(i * 131 + (i >> 8)); /* every byte value, 0x00 and 0xff included */
    }
    gf_bytes resp = {(uint8_t *)"junk", 4};
    char *err = (char *)"junk";
    int32_t rc = gf_invoke(client, ECHO, req, size, 10000, &resp, &err);
    CHECK_CODE(rc, GF_OK, err);
    CHECKF(err == NULL, "error_out must be NULL on success");
    CHECKF(resp.len == size, "echo of %zu bytes came back with %zu", size, resp.len);
    if (size == 0) {
        CHECKF(resp.data == NULL, "an empty response has data NULL");
    } else {
        CHECKF(resp.data != NULL && resp.len == size && memcmp(resp.data, req, size) == 0,
               "echo of %zu bytes differs", size);
    }
    gf_bytes_free(&resp);
    CHECK(resp.data == NULL && resp.len == 0);
    gf_bytes_free(&resp); /* freeing {NULL, 0} again is fine */

    /* The same through gf_invoke_ex and a result. */
    gf_call_options *opts = gf_call_options_new();
    gf_call_options_set_timeout_ms(opts, 10000);
    gf_result *result = NULL;
    rc = gf_invoke_ex(client, ECHO, req, size, opts, &result, &err);
    gf_call_options_free(opts);
    CHECK_CODE(rc, GF_OK, err);
    CHECK(err == NULL);
    CHECK(result != NULL);
    if (result) {
        CHECK_CODE(gf_result_code(result), GF_OK, gf_result_message(result));
        CHECK(strcmp(gf_result_message(result), "") == 0);
        size_t len = 12345;
        const uint8_t *data = gf_result_response(result, &len);
        CHECKF(len == size, "gf_invoke_ex echo of %zu bytes came back with %zu", size, len);
        CHECK(size == 0 ? data == NULL : (data && len == size && memcmp(data, req, size) == 0));
        gf_result_free(result);
    }
    free(req);
}

static void test_echo_sizes(void)
{
    gf_client *client = connect_to(echo_addr);
    check_echo(client, 0);
    check_echo(client, 1);
    check_echo(client, 1 << 20);
    gf_close(client);
}

typedef struct status_cb {
    latch done;
    int code;
    char message[256];
} status_cb;

static void status_callback(void *user_data, int32_t code, const uint8_t *response,
                            size_t response_len, const char *message)
{
    status_cb *s = user_data;
    s->code = code;
    snprintf(s->message, sizeof s->message, "%s", message ? message : "(NULL)");
    if (code != GF_OK) {
        CHECKF(response_len == 0, "a failed call has no response bytes");
    }
    (void)response;
    latch_add(&s->done);
}

static void test_status_pass_through(void)
{
    gf_client *client = connect_to(nf_addr);
    const char *want = "gf-testserver nf: injected failure";

    gf_bytes resp = {(uint8_t *)"junk", 4};
    char *err = NULL;
    int32_t rc = gf_invoke(client, WHOAMI, NULL, 0, 5000, &resp, &err);
    CHECK_CODE(rc, GF_NOT_FOUND, err);
    CHECKF(err && strcmp(err, want) == 0, "error_out = \"%s\", want \"%s\"", err, want);
    CHECKF(resp.data == NULL && resp.len == 0, "response_out is {NULL, 0} on failure");
    gf_string_free(err);

    /* error_out may be NULL. */
    rc = gf_invoke(client, WHOAMI, NULL, 0, 5000, &resp, NULL);
    CHECK_CODE(rc, GF_NOT_FOUND, "");

    gf_result *result = NULL;
    rc = gf_invoke_ex(client, WHOAMI, NULL, 0, NULL, &result, &err);
    CHECK_CODE(rc, GF_NOT_FOUND, err);
    CHECKF(err && strcmp(err, want) == 0, "error_out = \"%s\"", err);
    CHECKF(result != NULL, "gf_invoke_ex gives a result for a call that started");
    if (result) {
        CHECK_CODE(gf_result_code(result), GF_NOT_FOUND, gf_result_message(result));
        CHECK(strcmp(gf_result_message(result), want) == 0);
        size_t len = 99;
        CHECK(gf_result_response(result, &len) == NULL && len == 0);
        gf_result_free(result);
    }
    gf_string_free(err);

    status_cb s;
    latch_init(&s.done);
    err = (char *)"junk";
    rc = gf_invoke_async(client, WHOAMI, NULL, 0, 5000, status_callback, &s, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    CHECKF(err == NULL, "error_out is NULL when the call started");
    latch_wait_or_die(&s.done, 1, "async status");
    CHECK_CODE(s.code, GF_NOT_FOUND, s.message);
    CHECKF(strcmp(s.message, want) == 0, "callback message = \"%s\"", s.message);
    latch_destroy(&s.done);

    /* And UNIMPLEMENTED from a server that answers normally. */
    gf_client *echo = connect_to(echo_addr);
    rc = gf_invoke(echo, "/gf.test.Echo/NoSuchMethod", NULL, 0, 5000, &resp, &err);
    CHECK_CODE(rc, GF_UNIMPLEMENTED, err);
    gf_string_free(err);
    gf_close(echo);
    gf_close(client);
}

static void test_deadline_against_a_slow_server(void)
{
    gf_client *client = connect_to(slow_addr);
    gf_bytes resp;
    char *err = NULL;

    int64_t start = gft_now_ms();
    int32_t rc = gf_invoke(client, WHOAMI, NULL, 0, 200, &resp, &err);
    int64_t took = gft_now_ms() - start;
    CHECK_CODE(rc, GF_DEADLINE_EXCEEDED, err);
    CHECKF(took < SLOW_SERVER_MS, "returned after %lld ms, the server answers after %d",
           (long long)took, SLOW_SERVER_MS);
    CHECK(resp.data == NULL && resp.len == 0);
    gf_string_free(err);

    gf_call_options *opts = gf_call_options_new();
    gf_call_options_set_timeout_ms(opts, 200);
    gf_result *result = NULL;
    start = gft_now_ms();
    rc = gf_invoke_ex(client, WHOAMI, NULL, 0, opts, &result, &err);
    took = gft_now_ms() - start;
    CHECK_CODE(rc, GF_DEADLINE_EXCEEDED, err);
    CHECK(took < SLOW_SERVER_MS);
    CHECK(result != NULL && gf_result_code(result) == GF_DEADLINE_EXCEEDED);
    gf_result_free(result);
    gf_string_free(err);
    gf_call_options_free(opts);

    status_cb s;
    latch_init(&s.done);
    start = gft_now_ms();
    rc = gf_invoke_async(client, WHOAMI, NULL, 0, 200, status_callback, &s, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    latch_wait_or_die(&s.done, 1, "async deadline");
    took = gft_now_ms() - start;
    CHECK_CODE(s.code, GF_DEADLINE_EXCEEDED, s.message);
    CHECK(took < SLOW_SERVER_MS);
    latch_destroy(&s.done);
    gf_close(client);
}

/* Checks that a call was rejected with 3 and a message naming `arg`; frees the message. */
#define CHECK_BAD_ARG(rc, err, arg)                                                            \
    do {                                                                                       \
        CHECK_CODE(rc, GF_INVALID_ARGUMENT, err);                                              \
        CHECKF(contains(err, arg), "message \"%s\" does not name `%s`", err ? err : "(NULL)", \
               arg);                                                                           \
        gf_string_free(err);                                                                   \
        err = NULL;                                                                            \
    } while (0)

static atomic_int stray_callbacks;

static void stray_callback(void *user_data, int32_t code, const uint8_t *response,
                           size_t response_len, const char *message)
{
    (void)user_data, (void)code, (void)response, (void)response_len, (void)message;
    atomic_fetch_add(&stray_callbacks, 1);
}

static void stray_result_callback(void *user_data, gf_result *result)
{
    (void)user_data;
    gf_result_free(result);
    atomic_fetch_add(&stray_callbacks, 1);
}

static void test_bad_arguments(void)
{
    gf_client *client = connect_to(echo_addr);
    gf_client *sentinel = (gf_client *)&stray_callbacks;
    gf_client *out = sentinel;
    char *err = NULL;
    int32_t rc;

    /* gf_connect */
    rc = gf_connect(NULL, NULL, &out, &err);
    CHECK_BAD_ARG(rc, err, "target");
    CHECKF(out == sentinel, "client_out is untouched on failure");
    rc = gf_connect("dns:///x", NULL, &out, &err);
    CHECK_BAD_ARG(rc, err, "target");
    rc = gf_connect("dns:///x:1", NULL, &out, &err);
    CHECK_BAD_ARG(rc, err, "scheme");
    rc = gf_connect("static:///127.0.0.1:1", "{\"service_config\": ", &out, &err);
    CHECK_BAD_ARG(rc, err, "options_json");
    rc = gf_connect("static:///127.0.0.1:1", "not json", &out, &err);
    CHECK_BAD_ARG(rc, err, "options_json");
    rc = gf_connect("static:///127.0.0.1:1", "{\"connect_timeout_ms\": \"soon\"}", &out, &err);
    CHECK_BAD_ARG(rc, err, "connect_timeout_ms");
    rc = gf_connect("static:///127.0.0.1:1", "{\xff}", &out, &err);
    CHECK_BAD_ARG(rc, err, "options_json");
    rc = gf_connect("static:///\xc3\x28:1", NULL, &out, &err);
    CHECK_BAD_ARG(rc, err, "target");
    rc = gf_connect("static:///127.0.0.1:1", NULL, NULL, &err);
    CHECK_BAD_ARG(rc, err, "client_out");
    rc = gf_connect(NULL, NULL, &out, NULL); /* error_out may be NULL */
    CHECK_CODE(rc, GF_INVALID_ARGUMENT, "");
    CHECK(out == sentinel);

    /* gf_invoke */
    static const uint8_t req[] = {1, 2, 3};
    gf_bytes resp = {(uint8_t *)"junk", 4};
    rc = gf_invoke(NULL, ECHO, req, 3, 1000, &resp, &err);
    CHECK_BAD_ARG(rc, err, "client");
    CHECKF(resp.data == NULL && resp.len == 0, "response_out is {NULL, 0} on failure");
    rc = gf_invoke(client, NULL, req, 3, 1000, &resp, &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke(client, "/gf.test.Echo/\xff\xfe", req, 3, 1000, &resp, &err);
    CHECK_BAD_ARG(rc, err, "method");
    static const char *const bad_methods[] = {
        "",       "Echo",          "/Echo",         "gf.test.Echo/Echo", "/gf.test.Echo/",
        "//Echo", "/a/b/c",        "/a b/Echo",     "/gf.test.Echo/Echo\n",
    };
    for (size_t i = 0; i < sizeof bad_methods / sizeof bad_methods[0]; i++) {
        rc = gf_invoke(client, bad_methods[i], req, 3, 1000, &resp, &err);
        CHECKF(rc == GF_INVALID_ARGUMENT && contains(err, "method"),
               "method \"%s\": got %d (%s)", bad_methods[i], rc, err ? err : "(NULL)");
        gf_string_free(err);
        err = NULL;
    }
    rc = gf_invoke(client, ECHO, req, 3, 1000, NULL, &err);
    CHECK_BAD_ARG(rc, err, "response_out");
    rc = gf_invoke(client, ECHO, NULL, 3, 1000, &resp, &err);
    CHECK_BAD_ARG(rc, err, "request");
    rc = gf_invoke(client, ECHO, NULL, 0, 1000, &resp, &err); /* NULL with 0 is fine */
    CHECK_CODE(rc, GF_OK, err);
    gf_bytes_free(&resp);

    /* gf_invoke_ex */
    gf_result *result = (gf_result *)sentinel;
    rc = gf_invoke_ex(NULL, ECHO, req, 3, NULL, &result, &err);
    CHECK_BAD_ARG(rc, err, "client");
    CHECKF(result == NULL, "result_out is set to NULL when the arguments were rejected");
    rc = gf_invoke_ex(client, "nope", req, 3, NULL, &result, &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke_ex(client, ECHO, NULL, 1, NULL, &result, &err);
    CHECK_BAD_ARG(rc, err, "request");
    rc = gf_invoke_ex(client, ECHO, req, 3, NULL, NULL, &err);
    CHECK_BAD_ARG(rc, err, "result_out");

    /* gf_invoke_async / gf_invoke_async_ex: rejected calls never call back and leave call_out
     * untouched. */
    gf_call *call_sentinel = (gf_call *)&stray_callbacks;
    gf_call *call = call_sentinel;
    rc = gf_invoke_async(NULL, ECHO, req, 3, 1000, stray_callback, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "client");
    rc = gf_invoke_async(client, NULL, req, 3, 1000, stray_callback, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke_async(client, "/x", req, 3, 1000, stray_callback, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke_async(client, ECHO, NULL, 3, 1000, stray_callback, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "request");
    rc = gf_invoke_async(client, ECHO, req, 3, 1000, NULL, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "callback");
    rc = gf_invoke_async_ex(NULL, ECHO, req, 3, NULL, stray_result_callback, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "client");
    rc = gf_invoke_async_ex(client, "\xc3\x28", req, 3, NULL, stray_result_callback, NULL, &call,
                            &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke_async_ex(client, ECHO, req, 3, NULL, NULL, NULL, &call, &err);
    CHECK_BAD_ARG(rc, err, "callback");
    CHECKF(call == call_sentinel, "call_out is untouched when a call is rejected");

    /* gf_client_stats */
    char *json = (char *)"sentinel";
    rc = gf_client_stats(NULL, &json, &err);
    CHECK_BAD_ARG(rc, err, "client");
    CHECKF(json != NULL && strcmp(json, "sentinel") == 0, "json_out is untouched on failure");
    rc = gf_client_stats(client, NULL, &err);
    CHECK_BAD_ARG(rc, err, "json_out");
    err = (char *)"junk";
    rc = gf_client_stats(client, &json, &err);
    CHECK_CODE(rc, GF_OK, err);
    CHECKF(err == NULL, "error_out is NULL on success");
    CHECKF(contains(json, "\"calls\":"), "stats: %s", json);
    gf_string_free(json);

    /* gf_register: argument checks come before any network I/O. */
    gf_registration *reg = NULL;
    rc = gf_register(NULL, NULL, "127.0.0.1:1", NULL, 5, &reg, &err);
    CHECK_BAD_ARG(rc, err, "prefix");
    rc = gf_register(NULL, "p", NULL, NULL, 5, &reg, &err);
    CHECK_BAD_ARG(rc, err, "addr");
    rc = gf_register("{", "p", "127.0.0.1:1", NULL, 5, &reg, &err);
    CHECK_BAD_ARG(rc, err, "options_json");
    rc = gf_register(NULL, "p", "127.0.0.1:1", "{bad", 5, &reg, &err);
    CHECK_BAD_ARG(rc, err, "metadata_json");
    rc = gf_register(NULL, "p", "127.0.0.1:1", NULL, 5, NULL, &err);
    CHECK_BAD_ARG(rc, err, "registration_out");

    gft_sleep_ms(50);
    CHECKF(atomic_load(&stray_callbacks) == 0, "%d callbacks ran for rejected calls",
           atomic_load(&stray_callbacks));
    gf_close(client);
}

/* A method is sent as given or refused: URI syntax in it must not change which method is
 * called, and the async call checks it before accepting the call, like the sync one. */
static void test_method_with_uri_syntax(void)
{
    gf_client *client = connect_to(echo_addr);
    static const char *const methods[] = {
        "/gf.test.Echo/Echo?x=1", "/gf.test.Echo/Echo#frag", "/gf.test.Echo/Echo?",
        "/gf.test.Echo/Echo#",    "/gf.test.Echo?/Echo",     "/gf.test.Echo/Ec<ho",
        "/gf.test.Echo/Ec`ho",
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        const char *m = methods[i];
        gf_bytes resp;
        char *err = NULL;
        int32_t rc = gf_invoke(client, m, (const uint8_t *)"x", 1, 5000, &resp, &err);
        CHECKF((rc == GF_INVALID_ARGUMENT && contains(err, "method")) || rc == GF_UNIMPLEMENTED,
               "gf_invoke(\"%s\") = %d %s (%s): want 3 INVALID_ARGUMENT, or the method sent "
               "verbatim and 12 UNIMPLEMENTED",
               m, rc, gft_code_name(rc), err ? err : "");
        gf_bytes_free(&resp);
        gf_string_free(err);
        err = NULL;

        status_cb s;
        latch_init(&s.done);
        rc = gf_invoke_async(client, m, (const uint8_t *)"x", 1, 5000, status_callback, &s,
                             NULL, &err);
        if (rc == GF_OK) {
            latch_wait_or_die(&s.done, 1, "async call with an odd method");
            CHECKF(s.code == GF_UNIMPLEMENTED,
                   "gf_invoke_async(\"%s\") accepted the call, callback got %d %s (%s): want "
                   "3 from gf_invoke_async itself, or 12 UNIMPLEMENTED",
                   m, s.code, gft_code_name(s.code), s.message);
        } else {
            CHECKF(rc == GF_INVALID_ARGUMENT && contains(err, "method"), "%s: %d %s", m, rc,
                   err ? err : "");
        }
        gf_string_free(err);
        latch_destroy(&s.done);
    }
    gf_close(client);
}

/* 32 threads x 200 calls on one client. */
typedef struct worker {
    gf_client *client;
    int id;
    long calls;
    long ok;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (long i = 0; i < w->calls; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "thread %d call %ld", w->id, i);
        char *err = NULL;
        if (w->id % 4 == 3) {
            gf_result *result = NULL;
            int32_t rc = gf_invoke_ex(w->client, ECHO, (const uint8_t *)req, (size_t)n, NULL,
                                      &result, &err);
            size_t len = 0;
            const uint8_t *data = gf_result_response(result, &len);
            if (rc == GF_OK && len == (size_t)n && memcmp(data, req, len) == 0) {
                w->ok++;
            } else {
                CHECKF(0, "thread %d call %ld: %d %s", w->id, i, rc, err ? err : "");
            }
            gf_result_free(result);
        } else {
            gf_bytes resp;
            int32_t rc = gf_invoke(w->client, ECHO, (const uint8_t *)req, (size_t)n, 30000,
                                   &resp, &err);
            if (rc == GF_OK && resp.len == (size_t)n && memcmp(resp.data, req, resp.len) == 0) {
                w->ok++;
            } else {
                CHECKF(0, "thread %d call %ld: %d %s", w->id, i, rc, err ? err : "");
            }
            gf_bytes_free(&resp);
        }
        gf_string_free(err);
    }
    return NULL;
}

static void test_threads_32_by_200(void)
{
    enum { THREADS = 32 };
    gf_client *client = connect_to(echo_addr);
    worker workers[THREADS];
    pthread_t threads[THREADS];
    long per_thread = gft_scaled(200);
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){.client = client, .id = i, .calls = per_thread, .ok = 0};
        CHECK(pthread_create(&threads[i], NULL, worker_main, &workers[i]) == 0);
    }
    long ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        ok += workers[i].ok;
    }
    CHECKF(ok == THREADS * per_thread, "%ld of %ld calls OK", ok, THREADS * per_thread);
    gf_close(client);
}

/* gf_close while sync calls are in flight. */
typedef struct blocked_call {
    gf_client *client;
    bool ex;
    int32_t code;
    char message[256];
    int64_t returned_at;
} blocked_call;

static void *blocked_call_main(void *arg)
{
    blocked_call *b = arg;
    char *err = NULL;
    if (b->ex) {
        gf_result *result = NULL;
        b->code = gf_invoke_ex(b->client, WHOAMI, NULL, 0, NULL, &result, &err);
        CHECKF(result != NULL && gf_result_code(result) == b->code,
               "the result carries the call's code");
        gf_result_free(result);
    } else {
        gf_bytes resp;
        b->code = gf_invoke(b->client, WHOAMI, NULL, 0, 0, &resp, &err);
        CHECK(resp.data == NULL && resp.len == 0);
        gf_bytes_free(&resp);
    }
    b->returned_at = gft_now_ms();
    snprintf(b->message, sizeof b->message, "%s", err ? err : "(NULL)");
    gf_string_free(err);
    return NULL;
}

static void test_close_with_sync_calls_in_flight(void)
{
    enum { CALLS = 6 };
    gf_client *client = connect_to(stall_addr);
    blocked_call calls[CALLS];
    pthread_t threads[CALLS];
    for (int i = 0; i < CALLS; i++) {
        calls[i] = (blocked_call){.client = client, .ex = i % 2 == 1, .code = -1};
        CHECK(pthread_create(&threads[i], NULL, blocked_call_main, &calls[i]) == 0);
    }
    /* The header forbids closing while another thread is still entering a call on the
     * handle; once the library counts the calls, they are past that point. */
    gft_wait_calls_started(client, CALLS);
    gft_sleep_ms(50);
    int64_t closed_at = gft_now_ms();
    gf_close(client);
    for (int i = 0; i < CALLS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_CODE(calls[i].code, GF_CANCELLED, calls[i].message);
        CHECKF(calls[i].returned_at - closed_at < 30000, "call %d returned %lld ms after close",
               i, (long long)(calls[i].returned_at - closed_at));
    }
}

static void test_all_addresses_down(void)
{
    char addrs[128];
    char a[32];
    char b[32];
    snprintf(a, sizeof a, "127.0.0.1:%d", gft_closed_port());
    snprintf(b, sizeof b, "127.0.0.1:%d", gft_closed_port());
    snprintf(addrs, sizeof addrs, "%s,%s", a, b);
    gf_client *client = connect_to(addrs);
    gf_bytes resp;
    char *err = NULL;
    int64_t start = gft_now_ms();
    int32_t rc = gf_invoke(client, WHOAMI, NULL, 0, 20000, &resp, &err);
    int64_t took = gft_now_ms() - start;
    CHECK_CODE(rc, GF_UNAVAILABLE, err);
    CHECKF(contains(err, a) && contains(err, b), "the message names both addresses: %s",
           err ? err : "(NULL)");
    CHECKF(took < 20000, "fails fast, not at the deadline (%lld ms)", (long long)took);
    gf_string_free(err);

    /* The async path reports the same. */
    status_cb s;
    latch_init(&s.done);
    rc = gf_invoke_async(client, WHOAMI, NULL, 0, 20000, status_callback, &s, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    latch_wait_or_die(&s.done, 1, "async all down");
    CHECK_CODE(s.code, GF_UNAVAILABLE, s.message);
    CHECKF(contains(s.message, a) && contains(s.message, b), "%s", s.message);
    latch_destroy(&s.done);

    /* wait_for_ready: 0 fails fast as above, 1 waits for a ready instance until the deadline. */
    gf_call_options *opts = gf_call_options_new();
    gf_call_options_set_timeout_ms(opts, 300);
    gf_call_options_set_wait_for_ready(opts, 0);
    gf_result *result = NULL;
    rc = gf_invoke_ex(client, WHOAMI, NULL, 0, opts, &result, &err);
    CHECK_CODE(rc, GF_UNAVAILABLE, err);
    gf_result_free(result);
    gf_string_free(err);
    gf_call_options_set_wait_for_ready(opts, 1);
    rc = gf_invoke_ex(client, WHOAMI, NULL, 0, opts, &result, &err);
    CHECK_CODE(rc, GF_DEADLINE_EXCEEDED, err);
    gf_result_free(result);
    gf_string_free(err);
    gf_call_options_free(opts);
    gf_close(client);
}

/* wait_for_ready: a call started while the only instance is down succeeds once it is up. */
typedef struct ready_wait {
    latch done;
    int32_t code;
    char response[64];
    char message[256];
} ready_wait;

static void ready_wait_callback(void *user_data, gf_result *result)
{
    ready_wait *w = user_data;
    size_t len = 0;
    const uint8_t *data = gf_result_response(result, &len);
    w->code = gf_result_code(result);
    snprintf(w->response, sizeof w->response, "%.*s", (int)len, data ? (const char *)data : "");
    snprintf(w->message, sizeof w->message, "%s", gf_result_message(result));
    gf_result_free(result);
    latch_add(&w->done);
}

static void test_wait_for_ready_until_the_server_starts(void)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", gft_closed_port());
    gf_client *client = connect_to(addr);
    gf_call_options *opts = gf_call_options_new();
    gf_call_options_set_timeout_ms(opts, 20000);
    gf_call_options_set_wait_for_ready(opts, 1);
    ready_wait w;
    memset(&w, 0, sizeof w);
    latch_init(&w.done);
    w.code = -1;
    char *err = NULL;
    int32_t rc = gf_invoke_async_ex(client, WHOAMI, NULL, 0, opts, ready_wait_callback, &w,
                                    NULL, &err);
    gf_call_options_free(opts);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    if (rc == GF_OK) {
        gft_sleep_ms(300);
        CHECKF(atomic_load(&w.done.count) == 0, "returned before the server was up: %d %s",
               w.code, w.message);
        gft_start_server_at("late", addr, NULL);
        latch_wait_or_die(&w.done, 1, "wait_for_ready call");
        CHECK_CODE(w.code, GF_OK, w.message);
        CHECKF(strcmp(w.response, "late") == 0, "Whoami answered \"%s\"", w.response);
    }
    latch_destroy(&w.done);
    gf_close(client);
}

/* 10,000 async calls in flight from one thread. */
typedef struct flight {
    atomic_int callbacks;
    int32_t code;
    bool response_ok;
    uint8_t req[16];
    size_t req_len;
} flight;

static latch flights_done;
static atomic_long flights_in_flight_max;
static atomic_long flights_started;

static void flight_callback(void *user_data, int32_t code, const uint8_t *response,
                            size_t response_len, const char *message)
{
    flight *f = user_data;
    atomic_fetch_add(&f->callbacks, 1);
    f->code = code;
    f->response_ok = response_len == f->req_len && memcmp(response, f->req, f->req_len) == 0;
    if (code != GF_OK) {
        CHECKF(0, "async call: %d %s", code, message);
    }
    long in_flight = atomic_load(&flights_started) - atomic_load(&flights_done.count);
    long max = atomic_load(&flights_in_flight_max);
    while (in_flight > max && !atomic_compare_exchange_weak(&flights_in_flight_max, &max,
                                                            in_flight)) {
    }
    latch_add(&flights_done);
}

static void test_async_10000_in_flight(void)
{
    gf_client *client = connect_to(echo_addr);
    long n = gft_scaled(10000);
    flight *flights = calloc((size_t)n, sizeof *flights);
    latch_init(&flights_done);
    atomic_store(&flights_in_flight_max, 0);
    atomic_store(&flights_started, 0);
    long accepted = 0;
    for (long i = 0; i < n; i++) {
        flight *f = &flights[i];
        atomic_init(&f->callbacks, 0);
        f->code = -1;
        f->req_len = (size_t)snprintf((char *)f->req, sizeof f->req, "call-%ld", i);
        char *err = NULL;
        atomic_fetch_add(&flights_started, 1);
        int32_t rc = gf_invoke_async(client, ECHO, f->req, f->req_len, 60000, flight_callback,
                                     f, NULL, &err);
        if (rc == GF_OK) {
            accepted++;
        } else {
            atomic_fetch_sub(&flights_started, 1);
            CHECK_CODE(rc, GF_OK, err);
        }
        gf_string_free(err);
    }
    latch_wait_or_die(&flights_done, accepted, "10,000 async calls");
    gft_sleep_ms(100); /* a second callback for any call would show up by now */
    long once = 0;
    long ok = 0;
    for (long i = 0; i < n; i++) {
        once += atomic_load(&flights[i].callbacks) == 1;
        ok += flights[i].code == GF_OK && flights[i].response_ok;
    }
    CHECKF(accepted == n, "%ld of %ld calls accepted", accepted, n);
    CHECKF(once == n, "%ld of %ld callbacks ran exactly once", once, n);
    CHECKF(ok == n, "%ld of %ld calls echoed their request", ok, n);
    CHECKF(atomic_load(&flights_done.count) == accepted, "%ld callbacks for %ld calls",
           atomic_load(&flights_done.count), accepted);
    printf("  (%ld calls; at most %ld in flight at once)\n", n,
           atomic_load(&flights_in_flight_max));
    if (ok != n) {
        print_stats(client);
    }
    free(flights);
    latch_destroy(&flights_done);
    gf_close(client);
}

/* Cancel races. Each round starts one call and cancels and/or frees its handle at a different
 * moment; the callback must run exactly once whatever happens. */
enum race_mode {
    CANCEL_AT_ONCE,        /* stalled call, cancelled right away: CANCELLED */
    CANCEL_TWICE,          /* stalled call, cancelled twice: CANCELLED once */
    CANCEL_THEN_FREE,      /* stalled call, cancelled then freed at once: CANCELLED */
    CANCEL_FROM_OTHER_THREAD, /* stalled call, cancelled by another thread: CANCELLED */
    CANCEL_RACING,         /* fast call cancelled at once: OK or CANCELLED */
    CANCEL_AFTER_DELAY,    /* fast call cancelled after 0-2 ms: OK or CANCELLED */
    CANCEL_AFTER_DONE,     /* cancelled (twice) after the callback ran: OK */
    FREE_BEFORE_DONE,      /* handle freed at once, no cancel: the call still completes OK */
    FREE_IN_CALLBACK,      /* the callback cancels and frees its own handle: OK */
    NO_HANDLE,             /* call_out NULL: OK */
    RACE_MODES
};

typedef struct race {
    enum race_mode mode;
    gf_call *call;
    atomic_int callbacks;
    int32_t code;
    char message[128];
    bool response_ok;
    uint8_t req[16];
    size_t req_len;
    latch *done;
} race;

static void race_callback(void *user_data, int32_t code, const uint8_t *response,
                          size_t response_len, const char *message)
{
    race *r = user_data;
    r->code = code;
    snprintf(r->message, sizeof r->message, "%s", message);
    r->response_ok = code != GF_OK || (response_len == r->req_len &&
                                       memcmp(response, r->req, response_len) == 0);
    if (r->mode == FREE_IN_CALLBACK) {
        gf_call_cancel(r->call); /* after completion: a no-op */
        gf_call_free(r->call);
    }
    atomic_fetch_add(&r->callbacks, 1);
    latch_add(r->done);
}

static void *cancel_later(void *arg)
{
    gf_call_cancel(arg);
    return NULL;
}

static void test_async_cancel_races(void)
{
    gf_client *fast = connect_to(echo_addr);
    gf_client *stalled = connect_to(stall_addr);
    long rounds = gft_scaled(1000);
    if (rounds < 2 * RACE_MODES) {
        rounds = 2 * RACE_MODES;
    }
    race *races = calloc((size_t)rounds, sizeof *races);
    latch done;
    latch_init(&done);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    long cancelled_racing = 0;
    for (long i = 0; i < rounds; i++) {
        race *r = &races[i];
        r->mode = (enum race_mode)(i % RACE_MODES);
        r->done = &done;
        r->code = -1;
        atomic_init(&r->callbacks, 0);
        r->req_len = (size_t)snprintf((char *)r->req, sizeof r->req, "race-%ld", i);
        bool stalls = r->mode <= CANCEL_FROM_OTHER_THREAD;
        gf_call **call_out = r->mode == NO_HANDLE ? NULL : &r->call;
        char *err = NULL;
        int32_t rc = gf_invoke_async(stalls ? stalled : fast, ECHO, r->req, r->req_len, 0,
                                     race_callback, r, call_out, &err);
        CHECK_CODE(rc, GF_OK, err);
        gf_string_free(err);
        if (rc != GF_OK) {
            latch_add(&done); /* keep the count: this round never calls back */
            continue;
        }
        CHECK(call_out == NULL || r->call != NULL);
        switch (r->mode) {
        case CANCEL_AT_ONCE:
        case CANCEL_RACING:
            gf_call_cancel(r->call);
            break;
        case CANCEL_TWICE:
            gf_call_cancel(r->call);
            gf_call_cancel(r->call);
            break;
        case CANCEL_THEN_FREE:
            gf_call_cancel(r->call);
            gf_call_free(r->call);
            r->call = NULL;
            break;
        case CANCEL_FROM_OTHER_THREAD: {
            pthread_t t;
            CHECK(pthread_create(&t, NULL, cancel_later, r->call) == 0);
            pthread_join(t, NULL);
            break;
        }
        case CANCEL_AFTER_DELAY: {
            long us = (long)(xorshift(&seed) % 2000);
            struct timespec ts = {0, us * 1000};
            nanosleep(&ts, NULL);
            gf_call_cancel(r->call);
            break;
        }
        case FREE_BEFORE_DONE:
            gf_call_free(r->call);
            r->call = NULL;
            break;
        case CANCEL_AFTER_DONE:
        case FREE_IN_CALLBACK:
        case NO_HANDLE:
        case RACE_MODES:
            break;
        }
        latch_wait_or_die(&done, i + 1, "cancel race");
        if (r->mode == CANCEL_AFTER_DONE) {
            gf_call_cancel(r->call);
            gf_call_cancel(r->call);
        }
        if (r->mode != FREE_IN_CALLBACK) {
            gf_call_free(r->call); /* after completion; NULL when already freed */
        }
        r->call = NULL;
    }
    gft_sleep_ms(100);
    CHECKF(atomic_load(&done.count) == rounds, "%ld callbacks for %ld calls",
           atomic_load(&done.count), rounds);
    for (long i = 0; i < rounds; i++) {
        race *r = &races[i];
        int n = atomic_load(&r->callbacks);
        CHECKF(n == 1, "round %ld (mode %d): %d callbacks", i, (int)r->mode, n);
        switch (r->mode) {
        case CANCEL_AT_ONCE:
        case CANCEL_TWICE:
        case CANCEL_THEN_FREE:
        case CANCEL_FROM_OTHER_THREAD:
            CHECK_CODE(r->code, GF_CANCELLED, r->message);
            break;
        case CANCEL_RACING:
        case CANCEL_AFTER_DELAY:
            CHECKF(r->code == GF_OK || r->code == GF_CANCELLED, "round %ld: %d %s", i, r->code,
                   r->message);
            cancelled_racing += r->code == GF_CANCELLED;
            break;
        default:
            CHECK_CODE(r->code, GF_OK, r->message);
            break;
        }
        CHECKF(r->response_ok, "round %ld: wrong response bytes", i);
    }
    printf("  (%ld rounds; %ld of the racing cancels won)\n", rounds, cancelled_racing);
    free(races);
    latch_destroy(&done);
    gf_close(fast);
    gf_close(stalled);
}

/* Callbacks that start new calls: a binary tree of calls and a long chain. */
typedef struct spawner {
    gf_client *client;
    latch done;
    atomic_long started;
    atomic_long failed;
    int max_depth;
    long chain_left;
} spawner;

typedef struct spawn_node {
    spawner *s;
    int depth;
} spawn_node;

static void spawn_start(spawner *s, int depth);

static void spawn_callback(void *user_data, int32_t code, const uint8_t *response,
                           size_t response_len, const char *message)
{
    spawn_node *node = user_data;
    spawner *s = node->s;
    (void)response, (void)response_len;
    if (code != GF_OK) {
        atomic_fetch_add(&s->failed, 1);
        CHECKF(0, "tree call: %d %s", code, message);
    }
    if (node->depth < s->max_depth) {
        spawn_start(s, node->depth + 1);
        spawn_start(s, node->depth + 1);
    }
    free(node);
    latch_add(&s->done);
}

static void spawn_start(spawner *s, int depth)
{
    spawn_node *node = malloc(sizeof *node);
    node->s = s;
    node->depth = depth;
    atomic_fetch_add(&s->started, 1);
    char *err = NULL;
    int32_t rc = gf_invoke_async(s->client, ECHO, (const uint8_t *)"tree", 4, 30000,
                                 spawn_callback, node, NULL, &err);
    if (rc != GF_OK) {
        CHECK_CODE(rc, GF_OK, err);
        atomic_fetch_add(&s->failed, 1);
        free(node);
        latch_add(&s->done);
    }
    gf_string_free(err);
}

static void chain_callback(void *user_data, gf_result *result)
{
    spawner *s = user_data;
    if (gf_result_code(result) != GF_OK) {
        atomic_fetch_add(&s->failed, 1);
        CHECKF(0, "chain call: %d %s", gf_result_code(result), gf_result_message(result));
    }
    gf_result_free(result);
    if (--s->chain_left > 0) { /* only the one callback in flight touches chain_left */
        char *err = NULL;
        atomic_fetch_add(&s->started, 1);
        int32_t rc = gf_invoke_async_ex(s->client, ECHO, (const uint8_t *)"chain", 5, NULL,
                                        chain_callback, s, NULL, &err);
        CHECK_CODE(rc, GF_OK, err);
        gf_string_free(err);
        if (rc != GF_OK) {
            s->chain_left = 0;
        }
    }
    latch_add(&s->done);
}

static void test_async_callback_starts_calls(void)
{
    spawner s;
    s.client = connect_to(echo_addr);
    latch_init(&s.done);
    atomic_init(&s.started, 0);
    atomic_init(&s.failed, 0);
    s.max_depth = 7; /* 255 calls */
    spawn_start(&s, 0);
    latch_wait_or_die(&s.done, 255, "tree of calls started from callbacks");
    CHECKF(atomic_load(&s.started) == 255, "%ld calls started", atomic_load(&s.started));

    atomic_store(&s.done.count, 0);
    atomic_store(&s.started, 0);
    long chain = gft_scaled(500);
    s.chain_left = chain;
    char *err = NULL;
    atomic_fetch_add(&s.started, 1);
    int32_t rc = gf_invoke_async_ex(s.client, ECHO, (const uint8_t *)"chain", 5, NULL,
                                    chain_callback, &s, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    if (rc == GF_OK) {
        latch_wait_or_die(&s.done, chain, "chain of calls started from callbacks");
    }
    gft_sleep_ms(50);
    CHECKF(atomic_load(&s.done.count) == atomic_load(&s.started), "%ld callbacks, %ld calls",
           atomic_load(&s.done.count), atomic_load(&s.started));
    CHECK(atomic_load(&s.failed) == 0);
    latch_destroy(&s.done);
    gf_close(s.client);
}

/* Blocking calls from inside a callback fail with 9 instead of deadlocking the runtime. */
typedef struct blocking_in_cb {
    gf_client *client;
    latch done;
    int32_t invoke_code, invoke_ex_code, register_code, queue_wait_code;
    char invoke_message[256];
    bool invoke_response_empty, invoke_ex_result_null;
} blocking_in_cb;

static void try_blocking_calls(blocking_in_cb *b)
{
    gf_bytes resp = {(uint8_t *)"junk", 4};
    char *err = NULL;
    b->invoke_code = gf_invoke(b->client, ECHO, (const uint8_t *)"x", 1, 1000, &resp, &err);
    snprintf(b->invoke_message, sizeof b->invoke_message, "%s", err ? err : "(NULL)");
    b->invoke_response_empty = resp.data == NULL && resp.len == 0;
    gf_bytes_free(&resp);
    gf_string_free(err);

    gf_result *result = (gf_result *)b;
    b->invoke_ex_code = gf_invoke_ex(b->client, ECHO, (const uint8_t *)"x", 1, NULL, &result,
                                     &err);
    b->invoke_ex_result_null = result == NULL;
    gf_result_free(result == (gf_result *)b ? NULL : result);
    gf_string_free(err);

    gf_registration *reg = NULL;
    b->register_code = gf_register("{\"etcd\": {\"endpoints\": [\"127.0.0.1:1\"]}}", "p",
                                   "127.0.0.1:1", NULL, 5, &reg, &err);
    gf_string_free(err);
    if (reg) {
        gf_deregister(reg, NULL);
    }

    gf_queue *q = NULL;
    gf_queue_new(&q, NULL);
    gf_completion c;
    size_t taken = 0;
    b->queue_wait_code = gf_queue_wait(q, &c, 1, &taken, NULL);
    gf_queue_free(q);
}

static void blocking_callback(void *user_data, int32_t code, const uint8_t *response,
                              size_t response_len, const char *message)
{
    blocking_in_cb *b = user_data;
    (void)response, (void)response_len;
    CHECK_CODE(code, GF_OK, message);
    try_blocking_calls(b);
    latch_add(&b->done);
}

static void blocking_result_callback(void *user_data, gf_result *result)
{
    blocking_in_cb *b = user_data;
    CHECK_CODE(gf_result_code(result), GF_OK, gf_result_message(result));
    gf_result_free(result);
    try_blocking_calls(b);
    latch_add(&b->done);
}

static void check_blocking_results(blocking_in_cb *b)
{
    CHECK_CODE(b->invoke_code, GF_FAILED_PRECONDITION, b->invoke_message);
    CHECKF(contains(b->invoke_message, "callback") || contains(b->invoke_message, "thread"),
           "the message explains why: %s", b->invoke_message);
    CHECK(b->invoke_response_empty);
    CHECK_CODE(b->invoke_ex_code, GF_FAILED_PRECONDITION, "gf_invoke_ex in a callback");
    CHECKF(b->invoke_ex_result_null, "result_out is NULL when gf_invoke_ex refuses");
    CHECK_CODE(b->register_code, GF_FAILED_PRECONDITION, "gf_register in a callback");
    CHECK_CODE(b->queue_wait_code, GF_FAILED_PRECONDITION, "gf_queue_wait in a callback");
}

static void test_async_sync_call_in_callback_fails(void)
{
    blocking_in_cb b;
    memset(&b, 0, sizeof b);
    b.client = connect_to(echo_addr);
    latch_init(&b.done);
    char *err = NULL;
    int32_t rc = gf_invoke_async(b.client, ECHO, (const uint8_t *)"x", 1, 5000,
                                 blocking_callback, &b, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    latch_wait_or_die(&b.done, 1, "gf_invoke inside a callback");
    check_blocking_results(&b);

    rc = gf_invoke_async_ex(b.client, ECHO, (const uint8_t *)"x", 1, NULL,
                            blocking_result_callback, &b, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    latch_wait_or_die(&b.done, 2, "gf_invoke_ex inside a callback");
    check_blocking_results(&b);
    latch_destroy(&b.done);
    gf_close(b.client);
}

/* gf_close with async calls in flight: each completes exactly once with CANCELLED. */
typedef struct closing {
    atomic_int callbacks;
    int32_t code;
    char message[128];
    gf_call *call;
    latch *done;
} closing;

static void closing_callback(void *user_data, int32_t code, const uint8_t *response,
                             size_t response_len, const char *message)
{
    closing *c = user_data;
    (void)response, (void)response_len;
    c->code = code;
    snprintf(c->message, sizeof c->message, "%s", message);
    atomic_fetch_add(&c->callbacks, 1);
    latch_add(c->done);
}

static void closing_result_callback(void *user_data, gf_result *result)
{
    closing *c = user_data;
    c->code = gf_result_code(result);
    snprintf(c->message, sizeof c->message, "%s", gf_result_message(result));
    gf_result_free(result);
    atomic_fetch_add(&c->callbacks, 1);
    latch_add(c->done);
}

static void close_with_async_in_flight(bool wait_until_on_the_wire)
{
    long n = gft_scaled(200);
    if (n < 8) {
        n = 8;
    }
    gf_client *client = connect_to(stall_addr);
    closing *calls = calloc((size_t)n, sizeof *calls);
    latch done;
    latch_init(&done);
    for (long i = 0; i < n; i++) {
        closing *c = &calls[i];
        c->done = &done;
        c->code = -1;
        atomic_init(&c->callbacks, 0);
        gf_call **call_out = i % 2 ? &c->call : NULL;
        char *err = NULL;
        int32_t rc;
        if (i % 3 == 0) {
            rc = gf_invoke_async_ex(client, ECHO, NULL, 0, NULL, closing_result_callback, c,
                                    call_out, &err);
        } else {
            rc = gf_invoke_async(client, ECHO, NULL, 0, 0, closing_callback, c, call_out, &err);
        }
        CHECK_CODE(rc, GF_OK, err);
        gf_string_free(err);
        if (rc != GF_OK) {
            latch_add(&done);
        }
    }
    if (wait_until_on_the_wire) {
        gft_wait_calls_started(client, n);
        gft_sleep_ms(100);
    }
    gf_close(client);
    latch_wait_or_die(&done, n, "async calls cancelled by gf_close");
    gft_sleep_ms(100);
    for (long i = 0; i < n; i++) {
        closing *c = &calls[i];
        CHECKF(atomic_load(&c->callbacks) == 1, "call %ld: %d callbacks", i,
               atomic_load(&c->callbacks));
        CHECK_CODE(c->code, GF_CANCELLED, c->message);
        gf_call_cancel(c->call); /* the handle outlives the client */
        gf_call_free(c->call);
    }
    free(calls);
    latch_destroy(&done);
}

static void test_async_close_right_after_start(void)
{
    close_with_async_in_flight(false);
}

static void test_async_close_with_calls_on_the_wire(void)
{
    close_with_async_in_flight(true);
}

/* gf_close racing with the calls' first steps: a fresh client, many calls waiting for the
 * first connection or just sent, closed a random moment later. Every call must still complete
 * with CANCELLED; none may report the connection being torn down by the close. */
typedef struct tally {
    latch done;
    int32_t expected; /* first_other records the first callback with another code */
    atomic_int codes[17];
    atomic_int after_close;
    atomic_bool closing;
    char first_other[256];
    atomic_flag first_other_set;
} tally;

static void tally_callback(void *user_data, int32_t code, const uint8_t *response,
                           size_t response_len, const char *message)
{
    tally *t = user_data;
    (void)response, (void)response_len;
    if (code >= 0 && code <= 16) {
        atomic_fetch_add(&t->codes[code], 1);
    }
    if (atomic_load(&t->closing)) {
        atomic_fetch_add(&t->after_close, 1);
    }
    if (code != t->expected && !atomic_flag_test_and_set(&t->first_other_set)) {
        snprintf(t->first_other, sizeof t->first_other, "%d %s: %s", code, gft_code_name(code),
                 message);
    }
    latch_add(&t->done);
}

static void tally_init(tally *t)
{
    memset(t, 0, sizeof *t);
    latch_init(&t->done);
    for (int i = 0; i <= 16; i++) {
        atomic_init(&t->codes[i], 0);
    }
    atomic_init(&t->after_close, 0);
    atomic_init(&t->closing, false);
    atomic_flag_clear(&t->first_other_set);
    t->expected = GF_CANCELLED;
}

static void test_async_close_racing_connection_setup(void)
{
    long rounds = gft_scaled(20) < 3 ? 3 : gft_scaled(20);
    long n = gft_scaled(1000) < 100 ? 100 : gft_scaled(1000);
    uint64_t seed = 12345;
    tally t;
    tally_init(&t);
    for (long r = 0; r < rounds; r++) {
        gf_client *client = connect_to(stall_addr);
        for (long i = 0; i < n; i++) {
            int32_t rc = gf_invoke_async(client, ECHO, NULL, 0, 0, tally_callback, &t, NULL,
                                         NULL);
            if (rc != GF_OK) {
                gft_fatal("gf_invoke_async = %d", rc);
            }
        }
        gft_wait_calls_started(client, n);
        struct timespec ts = {0, (long)(xorshift(&seed) % 3000) * 1000};
        nanosleep(&ts, NULL);
        CHECKF(atomic_load(&t.done.count) == r * n, "a call to the stalled server ended before "
               "gf_close: %s", t.first_other);
        atomic_store(&t.closing, true);
        gf_close(client);
        latch_wait_or_die(&t.done, (r + 1) * n, "calls cancelled by gf_close");
        atomic_store(&t.closing, false);
    }
    int cancelled = atomic_load(&t.codes[GF_CANCELLED]);
    CHECKF(cancelled == rounds * n,
           "%d of %ld calls in flight at gf_close completed with CANCELLED; "
           "%d UNAVAILABLE, %d other; first: %s",
           cancelled, rounds * n, atomic_load(&t.codes[GF_UNAVAILABLE]),
           (int)(rounds * n) - cancelled - atomic_load(&t.codes[GF_UNAVAILABLE]),
           t.first_other);
    latch_destroy(&t.done);
}

/* gf_client_shutdown while other threads keep entering calls on the same handle (what a
 * binding's close() does): every call ends OK, CANCELLED (in flight at the shutdown) or
 * FAILED_PRECONDITION (started after it), the handle stays usable for that answer until
 * gf_close, and shutting down twice at once is harmless. Under valgrind/ASan this also shows
 * that no call touches freed memory. */
typedef struct racer {
    gf_client *client;
    tally *async;
    long sync_ok, sync_cancelled, sync_refused, async_refused, async_started;
    char other[256];
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    for (long i = 0;; i++) {
        char *err = NULL;
        if (i % 4 == 3) {
            int32_t rc = gf_invoke_async(r->client, ECHO, (const uint8_t *)"x", 1, 30000,
                                         tally_callback, r->async, NULL, &err);
            if (rc == GF_OK) {
                r->async_started++;
            } else if (rc != GF_FAILED_PRECONDITION && !r->other[0]) {
                snprintf(r->other, sizeof r->other, "async %d: %s", rc, err ? err : "");
            }
            gf_string_free(err);
            if (rc == GF_FAILED_PRECONDITION) {
                r->async_refused++;
                return NULL;
            }
            continue;
        }
        gf_bytes resp;
        int32_t rc = gf_invoke(r->client, ECHO, (const uint8_t *)"x", 1, 30000, &resp, &err);
        if (rc == GF_OK) {
            r->sync_ok++;
        } else if (rc == GF_CANCELLED) {
            r->sync_cancelled++;
        } else if (rc == GF_FAILED_PRECONDITION) {
            r->sync_refused++;
        } else if (!r->other[0]) {
            snprintf(r->other, sizeof r->other, "sync %d: %s", rc, err ? err : "");
        }
        gf_bytes_free(&resp);
        gf_string_free(err);
        if (rc == GF_FAILED_PRECONDITION) {
            return NULL;
        }
    }
}

static void *shutdown_main(void *arg)
{
    gf_client_shutdown(arg);
    return NULL;
}

static void test_shutdown_racing_calls(void)
{
    enum { THREADS = 8 };
    long rounds = gft_scaled(20) < 3 ? 3 : gft_scaled(20);
    tally t;
    tally_init(&t);
    t.expected = GF_OK;
    long async_started = 0;
    for (long round = 0; round < rounds; round++) {
        gf_client *client = connect_to(echo_addr);
        racer racers[THREADS];
        pthread_t threads[THREADS], closers[2];
        for (int i = 0; i < THREADS; i++) {
            racers[i] = (racer){.client = client, .async = &t};
            CHECK(pthread_create(&threads[i], NULL, racer_main, &racers[i]) == 0);
        }
        gft_wait_calls_started(client, 50 + round * 10);
        CHECK(pthread_create(&closers[0], NULL, shutdown_main, client) == 0);
        CHECK(pthread_create(&closers[1], NULL, shutdown_main, client) == 0);
        pthread_join(closers[0], NULL);
        pthread_join(closers[1], NULL);
        /* After gf_client_shutdown returned, a new call fails at once. */
        char *err = NULL;
        gf_bytes resp;
        int32_t rc = gf_invoke(client, ECHO, NULL, 0, 0, &resp, &err);
        CHECK_CODE(rc, GF_FAILED_PRECONDITION, err);
        CHECKF(err && strstr(err, "closed"), "the error says the client is closed: %s",
               err ? err : "(NULL)");
        gf_string_free(err);
        char *json = NULL;
        CHECK(gf_client_stats(client, &json, NULL) == GF_FAILED_PRECONDITION && json == NULL);
        gf_client_shutdown(client); /* idempotent */
        long ok = 0, refused = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(threads[i], NULL);
            CHECKF(!racers[i].other[0], "a call on a shut-down client: %s", racers[i].other);
            ok += racers[i].sync_ok;
            refused += racers[i].sync_refused + racers[i].async_refused;
            async_started += racers[i].async_started;
        }
        CHECKF(ok > 0, "calls succeeded before the shutdown (%ld)", ok);
        /* A thread stops at its first refused call, sync or async, and only then. */
        CHECKF(refused == THREADS, "every thread's last call was refused (%ld of %d)", refused,
               THREADS);
        /* Async calls complete exactly once each, even those cancelled by the shutdown. */
        latch_wait_or_die(&t.done, async_started, "async calls across gf_client_shutdown");
        gf_close(client);
    }
    int ended = atomic_load(&t.codes[GF_OK]) + atomic_load(&t.codes[GF_CANCELLED]);
    CHECKF(ended == async_started, "%d of %ld async calls ended OK or CANCELLED; other: %s",
           ended, async_started, t.first_other);
    latch_destroy(&t.done);
}

/* Rounds of 1000 calls on a stalled server, all cancelled at once: the losing-hedge pattern
 * that trips servers' rapid-reset protection. Most resets wait for the server to confirm it
 * took the streams in (which a stalled server never does); gf_close must still end every call
 * once and free what waits (the memcheck and ASan runs see it). */
static void test_mass_cancel_on_a_stalled_server(void)
{
    long rounds = gft_scaled(30) < 5 ? 5 : gft_scaled(30);
    long n = gft_scaled(1000) < 200 ? 200 : gft_scaled(1000);
    gf_call **calls = calloc((size_t)n, sizeof *calls);
    tally t;
    tally_init(&t);
    for (long r = 0; r < rounds; r++) {
        gf_client *client = connect_to(stall_addr);
        for (long i = 0; i < n; i++) {
            int32_t rc = gf_invoke_async(client, ECHO, NULL, 0, 0, tally_callback, &t, &calls[i],
                                         NULL);
            if (rc != GF_OK) {
                gft_fatal("gf_invoke_async = %d", rc);
            }
        }
        gft_wait_calls_started(client, n);
        for (long i = 0; i < n; i++) {
            gf_call_cancel(calls[i]);
            gf_call_free(calls[i]);
        }
        latch_wait_or_die(&t.done, (r + 1) * n, "cancelled calls");
        gf_close(client);
    }
    /* The server keeps the connection (no GOAWAY for too many resets): every call ends
     * CANCELLED, once (the latch). */
    int ended = atomic_load(&t.codes[GF_CANCELLED]);
    CHECKF(ended == rounds * n, "%d of %ld cancelled; first other: %s", ended, rounds * n,
           t.first_other);
    gft_sleep_ms(50); /* connections wind down in the background */
    free(calls);
    latch_destroy(&t.done);
}

/* The server dies while the library is writing to its connection: 64 calls of 256 KiB each are
 * on the wire when the process is killed, so the kernel answers the library's writes with RST
 * and EPIPE. The library must not raise SIGPIPE, which kills a C program that keeps the default
 * disposition; the harness counts SIGPIPEs and fails the case if any arrive. */
static void test_server_closing_connection_raises_no_sigpipe(void)
{
    const char *const args[] = {"--delay-ms", "600000", NULL};
    const gft_server *doomed = gft_start_server("doomed", args);
    enum { CALLS = 64, SIZE = 256 << 10 };
    uint8_t *payload = calloc(SIZE, 1);
    tally t;
    tally_init(&t);
    gf_client *client = connect_to(doomed->addr);
    for (int i = 0; i < CALLS; i++) {
        int32_t rc =
            gf_invoke_async(client, ECHO, payload, SIZE, 0, tally_callback, &t, NULL, NULL);
        if (rc != GF_OK) {
            gft_fatal("gf_invoke_async = %d", rc);
        }
    }
    gft_wait_calls_started(client, CALLS);
    gft_kill_server(doomed);
    latch_wait_or_die(&t.done, CALLS, "calls on a killed server");
    CHECKF(atomic_load(&t.codes[GF_UNAVAILABLE]) == CALLS, "%d of %d UNAVAILABLE; first other: %s",
           atomic_load(&t.codes[GF_UNAVAILABLE]), CALLS, t.first_other);
    gf_close(client);
    free(payload);
    latch_destroy(&t.done);
}

/* A burst of small calls on one HTTP/2 connection. h2 >= 0.4.16 (in the library and in
 * gf-testserver) budgets small DATA frames that are received but not yet consumed and ends the
 * connection with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" when a burst exhausts it;
 * every call in flight then fails. A gRPC client has to keep its connection through a burst
 * like this (async_10000_in_flight hits the same limit now and then). */
static void test_async_burst_of_small_calls(void)
{
    gf_client *client = connect_to(echo_addr);
    long n = gft_scaled(40000);
    tally t;
    tally_init(&t);
    t.expected = GF_OK;
    for (long i = 0; i < n; i++) {
        int32_t rc = gf_invoke_async(client, ECHO, (const uint8_t *)"x", 1, 120000,
                                     tally_callback, &t, NULL, NULL);
        if (rc != GF_OK) {
            gft_fatal("gf_invoke_async = %d", rc);
        }
    }
    latch_wait_or_die(&t.done, n, "burst of small calls");
    int ok = atomic_load(&t.codes[GF_OK]);
    CHECKF(ok == n, "%d of %ld calls OK; first failure: %s", ok, n, t.first_other);
    if (ok != n) {
        print_stats(client);
    }
    latch_destroy(&t.done);
    gf_close(client);
}

/* A client whose callbacks never block runs its async calls on the library's call loops,
 * callbacks included: the same outcomes, each callback exactly once. (Where a callback runs is
 * not observable from here; this checks the contract under the option.) */
static void test_async_nonblocking_callbacks(void)
{
    char target[300];
    snprintf(target, sizeof target, "static:///%s", echo_addr);
    gf_client *client = NULL;
    char *err = NULL;
    CHECK_CODE(gf_connect(target, "{\"nonblocking_callbacks\": true}", &client, &err), GF_OK,
               err);
    if (client == NULL) {
        return;
    }
    long n = gft_scaled(5000);
    tally t;
    tally_init(&t);
    t.expected = GF_OK;
    for (long i = 0; i < n; i++) {
        int32_t rc = gf_invoke_async(client, ECHO, (const uint8_t *)"x", 1, 60000, tally_callback,
                                     &t, NULL, NULL);
        if (rc != GF_OK) {
            gft_fatal("gf_invoke_async = %d", rc);
        }
    }
    latch_wait_or_die(&t.done, n, "async calls with nonblocking callbacks");
    gft_sleep_ms(50); /* a second callback for any call would show up by now */
    int ok = atomic_load(&t.codes[GF_OK]);
    CHECKF(ok == n && atomic_load(&t.done.count) == n,
           "%d of %ld calls OK, %ld callbacks; first failure: %s", ok, n,
           atomic_load(&t.done.count), t.first_other);
    CHECK_BAD_ARG(gf_connect(target, "{\"nonblocking_callbacks\": \"yes\"}", &client, &err),
                  err, "nonblocking_callbacks");
    latch_destroy(&t.done);
    gf_close(client);
}

/* gf_close from inside a callback cancels the client's other calls. */
typedef struct closer {
    gf_client *client;
    latch *done;
} closer;

static void closer_callback(void *user_data, int32_t code, const uint8_t *response,
                            size_t response_len, const char *message)
{
    closer *c = user_data;
    (void)response, (void)response_len;
    CHECK_CODE(code, GF_DEADLINE_EXCEEDED, message);
    gf_close(c->client);
    latch_add(c->done);
}

static void test_async_close_inside_callback(void)
{
    enum { OTHERS = 16 };
    gf_client *client = connect_to(stall_addr);
    closing calls[OTHERS];
    latch done;
    latch_init(&done);
    memset(calls, 0, sizeof calls);
    for (int i = 0; i < OTHERS; i++) {
        calls[i].done = &done;
        calls[i].code = -1;
        atomic_init(&calls[i].callbacks, 0);
        char *err = NULL;
        int32_t rc = gf_invoke_async(client, ECHO, NULL, 0, 0, closing_callback, &calls[i],
                                     &calls[i].call, &err);
        CHECK_CODE(rc, GF_OK, err);
        gf_string_free(err);
        if (rc != GF_OK) {
            gft_fatal("cannot start the calls");
        }
    }
    closer c = {client, &done};
    char *err = NULL;
    int32_t rc = gf_invoke_async(client, ECHO, NULL, 0, 300, closer_callback, &c, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    if (rc != GF_OK) {
        gft_fatal("cannot start the closing call");
    }
    /* The client belongs to the callback now. */
    latch_wait_or_die(&done, OTHERS + 1, "calls cancelled by gf_close in a callback");
    gft_sleep_ms(50);
    for (int i = 0; i < OTHERS; i++) {
        CHECKF(atomic_load(&calls[i].callbacks) == 1, "call %d: %d callbacks", i,
               atomic_load(&calls[i].callbacks));
        CHECK_CODE(calls[i].code, GF_CANCELLED, calls[i].message);
        gf_call_free(calls[i].call);
    }
    latch_destroy(&done);
}

/* Metadata: x-echo-* request metadata comes back as trailers, -bin values byte for byte. */
static const uint8_t raw_bin[] = {0x00, 0xff, 0x01, 0x80, 0x7f, 0x00, 'a', 0xfe};

static void check_trailers(const gf_result *result)
{
    CHECK_CODE(gf_result_code(result), GF_OK, gf_result_message(result));
    size_t len = 0;
    const uint8_t *data = gf_result_response(result, &len);
    CHECK(len == 4 && data && memcmp(data, "ping", 4) == 0);
    bool foo = false, raw = false, empty = false;
    size_t count = gf_result_trailer_count(result);
    for (size_t i = 0; i < count; i++) {
        const char *key = NULL;
        const uint8_t *value = NULL;
        size_t value_len = 0;
        CHECK_CODE(gf_result_trailer(result, i, &key, &value, &value_len), GF_OK, "");
        CHECK(key != NULL);
        if (!key) {
            continue;
        }
        CHECKF(strcmp(key, "grpc-status") != 0 && strcmp(key, "grpc-message") != 0,
               "%s is not listed", key);
        CHECKF(strcmp(key, "x-not-echoed") != 0, "only x-echo- keys come back");
        if (strcmp(key, "x-echo-foo") == 0) {
            foo = true;
            CHECK(value_len == 3 && value && memcmp(value, "bar", 3) == 0);
        } else if (strcmp(key, "x-echo-raw-bin") == 0) {
            raw = true;
            CHECKF(value_len == sizeof raw_bin && value &&
                       memcmp(value, raw_bin, sizeof raw_bin) == 0,
                   "x-echo-raw-bin came back as %zu bytes", value_len);
        } else if (strcmp(key, "x-echo-empty") == 0) {
            empty = true;
            CHECK(value_len == 0 && value == NULL);
        }
        /* NULL out-pointers are fine. */
        CHECK_CODE(gf_result_trailer(result, i, NULL, NULL, NULL), GF_OK, "");
    }
    CHECKF(foo, "trailer x-echo-foo missing (%zu trailers)", count);
    CHECKF(raw, "trailer x-echo-raw-bin missing (%zu trailers)", count);
    CHECKF(empty, "trailer x-echo-empty missing (%zu trailers)", count);
    CHECK_CODE(gf_result_trailer(result, count, NULL, NULL, NULL), GF_OUT_OF_RANGE, "");
    size_t headers = gf_result_header_count(result);
    for (size_t i = 0; i < headers; i++) {
        const char *key = NULL;
        CHECK_CODE(gf_result_header(result, i, &key, NULL, NULL), GF_OK, "");
        CHECK(key != NULL && key[0] != '\0');
    }
    CHECK_CODE(gf_result_header(result, headers, NULL, NULL, NULL), GF_OUT_OF_RANGE, "");
}

static gf_call_options *echo_metadata_options(void)
{
    gf_call_options *opts = gf_call_options_new();
    char *err = NULL;
    CHECK_CODE(gf_call_options_add_metadata(opts, "x-echo-foo", (const uint8_t *)"bar", 3, &err),
               GF_OK, err);
    CHECK(err == NULL);
    CHECK_CODE(gf_call_options_add_metadata(opts, "x-echo-raw-bin", raw_bin, sizeof raw_bin,
                                            &err),
               GF_OK, err);
    CHECK_CODE(gf_call_options_add_metadata(opts, "x-echo-empty", NULL, 0, &err), GF_OK, err);
    CHECK_CODE(gf_call_options_add_metadata(opts, "x-not-echoed", (const uint8_t *)"z", 1, &err),
               GF_OK, err);
    gf_call_options_set_timeout_ms(opts, 10000);
    return opts;
}

typedef struct kept_result {
    latch done;
    gf_result *result;
} kept_result;

static void keep_result_callback(void *user_data, gf_result *result)
{
    kept_result *k = user_data;
    k->result = result; /* freed later by the main thread */
    latch_add(&k->done);
}

static void check_result_in_callback(void *user_data, gf_result *result)
{
    kept_result *k = user_data;
    check_trailers(result);
    gf_result_free(result);
    latch_add(&k->done);
}

static void test_metadata_round_trip(void)
{
    gf_client *client = connect_to(echo_addr);
    gf_call_options *opts = echo_metadata_options();
    gf_result *result = NULL;
    char *err = NULL;
    int32_t rc = gf_invoke_ex(client, ECHO, (const uint8_t *)"ping", 4, opts, &result, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    if (result) {
        check_trailers(result);
    }
    gf_result_free(result);

    /* The options are copied when a call starts: reused, then freed before the callback. */
    kept_result k;
    latch_init(&k.done);
    k.result = NULL;
    rc = gf_invoke_async_ex(client, ECHO, (const uint8_t *)"ping", 4, opts, keep_result_callback,
                            &k, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    rc = gf_invoke_async_ex(client, ECHO, (const uint8_t *)"ping", 4, opts,
                            check_result_in_callback, &k, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    gf_call_options_free(opts);
    latch_wait_or_die(&k.done, 2, "async metadata round trip");
    CHECK(k.result != NULL);
    if (k.result) {
        check_trailers(k.result);
    }
    gf_result_free(k.result);
    latch_destroy(&k.done);
    gf_close(client);
}

static void test_metadata_invalid(void)
{
    gf_call_options *opts = gf_call_options_new();
    char *err = NULL;
    static const struct {
        const char *key;
        const char *value;
        size_t len;
        const char *named; /* what the message must mention */
    } bad[] = {
        {"X-Echo-Foo", "bar", 3, "X-Echo-Foo"},
        {"x-Echo-foo", "bar", 3, "x-Echo-foo"},
        {"grpc-foo", "bar", 3, "grpc-foo"},
        {"grpc-timeout", "1S", 2, "grpc-timeout"},
        /* HTTP/1 connection headers: HTTP/2 forbids them. */
        {"connection", "close", 5, "connection"},
        {"keep-alive", "5", 1, "keep-alive"},
        {"transfer-encoding", "chunked", 7, "transfer-encoding"},
        {"upgrade", "h2c", 3, "upgrade"},
        {"te", "gzip", 4, "te"},
        {"x-echo-ctl", "a\x01" "b", 3, "x-echo-ctl"},
        {"x-echo-nl", "a\nb", 3, "x-echo-nl"},
        {"x-echo-del", "a\x7f", 2, "x-echo-del"},
        {"x-echo-high", "caf\xc3\xa9", 5, "x-echo-high"},
        {"x-echo-nul", "a\0b", 3, "x-echo-nul"},
        {"", "v", 1, "key"},
        {"x echo", "v", 1, "x echo"},
        {"x-echo:foo", "v", 1, "x-echo:foo"},
        {"x-\xc3\xa9", "v", 1, "key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t rc = gf_call_options_add_metadata(opts, bad[i].key,
                                                  (const uint8_t *)bad[i].value, bad[i].len,
                                                  &err);
        CHECKF(rc == GF_INVALID_ARGUMENT && contains(err, bad[i].named),
               "key \"%s\": got %d (%s)", bad[i].key, rc, err ? err : "(NULL)");
        gf_string_free(err);
        err = NULL;
    }
    int32_t rc = gf_call_options_add_metadata(NULL, "x-echo-a", (const uint8_t *)"b", 1, &err);
    CHECK_BAD_ARG(rc, err, "options");
    rc = gf_call_options_add_metadata(opts, NULL, (const uint8_t *)"b", 1, &err);
    CHECK_BAD_ARG(rc, err, "key");
    rc = gf_call_options_add_metadata(opts, "x-echo-a", NULL, 1, &err);
    CHECK_BAD_ARG(rc, err, "value");
    rc = gf_call_options_add_metadata(opts, "x-echo-a", NULL, 1, NULL);
    CHECK_CODE(rc, GF_INVALID_ARGUMENT, "");

    /* -bin keys take any bytes; printable ASCII is fine elsewhere. */
    rc = gf_call_options_add_metadata(opts, "x-echo-any-bin", (const uint8_t *)"\x01\n\0", 3,
                                      &err);
    CHECK_CODE(rc, GF_OK, err);
    rc = gf_call_options_add_metadata(opts, "x-echo-ok_1.2", (const uint8_t *)" ~!", 3, &err);
    CHECK_CODE(rc, GF_OK, err);

    /* Rejected entries were not added: only the two valid ones come back. */
    gf_client *client = connect_to(echo_addr);
    gf_result *result = NULL;
    rc = gf_invoke_ex(client, ECHO, NULL, 0, opts, &result, &err);
    CHECK_CODE(rc, GF_OK, err);
    gf_string_free(err);
    size_t echoed = 0;
    for (size_t i = 0; i < gf_result_trailer_count(result); i++) {
        const char *key = NULL;
        gf_result_trailer(result, i, &key, NULL, NULL);
        if (key && strncmp(key, "x-echo-", 7) == 0) {
            echoed++;
            CHECKF(strcmp(key, "x-echo-any-bin") == 0 || strcmp(key, "x-echo-ok_1.2") == 0,
                   "unexpected trailer %s", key);
        }
        if (key && strcmp(key, "x-echo-any-bin") == 0) {
            size_t len = 0;
            const uint8_t *value = NULL;
            gf_result_trailer(result, i, NULL, &value, &len);
            CHECK(len == 3 && value && memcmp(value, "\x01\n\0", 3) == 0);
        }
        if (key && strcmp(key, "x-echo-ok_1.2") == 0) {
            size_t len = 0;
            const uint8_t *value = NULL;
            gf_result_trailer(result, i, NULL, &value, &len);
            CHECKF(len == 3 && value && memcmp(value, " ~!", 3) == 0,
                   "value \" ~!\" came back as \"%.*s\"", (int)len, value ? (const char *)value : "");
        }
    }
    CHECKF(echoed == 2, "%zu x-echo- trailers, want 2", echoed);
    gf_result_free(result);
    gf_call_options_free(opts);
    gf_close(client);
}


/* ---------------------------------------------------------------------------------------- */
/* Completion queues                                                                        */

/* Waits for the queue's descriptor the way an edge-triggered event loop does (epoll with
 * EPOLLET), and takes outcomes until `want` more arrived: a lost announcement hangs here (the
 * watchdog fails the case). Each outcome lands in slots[tag]; returns how many arrived. */
typedef struct queued {
    int32_t code;
    int outcomes;
    bool response_ok;
    bool has_trailers;
} queued;

static long drain_queue_edge_triggered(gf_queue *q, queued *slots, long n, long want,
                                       const char *what)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    CHECKF(epoll_ctl(ep, EPOLL_CTL_ADD, gf_queue_fd(q), &ev) == 0, "epoll_ctl: %s",
           strerror(errno));
    long got = 0;
    gf_completion batch[64];
    int64_t deadline = gft_now_ms() + 60000;
    while (got < want) {
        size_t k;
        /* After a wake-up, poll until the queue runs short (the header's rule for
         * edge-triggered waiters). */
        do {
            k = gf_queue_poll(q, batch, 64);
            for (size_t i = 0; i < k; i++) {
                uint64_t tag = batch[i].tag;
                gf_result *r = batch[i].result;
                if (tag >= (uint64_t)n) {
                    gft_fatal("%s: unknown tag %llu", what, (unsigned long long)tag);
                }
                queued *s = &slots[tag];
                s->outcomes++;
                s->code = gf_result_code(r);
                size_t len = 0;
                const uint8_t *data = gf_result_response(r, &len);
                char want_req[32];
                int want_len = snprintf(want_req, sizeof want_req, "call-%llu",
                                        (unsigned long long)tag);
                s->response_ok = s->code != GF_OK ||
                                 (len == (size_t)want_len && memcmp(data, want_req, len) == 0);
                s->has_trailers = gf_result_trailer_count(r) > 0;
                gf_result_free(r);
                got++;
            }
        } while (k == 64);
        if (got >= want) {
            break;
        }
        int64_t left = deadline - gft_now_ms();
        if (left <= 0) {
            gft_fatal("%s: %ld of %ld outcomes within 60 s", what, got, want);
        }
        int r = epoll_wait(ep, &ev, 1, (int)left);
        CHECKF(r >= 0 || errno == EINTR, "epoll_wait: %s", strerror(errno));
    }
    close(ep);
    return got;
}

static bool fd_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Many calls on two clients (one answers, one fails every call) into one queue, plain and with
 * options: every tag comes back exactly once with its own outcome, and an empty queue leaves
 * the descriptor quiet. */
static void test_queue_many_calls_two_clients(void)
{
    gf_client *echo = connect_to(echo_addr);
    gf_client *nf = connect_to(nf_addr);
    gf_queue *q = NULL;
    char *err = NULL;
    CHECK_CODE(gf_queue_new(&q, &err), GF_OK, err);
    if (q == NULL) {
        return;
    }
    CHECK(gf_queue_fd(q) >= 0);
    CHECK(!fd_readable(gf_queue_fd(q)));
    CHECK(gf_queue_poll(q, (gf_completion[1]){{0}}, 1) == 0);
    gf_call_options *opts = echo_metadata_options();
    long n = gft_scaled(10000);
    queued *slots = calloc((size_t)n, sizeof *slots);
    for (long i = 0; i < n; i++) {
        char req[32];
        int len = snprintf(req, sizeof req, "call-%ld", i);
        int32_t rc;
        if (i % 10 == 9) {
            rc = gf_invoke_queued(nf, ECHO, (const uint8_t *)req, (size_t)len, 60000, q,
                                  (uint64_t)i, NULL, &err);
        } else if (i % 10 == 8) {
            rc = gf_invoke_queued_ex(echo, ECHO, (const uint8_t *)req, (size_t)len, opts, q,
                                     (uint64_t)i, NULL, &err);
        } else {
            rc = gf_invoke_queued(echo, ECHO, (const uint8_t *)req, (size_t)len, 60000, q,
                                  (uint64_t)i, NULL, &err);
        }
        if (rc != GF_OK) {
            gft_fatal("gf_invoke_queued #%ld = %d: %s", i, rc, err ? err : "");
        }
    }
    gf_call_options_free(opts);
    drain_queue_edge_triggered(q, slots, n, n, "10,000 queued calls");
    long once = 0, right = 0;
    for (long i = 0; i < n; i++) {
        once += slots[i].outcomes == 1;
        int32_t want = i % 10 == 9 ? GF_NOT_FOUND : GF_OK;
        /* Only the calls with options keep response metadata (the echoed x-echo- trailers). */
        bool trailers_ok = slots[i].code != GF_OK || slots[i].has_trailers == (i % 10 == 8);
        right += slots[i].code == want && slots[i].response_ok && trailers_ok;
    }
    CHECKF(once == n, "%ld of %ld tags came back exactly once", once, n);
    CHECKF(right == n, "%ld of %ld outcomes right", right, n);
    CHECK(gf_queue_poll(q, (gf_completion[1]){{0}}, 1) == 0);
    /* Quiet once the queue is empty, after at most a stray announcement: a pusher writes its
     * byte after it released the queue, so the last byte may land after the last take. */
    for (int i = 0; i < 100 && fd_readable(gf_queue_fd(q)); i++) {
        CHECK(gf_queue_poll(q, (gf_completion[1]){{0}}, 1) == 0);
        gft_sleep_ms(10);
    }
    CHECKF(!fd_readable(gf_queue_fd(q)), "the descriptor is quiet once the queue is empty");
    free(slots);
    gf_queue_free(q);
    gf_close(echo);
    gf_close(nf);
}

/* Cancelled calls, and calls of a closed client, come back CANCELLED through the queue. */
static void test_queue_cancel_and_close(void)
{
    gf_client *client = connect_to(stall_addr);
    gf_queue *q = NULL;
    CHECK_CODE(gf_queue_new(&q, NULL), GF_OK, "");
    if (q == NULL) {
        return;
    }
    enum { N = 20 };
    gf_call *calls[N] = {0};
    queued slots[N];
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < N; i++) {
        char *err = NULL;
        int32_t rc = gf_invoke_queued(client, ECHO, (const uint8_t *)"x", 1, 0, q, (uint64_t)i,
                                      &calls[i], &err);
        CHECK_CODE(rc, GF_OK, err);
        gf_string_free(err);
    }
    for (int i = 0; i < N / 2; i++) {
        gf_call_cancel(calls[i]);
    }
    drain_queue_edge_triggered(q, slots, N, N / 2, "cancelled calls");
    gf_close(client);
    drain_queue_edge_triggered(q, slots, N, N - N / 2, "calls of a closed client");
    for (int i = 0; i < N; i++) {
        CHECKF(slots[i].outcomes == 1 && slots[i].code == GF_CANCELLED,
               "call %d: %d outcomes, code %d", i, slots[i].outcomes, slots[i].code);
        gf_call_free(calls[i]);
    }
    gf_queue_free(q);
}

/* A queue freed with calls in flight: the calls still end (freeing their outcomes), nothing
 * crashes or leaks (the memory checker run sees to that). */
static void test_queue_free_with_calls_in_flight(void)
{
    gf_client *client = connect_to(slow_addr);
    gf_client *fast = connect_to(echo_addr);
    gf_queue *q = NULL;
    CHECK_CODE(gf_queue_new(&q, NULL), GF_OK, "");
    if (q == NULL) {
        return;
    }
    for (int i = 0; i < 10; i++) {
        CHECK_CODE(gf_invoke_queued(client, ECHO, (const uint8_t *)"x", 1, 0, q, (uint64_t)i,
                                    NULL, NULL),
                   GF_OK, "");
        CHECK_CODE(gf_invoke_queued(fast, ECHO, (const uint8_t *)"y", 1, 0, q, 100 + (uint64_t)i,
                                    NULL, NULL),
                   GF_OK, "");
    }
    /* The fast calls' outcomes arrive and wait in the queue. */
    struct pollfd p = {.fd = gf_queue_fd(q), .events = POLLIN};
    CHECKF(poll(&p, 1, 30000) == 1, "no outcome within 30 s");
    gf_queue_free(q);
    gft_sleep_ms(SLOW_SERVER_MS + 500); /* the slow calls end into the freed queue */
    gf_close(client);
    gf_close(fast);
}

static void test_queue_bad_arguments(void)
{
    gf_client *client = connect_to(echo_addr);
    gf_queue *q = NULL;
    char *err = NULL;
    CHECK_BAD_ARG(gf_queue_new(NULL, &err), err, "queue_out");
    CHECK(gf_queue_fd(NULL) == -1);
    gf_completion c[1];
    CHECK(gf_queue_poll(NULL, c, 1) == 0);
    gf_queue_free(NULL);
    CHECK_CODE(gf_queue_new(&q, &err), GF_OK, err);
    CHECK(err == NULL);
    CHECK(gf_queue_poll(q, NULL, 1) == 0);
    CHECK(gf_queue_poll(q, c, 0) == 0);
    gf_call *sentinel = (gf_call *)(uintptr_t)0x1;
    gf_call *call = sentinel;
    int32_t rc = gf_invoke_queued(client, ECHO, (const uint8_t *)"x", 1, 0, NULL, 1, &call, &err);
    CHECK_BAD_ARG(rc, err, "queue");
    CHECKF(call == sentinel, "call_out is untouched on failure");
    rc = gf_invoke_queued_ex(client, ECHO, (const uint8_t *)"x", 1, NULL, NULL, 1, &call, &err);
    CHECK_BAD_ARG(rc, err, "queue");
    rc = gf_invoke_queued(client, "no-slash", (const uint8_t *)"x", 1, 0, q, 1, &call, &err);
    CHECK_BAD_ARG(rc, err, "method");
    rc = gf_invoke_queued(NULL, ECHO, (const uint8_t *)"x", 1, 0, q, 1, &call, &err);
    CHECK_BAD_ARG(rc, err, "client");
    rc = gf_invoke_queued(client, ECHO, NULL, 5, 0, q, 1, &call, &err);
    CHECK_BAD_ARG(rc, err, "request");
    CHECKF(call == sentinel, "call_out is untouched on failure");
    /* A rejected call puts nothing in the queue. */
    CHECK(gf_queue_poll(q, c, 1) == 0);
    CHECK(!fd_readable(gf_queue_fd(q)));
    /* NULL options are the defaults; a successful outcome without options has no trailers. */
    rc = gf_invoke_queued_ex(client, ECHO, (const uint8_t *)"call-7", 6, NULL, q, 7, NULL, &err);
    CHECK_CODE(rc, GF_OK, err);
    queued slots[8];
    memset(slots, 0, sizeof slots);
    drain_queue_edge_triggered(q, slots, 8, 1, "a call with NULL options");
    CHECK(slots[7].outcomes == 1 && slots[7].code == GF_OK && slots[7].response_ok);
    gf_queue_free(q);
    gf_close(client);
}

static void *cancel_after_100ms(void *arg)
{
    gft_sleep_ms(100);
    gf_call_cancel(arg);
    return NULL;
}

/* A thread that waits in gf_queue_wait for its queued call, as the Go binding's lone caller
 * does: each wait returns that call's outcome; another thread's gf_call_cancel ends a wait for
 * a slow call; bad arguments are refused without waiting. */
static void test_queue_wait(void)
{
    gf_client *echo = connect_to(echo_addr);
    gf_client *slow = connect_to(slow_addr);
    gf_queue *q = NULL;
    char *err = NULL;
    CHECK_CODE(gf_queue_new(&q, &err), GF_OK, err);
    if (q == NULL) {
        return;
    }
    long n = gft_scaled(500), right = 0;
    for (long i = 0; i < n; i++) {
        char req[32];
        int len = snprintf(req, sizeof req, "wait-%ld", i);
        int32_t rc = gf_invoke_queued(echo, ECHO, (const uint8_t *)req, (size_t)len, 10000, q,
                                      (uint64_t)i, NULL, &err);
        if (rc != GF_OK) {
            gft_fatal("gf_invoke_queued #%ld = %d: %s", i, rc, err ? err : "");
        }
        gf_completion c[4];
        size_t taken = 0;
        CHECK_CODE(gf_queue_wait(q, c, 4, &taken, &err), GF_OK, err);
        size_t got = 0;
        const uint8_t *resp = taken == 1 ? gf_result_response(c[0].result, &got) : NULL;
        right += taken == 1 && c[0].tag == (uint64_t)i && gf_result_code(c[0].result) == GF_OK &&
                 got == (size_t)len && memcmp(resp, req, got) == 0;
        for (size_t k = 0; k < taken; k++) {
            gf_result_free(c[k].result);
        }
    }
    CHECKF(right == n, "%ld of %ld waits returned their own call's outcome", right, n);
    /* The descriptor may be readable just after outcomes were taken (a pusher's byte landing
     * after the waiter emptied the pipe, as gf_queue_fd says): then a poll finds nothing, and
     * leaves it not readable. */
    if (fd_readable(gf_queue_fd(q))) {
        gf_completion none[1];
        CHECK(gf_queue_poll(q, none, 1) == 0);
    }
    CHECK(!fd_readable(gf_queue_fd(q)));

    gf_call *call = NULL;
    CHECK_CODE(gf_invoke_queued(slow, ECHO, (const uint8_t *)"x", 1, 60000, q, 7, &call, &err),
               GF_OK, err);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, cancel_after_100ms, call) == 0);
    int64_t start = gft_now_ms();
    gf_completion c;
    size_t taken = 0;
    CHECK_CODE(gf_queue_wait(q, &c, 1, &taken, &err), GF_OK, err);
    int64_t took = gft_now_ms() - start;
    pthread_join(t, NULL);
    CHECK(taken == 1 && c.tag == 7);
    if (taken == 1) {
        CHECK_CODE(gf_result_code(c.result), GF_CANCELLED, gf_result_message(c.result));
        gf_result_free(c.result);
    }
    CHECKF(took < SLOW_SERVER_MS, "the cancelled wait took %lld ms", (long long)took);
    gf_call_free(call);

    taken = 99;
    CHECK_BAD_ARG(gf_queue_wait(NULL, &c, 1, &taken, &err), err, "queue");
    CHECK_BAD_ARG(gf_queue_wait(q, NULL, 1, &taken, &err), err, "out");
    CHECK_BAD_ARG(gf_queue_wait(q, &c, 0, &taken, &err), err, "max");
    CHECK_BAD_ARG(gf_queue_wait(q, &c, 1, NULL, &err), err, "taken_out");
    CHECKF(taken == 99, "taken_out is untouched on failure");
    gf_queue_free(q);
    gf_close(echo);
    gf_close(slow);
}

/* gf_set_worker_threads before the runtime starts (main asked for 5) takes effect; afterwards
 * it is refused, as are 0 and absurd counts. */
static int requested_workers_rc = -1;

static void test_worker_threads(void)
{
    gf_client *client = connect_to(echo_addr);
    gf_bytes resp = {0};
    CHECK_CODE(gf_invoke(client, ECHO, (const uint8_t *)"x", 1, 10000, &resp, NULL), GF_OK, "");
    gf_bytes_free(&resp);
    CHECK_CODE(requested_workers_rc, GF_OK, "gf_set_worker_threads(5) before the first client");
    if (getenv("GF_WORKER_THREADS") == NULL) {
        char *json = NULL;
        CHECK_CODE(gf_client_stats(client, &json, NULL), GF_OK, "");
        CHECKF(contains(json, "\"worker_threads\":5"), "stats: %s", json ? json : "(NULL)");
        gf_string_free(json);
    }
    char *err = NULL;
    CHECK_CODE(gf_set_worker_threads(2, &err), GF_FAILED_PRECONDITION, err);
    CHECKF(contains(err, "already runs"), "message: %s", err ? err : "(NULL)");
    gf_string_free(err);
    err = NULL;
    CHECK_BAD_ARG(gf_set_worker_threads(0, &err), err, "worker_threads");
    CHECK_BAD_ARG(gf_set_worker_threads(100000, &err), err, "worker_threads");
    gf_close(client);
}

/* TLS (issue 17): a call over TLS to a gf-testserver serving the certificates run.sh made
 * (GF_TEST_CERTS), an unknown CA failing UNAVAILABLE with rustls' reason, and a missing file
 * failing gf_connect naming the field. */
static void test_tls(void)
{
    const char *certs = getenv("GF_TEST_CERTS");
    CHECKF(certs != NULL, "GF_TEST_CERTS is not set: run through tests/c/run.sh");
    if (certs == NULL) {
        return;
    }
    char cert[600], key[600], options[1400], target[300];
    snprintf(cert, sizeof cert, "%s/server.pem", certs);
    snprintf(key, sizeof key, "%s/server.key", certs);
    const char *const tls_args[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    const gft_server *secure = gft_start_server("secure", tls_args);
    snprintf(target, sizeof target, "static:///%s", secure->addr);

    gf_client *client = NULL;
    char *err = NULL;
    snprintf(options, sizeof options, "{\"tls\": {\"ca_file\": \"%s/ca.pem\"}}", certs);
    CHECK_CODE(gf_connect(target, options, &client, &err), GF_OK, err);
    check_echo(client, 1000);
    gf_close(client);

    snprintf(options, sizeof options,
             "{\"tls\": {\"ca_file\": \"%s/other-ca.pem\"}, \"connect_backoff\": "
             "{\"base_delay_ms\": 50}}",
             certs);
    client = NULL;
    CHECK_CODE(gf_connect(target, options, &client, &err), GF_OK, err);
    gf_bytes resp = {0};
    CHECK_CODE(gf_invoke(client, ECHO, (const uint8_t *)"x", 1, 3000, &resp, &err),
               GF_UNAVAILABLE, err);
    CHECKF(contains(err, "tls handshake with") && contains(err, "UnknownIssuer"), "message: %s",
           err ? err : "(NULL)");
    gf_string_free(err);
    err = NULL;
    gf_close(client);

    snprintf(options, sizeof options, "{\"tls\": {\"ca_file\": \"%s/missing.pem\"}}", certs);
    client = NULL;
    CHECK_BAD_ARG(gf_connect(target, options, &client, &err), err, "tls.ca_file: cannot read");
    CHECKF(client == NULL, "client_out written on failure");
}

/* Log records to a callback (issue 20): the DEBUG records of a failing call's connection
 * attempts arrive on the log thread; a callback may call the library, even
 * gf_set_log_callback; once gf_set_log_callback returns, the old callback is never called. */
typedef struct log_sink {
    pthread_mutex_t lock;
    char want[64];
    int seen;          /* records naming `want` */
    int levels_ok;     /* every record had a level in range and a grpc_failover target */
    int calls_after;   /* calls after gf_set_log_callback replaced this sink */
    int replaced;
    int reset_inside;  /* the callback calls gf_set_log_callback itself (NULL: stderr) */
    int reset_rc;
    int level_rc;
    pthread_t caller;
    int on_caller_thread;
} log_sink;

static void log_record(void *user_data, int32_t level, const char *target, const char *message)
{
    log_sink *s = user_data;
    pthread_mutex_lock(&s->lock);
    if (s->replaced) {
        s->calls_after++;
    }
    /* Records of the TLS stack (target "rustls::...") may come too; ours name the library. */
    if (level < GF_LOG_ERROR || level > GF_LOG_TRACE ||
        (strstr(message, s->want) != NULL && strncmp(target, "grpc_failover::", 15) != 0)) {
        s->levels_ok = 0;
    }
    if (pthread_equal(pthread_self(), s->caller)) {
        s->on_caller_thread = 1;
    }
    int first = 0;
    if (strstr(message, s->want) != NULL) {
        s->seen++;
        first = s->seen == 1;
    }
    pthread_mutex_unlock(&s->lock);
    /* Library calls from inside the callback: neither may wait for this very callback. Once
     * only: the main thread lowers the level later, and this must not raise it again. */
    if (first) {
        s->level_rc = gf_set_log_level(GF_LOG_DEBUG, NULL);
    }
    if (first && s->reset_inside) {
        int rc = gf_set_log_callback(GF_LOG_WARN, NULL, NULL, NULL);
        pthread_mutex_lock(&s->lock);
        s->reset_rc = rc;
        s->replaced = 1;
        pthread_mutex_unlock(&s->lock);
    }
}

static int log_seen(log_sink *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->seen;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void failing_call_to(const char *addr)
{
    gf_client *client = connect_to(addr);
    gf_bytes resp = {0};
    char *err = NULL;
    int32_t rc = gf_invoke(client, ECHO, NULL, 0, 300, &resp, &err);
    CHECKF(rc == GF_UNAVAILABLE || rc == GF_DEADLINE_EXCEEDED, "call to %s: %s %s", addr,
           gft_code_name(rc), err ? err : "");
    gf_string_free(err);
    gf_close(client);
}

static void test_log_callback(void)
{
    char *err = NULL;
    CHECK_BAD_ARG(gf_set_log_callback(6, log_record, NULL, &err), err, "not a log level");
    CHECK_BAD_ARG(gf_set_log_callback(-1, NULL, NULL, &err), err, "not a log level");
    CHECK_BAD_ARG(gf_set_log_level(6, &err), err, "not a log level");

    log_sink s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    s.levels_ok = 1;
    s.caller = pthread_self();
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", gft_closed_port());
    snprintf(s.want, sizeof s.want, "subchannel %s: connecting", addr);
    CHECK_CODE(gf_set_log_callback(GF_LOG_DEBUG, log_record, &s, &err), GF_OK, err);
    failing_call_to(addr);
    int64_t deadline = gft_now_ms() + gft_scaled(10000);
    while (log_seen(&s) == 0 && gft_now_ms() < deadline) {
        gft_sleep_ms(10);
    }
    CHECKF(log_seen(&s) > 0, "no record \"%s\" reached the callback", s.want);
    CHECK_CODE(s.level_rc, GF_OK, "gf_set_log_level inside the callback");
    /* Back to stderr: from here on the callback must not run, and s may go. */
    CHECK_CODE(gf_set_log_callback(GF_LOG_WARN, NULL, NULL, &err), GF_OK, err);
    pthread_mutex_lock(&s.lock);
    s.replaced = 1;
    pthread_mutex_unlock(&s.lock);
    failing_call_to(addr);
    gft_sleep_ms(100);
    pthread_mutex_lock(&s.lock);
    CHECKF(s.calls_after == 0, "%d calls of a replaced callback", s.calls_after);
    CHECKF(s.levels_ok, "a record with a bad level or target");
    CHECKF(!s.on_caller_thread, "a record was delivered on the thread that logged");
    pthread_mutex_unlock(&s.lock);

    /* A callback that replaces itself from inside returns at once (it cannot wait for its own
     * call to end). */
    log_sink r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    r.levels_ok = 1;
    r.reset_inside = 1;
    r.reset_rc = -1;
    r.caller = pthread_self();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", gft_closed_port());
    snprintf(r.want, sizeof r.want, "subchannel %s: connecting", addr);
    CHECK_CODE(gf_set_log_callback(GF_LOG_DEBUG, log_record, &r, &err), GF_OK, err);
    failing_call_to(addr);
    deadline = gft_now_ms() + gft_scaled(10000);
    int done = 0;
    while (!done && gft_now_ms() < deadline) {
        pthread_mutex_lock(&r.lock);
        done = r.reset_rc != -1;
        pthread_mutex_unlock(&r.lock);
        gft_sleep_ms(10);
    }
    CHECK_CODE(r.reset_rc, GF_OK, "gf_set_log_callback inside the callback");
    /* Waits for the callback's own call to return before r goes out of scope. */
    CHECK_CODE(gf_set_log_callback(GF_LOG_WARN, NULL, NULL, &err), GF_OK, err);
    pthread_mutex_destroy(&r.lock);
    pthread_mutex_destroy(&s.lock);
}

/* gf_client_metrics (issue 21): the Prometheus text counts the calls; bad arguments refused. */
static void test_client_metrics(void)
{
    gf_client *client = connect_to(echo_addr);
    for (int i = 0; i < 3; i++) {
        gf_bytes resp = {0};
        CHECK_CODE(gf_invoke(client, ECHO, (const uint8_t *)"abcd", 4, 10000, &resp, NULL), GF_OK,
                   "");
        gf_bytes_free(&resp);
    }
    char *text = NULL, *err = NULL;
    CHECK_CODE(gf_client_metrics(client, &text, &err), GF_OK, err);
    char want[512];
    snprintf(want, sizeof want,
             "grpc_client_call_duration_seconds_count{grpc_method=\"other\",grpc_status=\"OK\","
             "grpc_target=\"static:///%s\"} 3\n",
             echo_addr);
    CHECKF(contains(text, want), "no line %s in:\n%s", want, text ? text : "(NULL)");
    snprintf(want, sizeof want,
             "grpc_client_attempt_sent_total_compressed_message_size_bytes_sum{grpc_method="
             "\"other\",grpc_status=\"OK\",grpc_target=\"static:///%s\"} 12\n",
             echo_addr);
    CHECKF(contains(text, want), "no line %s", want);
    gf_string_free(text);
    CHECK_BAD_ARG(gf_client_metrics(client, NULL, &err), err, "text_out");
    CHECK_BAD_ARG(gf_client_metrics(NULL, &text, &err), err, "client");
    gf_client_shutdown(client);
    text = NULL;
    CHECK_CODE(gf_client_metrics(client, &text, &err), GF_FAILED_PRECONDITION, err);
    CHECKF(text == NULL, "text_out written on failure");
    gf_string_free(err);
    gf_close(client);
}

int main(int argc, char **argv)
{
    gft_init();
    /* Before anything starts the library's runtime (see test_worker_threads). */
    requested_workers_rc = gf_set_worker_threads(5, NULL);
    const char *const nf_args[] = {"--fail-rate", "1", "--fail-code", "5", NULL};
    const char *const slow_args[] = {"--delay-ms", "2000", NULL};
    const char *const stall_args[] = {"--delay-ms", "600000", NULL};
    echo_addr = gft_start_server("echo", NULL)->addr;
    nf_addr = gft_start_server("nf", nf_args)->addr;
    slow_addr = gft_start_server("slow", slow_args)->addr;
    stall_addr = gft_start_server("stall", stall_args)->addr;
    printf("grpc-failover %s, C tests, GF_TEST_SCALE=%g\n", gf_version(), g_gft_scale);

    gft_run("version_and_abi", test_version_and_abi, argc, argv);
    gft_run("null_is_a_no_op", test_null_is_a_no_op, argc, argv);
    gft_run("echo_0_1_1MiB", test_echo_sizes, argc, argv);
    gft_run("status_pass_through", test_status_pass_through, argc, argv);
    gft_run("deadline_against_a_slow_server", test_deadline_against_a_slow_server, argc, argv);
    gft_run("bad_arguments", test_bad_arguments, argc, argv);
    gft_run("method_with_uri_syntax", test_method_with_uri_syntax, argc, argv);
    gft_run("threads_32x200", test_threads_32_by_200, argc, argv);
    gft_run("shutdown_racing_calls", test_shutdown_racing_calls, argc, argv);
    gft_run("close_with_sync_calls_in_flight", test_close_with_sync_calls_in_flight, argc,
            argv);
    gft_run("all_addresses_down", test_all_addresses_down, argc, argv);
    gft_run("wait_for_ready_until_the_server_starts", test_wait_for_ready_until_the_server_starts,
            argc, argv);
    gft_run("async_10000_in_flight", test_async_10000_in_flight, argc, argv);
    gft_run("async_burst_of_40000_small_calls", test_async_burst_of_small_calls, argc, argv);
    gft_run("async_cancel_races", test_async_cancel_races, argc, argv);
    gft_run("async_callback_starts_calls", test_async_callback_starts_calls, argc, argv);
    gft_run("async_sync_call_in_callback_fails", test_async_sync_call_in_callback_fails, argc,
            argv);
    gft_run("async_close_right_after_start", test_async_close_right_after_start, argc, argv);
    gft_run("async_close_with_calls_on_the_wire", test_async_close_with_calls_on_the_wire, argc,
            argv);
    gft_run("async_close_inside_callback", test_async_close_inside_callback, argc, argv);
    gft_run("async_nonblocking_callbacks", test_async_nonblocking_callbacks, argc, argv);
    gft_run("async_close_racing_connection_setup", test_async_close_racing_connection_setup,
            argc, argv);
    gft_run("mass_cancel_on_a_stalled_server", test_mass_cancel_on_a_stalled_server, argc, argv);
    gft_run("server_closing_connection_raises_no_sigpipe",
            test_server_closing_connection_raises_no_sigpipe, argc, argv);
    gft_run("metadata_round_trip", test_metadata_round_trip, argc, argv);
    gft_run("metadata_invalid", test_metadata_invalid, argc, argv);
    gft_run("queue_many_calls_two_clients", test_queue_many_calls_two_clients, argc, argv);
    gft_run("queue_cancel_and_close", test_queue_cancel_and_close, argc, argv);
    gft_run("queue_free_with_calls_in_flight", test_queue_free_with_calls_in_flight, argc, argv);
    gft_run("queue_bad_arguments", test_queue_bad_arguments, argc, argv);
    gft_run("queue_wait", test_queue_wait, argc, argv);
    gft_run("worker_threads", test_worker_threads, argc, argv);
    gft_run("tls", test_tls, argc, argv);
    gft_run("log_callback", test_log_callback, argc, argv);
    gft_run("client_metrics", test_client_metrics, argc, argv);
    return gft_finish("test_api_c");
}
