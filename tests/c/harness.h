/*
 * harness.h: what the C and the C++ test programs share. Header-only (static functions), so
 * each test program is a single translation unit that includes this header first.
 *
 *  - gf-testserver processes: started with fork/exec, their `listening <addr>` line parsed,
 *    killed by PID at exit, on a fatal signal and when the per-case watchdog fires.
 *  - A per-case watchdog (alarm): a hung case is reported as FAIL instead of hanging the run.
 *  - CHECK/CHECKF: thread-safe, count failures of the current case; gft_run prints PASS/FAIL.
 *  - SIGPIPE is counted, not ignored: a library must never raise it (with the default
 *    disposition it kills the host program), so a case during which it arrives fails.
 *  - GF_TEST_SCALE (a factor, default 1) shrinks the heavy loops, e.g. under valgrind;
 *    GF_TEST_TIMEOUT_S (default 60) is the watchdog's limit per case.
 *  - Command-line arguments select cases by substring of their names.
 */
#ifndef GF_TEST_HARNESS_H
#define GF_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc_failover.h"

#define GFT_MAX_SERVERS 16
#define GFT_MAX_SHOWN 8 /* failed checks printed per case */

typedef struct gft_server {
    pid_t pid;
    int out_fd; /* read end of the server's stdout; kept open so it never gets SIGPIPE */
    char name[32];
    char addr[64]; /* "127.0.0.1:PORT" */
} gft_server;

static gft_server g_gft_servers[GFT_MAX_SERVERS];
static volatile sig_atomic_t g_gft_nservers;
static const char *volatile g_gft_case = "(setup)";
static int g_gft_case_failures;
static int g_gft_cases_passed;
static int g_gft_cases_failed;
static volatile sig_atomic_t g_gft_sigpipes;
static unsigned g_gft_timeout_s = 60;
static double g_gft_scale = 1.0;

/* Async-signal-safe: kills every server still running. */
static void gft_kill_servers_now(void)
{
    for (int i = 0; i < g_gft_nservers; i++) {
        if (g_gft_servers[i].pid > 0) {
            kill(g_gft_servers[i].pid, SIGKILL);
        }
    }
}

static void gft_write_str(const char *s)
{
    ssize_t r = write(1, s, strlen(s));
    (void)r;
}

static void gft_on_fatal_signal(int sig)
{
    gft_kill_servers_now();
    if (sig == SIGALRM) {
        gft_write_str("FAIL ");
        gft_write_str(g_gft_case);
        gft_write_str(": watchdog: the case did not finish within GF_TEST_TIMEOUT_S (hung?)\n");
        _exit(1);
    }
    gft_write_str("FAIL ");
    gft_write_str(g_gft_case);
    gft_write_str(": fatal signal\n");
    signal(sig, SIG_DFL);
    raise(sig);
}

static void gft_on_sigpipe(int sig)
{
    (void)sig;
    g_gft_sigpipes = g_gft_sigpipes + 1;
}

static void gft_stop_servers(void)
{
    for (int i = 0; i < g_gft_nservers; i++) {
        gft_server *s = &g_gft_servers[i];
        if (s->pid > 0) {
            kill(s->pid, SIGKILL);
            while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {
            }
            s->pid = 0;
        }
        if (s->out_fd >= 0) {
            close(s->out_fd);
            s->out_fd = -1;
        }
    }
}

static int64_t gft_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void gft_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static long gft_scaled(long n)
{
    long v = (long)((double)n * g_gft_scale + 0.5);
    return v < 1 ? 1 : v;
}

static const char *gft_env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static void gft_init(void)
{
    double scale = atof(gft_env_or("GF_TEST_SCALE", "1"));
    long timeout = atol(gft_env_or("GF_TEST_TIMEOUT_S", "60"));
    if (scale > 0) {
        g_gft_scale = scale;
    }
    if (timeout > 0) {
        g_gft_timeout_s = (unsigned)timeout;
    }
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        signal(sigs[i], gft_on_fatal_signal);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = gft_on_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    atexit(gft_stop_servers);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* A check failed: report it (one write per failure, so threads do not interleave). */
static void gft_fail_at(const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The first few failures of a case say what is wrong; hundreds of copies do not. */
    if (__atomic_add_fetch(&g_gft_case_failures, 1, __ATOMIC_SEQ_CST) <= GFT_MAX_SHOWN) {
        fprintf(stdout, "  check failed in %s at %s:%d: %s%s%s\n", g_gft_case, file, line,
                expr, msg[0] ? ": " : "", msg);
    }
}

#define CHECKF(cond, ...)                                                                    \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            gft_fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__);                             \
        }                                                                                    \
    } while (0)
#define CHECK(cond) CHECKF(cond, "%s", "")

/* Gives up on the current case: stops the process (servers are killed at exit). For waits
 * that must end, where carrying on would leave library threads writing into a dead frame. */
static void gft_fatal(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stdout, "FAIL %s: fatal: %s\n", g_gft_case, msg);
    fflush(NULL);
    gft_kill_servers_now();
    _exit(1);
}

/* Starts `$GF_TESTSERVER --listen LISTEN --name NAME [extra...]` (extra is NULL-terminated)
 * and waits for its `listening <addr>` line. Fatal on failure. */
static const gft_server *gft_start_server_at(const char *name, const char *listen,
                                             const char *const *extra)
{
    const char *path = gft_env_or("GF_TESTSERVER", "target/release/gf-testserver");
    if (g_gft_nservers >= GFT_MAX_SERVERS) {
        gft_fatal("too many servers");
    }
    const char *argv[32];
    int argc = 0;
    argv[argc++] = path;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    argv[argc++] = "--name";
    argv[argc++] = name;
    for (int i = 0; extra && extra[i] && argc < 31; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        gft_fatal("pipe2: %s", strerror(errno));
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        gft_fatal("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        /* Only async-signal-safe calls here: the parent has library threads. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        dup2(fds[1], 1);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);

    gft_server *s = &g_gft_servers[g_gft_nservers];
    memset(s, 0, sizeof *s);
    s->pid = pid;
    s->out_fd = fds[0];
    snprintf(s->name, sizeof s->name, "%s", name);
    g_gft_nservers = g_gft_nservers + 1;

    char line[256];
    size_t len = 0;
    int64_t deadline = gft_now_ms() + 15000;
    while (len < sizeof line - 1 && (len == 0 || line[len - 1] != '\n')) {
        struct pollfd p;
        p.fd = fds[0];
        p.events = POLLIN;
        p.revents = 0;
        int64_t left = deadline - gft_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            gft_fatal("%s (%s) printed no `listening` line within 15 s", path, name);
        }
        ssize_t n = read(fds[0], line + len, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            gft_fatal("%s (%s) exited before printing `listening <addr>`", path, name);
        }
        len++;
    }
    line[len] = '\0';
    if (sscanf(line, "listening %63s", s->addr) != 1) {
        gft_fatal("unexpected first line from %s: %s", path, line);
    }
    return s;
}

/* Starts a server on a port the system picks. */
static const gft_server *gft_start_server(const char *name, const char *const *extra)
{
    return gft_start_server_at(name, "127.0.0.1:0", extra);
}

/* SIGKILLs one server (its sockets close at once, with RST for unread data) and reaps it. */
/* (inline: not every test program kills a server, and unused statics warn.) */
static inline void gft_kill_server(const gft_server *server)
{
    gft_server *s = (gft_server *)server;
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        s->pid = 0;
    }
}

/* A loopback port that nothing listens on (bound, then closed). */
static inline int gft_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        gft_fatal("cannot pick a free port: %s", strerror(errno));
    }
    close(fd);
    return ntohs(a.sin_port);
}

static inline const char *gft_code_name(int code)
{
    static const char *const names[] = {
        "OK",        "CANCELLED",           "UNKNOWN",       "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",   "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",        "UNAVAILABLE",   "DATA_LOSS",
        "UNAUTHENTICATED"};
    return code >= 0 && code <= 16 ? names[code] : "(not a gRPC code)";
}

/* CHECK that a call returned `want`, showing both codes by name and the message. */
#define CHECK_CODE(got, want, message)                                                        \
    CHECKF((got) == (want), "got %d %s, want %d %s (message: %s)", (int)(got),               \
           gft_code_name((int)(got)), (int)(want), gft_code_name((int)(want)),                \
           (message) ? (const char *)(message) : "(none)")

/* The client's "calls" counter: calls that got past argument checking into the library. */
static inline long gft_calls_started(gf_client *client)
{
    char *json = NULL;
    char *err = NULL;
    long calls = -1;
    if (gf_client_stats(client, &json, &err) == GF_OK) {
        const char *p = strstr(json, "\"calls\":");
        if (p) {
            calls = strtol(p + strlen("\"calls\":"), NULL, 10);
        }
    }
    gf_string_free(json);
    gf_string_free(err);
    return calls;
}

/* Waits until at least `n` calls are inside the library (so it is safe to gf_close). */
static inline void gft_wait_calls_started(gf_client *client, long n)
{
    int64_t deadline = gft_now_ms() + (int64_t)g_gft_timeout_s * 1000 / 2;
    while (gft_calls_started(client) < n) {
        if (gft_now_ms() > deadline) {
            gft_fatal("only %ld of %ld calls started", gft_calls_started(client), n);
        }
        gft_sleep_ms(5);
    }
}

typedef void (*gft_case_fn)(void);

static int gft_selected(const char *name, int argc, char **argv)
{
    if (argc <= 1) {
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strstr(name, argv[i])) {
            return 1;
        }
    }
    return 0;
}

/* Runs one case under the watchdog and prints PASS or FAIL with its duration. */
static void gft_run(const char *name, gft_case_fn fn, int argc, char **argv)
{
    if (!gft_selected(name, argc, argv)) {
        return;
    }
    g_gft_case = name;
    __atomic_store_n(&g_gft_case_failures, 0, __ATOMIC_SEQ_CST);
    int64_t start = gft_now_ms();
    sig_atomic_t sigpipes = g_gft_sigpipes;
    alarm(g_gft_timeout_s);
    fn();
    alarm(0);
    if (g_gft_sigpipes != sigpipes) {
        printf("  SIGPIPE raised %d time(s) during %s: the library wrote to a closed socket "
               "without MSG_NOSIGNAL; a program with the default SIGPIPE disposition dies\n",
               (int)(g_gft_sigpipes - sigpipes), name);
        __atomic_add_fetch(&g_gft_case_failures, 1, __ATOMIC_SEQ_CST);
    }
    int failures = __atomic_load_n(&g_gft_case_failures, __ATOMIC_SEQ_CST);
    long ms = (long)(gft_now_ms() - start);
    if (failures > GFT_MAX_SHOWN) {
        printf("  (%d more failed checks not shown)\n", failures - GFT_MAX_SHOWN);
    }
    if (failures == 0) {
        printf("PASS %s (%ld ms)\n", name, ms);
        g_gft_cases_passed++;
    } else {
        printf("FAIL %s (%d failed checks, %ld ms)\n", name, failures, ms);
        g_gft_cases_failed++;
    }
    fflush(stdout);
    g_gft_case = "(between cases)";
}

/* Prints the summary, stops the servers; returns the process exit status. */
static int gft_finish(const char *program)
{
    gft_stop_servers();
    if (g_gft_sigpipes > 0) {
        printf("%s: SIGPIPE was raised %d time(s) in all\n", program, (int)g_gft_sigpipes);
    }
    printf("%s: %d passed, %d failed\n", program, g_gft_cases_passed, g_gft_cases_failed);
    fflush(stdout);
    return g_gft_cases_failed == 0 && g_gft_cases_passed > 0 ? 0 : 1;
}

#endif /* GF_TEST_HARNESS_H */
