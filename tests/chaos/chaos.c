/*
 * Chaos test: three gf-testservers, one killed or restarted at random every 1-3 s for 30 s,
 * while one client keeps 32 async calls in flight with the reference retry policy and outlier
 * detection. Asserts: zero caller-visible errors, every call accounted for (sent = succeeded +
 * failed), and the process's thread and file-descriptor counts back to where they started
 * after gf_close.
 *
 *   chaos <gf-testserver path> [seconds]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc_failover.h"

#define INSTANCES 3
#define IN_FLIGHT 32

static const char *server_bin;
static pid_t pids[INSTANCES];
static char addrs[INSTANCES][128];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Starts instance i listening on `listen`; fills addrs[i] from its "listening" line. */
static void start_instance(int i, const char *listen) {
    int fds[2];
    if (pipe(fds) != 0) abort();
    char name[16];
    snprintf(name, sizeof name, "i%d", i);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(server_bin, server_bin, "--listen", listen, "--name", name, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[128] = {0};
    if (!fgets(line, sizeof line, f) || strncmp(line, "listening ", 10) != 0) {
        fprintf(stderr, "FAIL: instance %d did not start\n", i);
        exit(1);
    }
    line[strcspn(line, "\n")] = 0;
    snprintf(addrs[i], sizeof addrs[i], "%s", line + 10);
    fclose(f);
    pids[i] = pid;
}

static void kill_instance(int i) {
    kill(pids[i], SIGKILL);
    waitpid(pids[i], NULL, 0);
    pids[i] = 0;
}

static int count_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static gf_client *client;
static atomic_long sent, succeeded, failed, outstanding;
static atomic_int stopping;
static char first_error[512];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void on_done(void *ud, int32_t code, const uint8_t *resp, size_t len, const char *msg);

static void issue(void) {
    atomic_fetch_add(&sent, 1);
    if (gf_invoke_async(client, "/UserService/Echo", (const uint8_t *)"chaos", 5, 3000, on_done, NULL, NULL, NULL) != GF_OK) {
        atomic_fetch_add(&failed, 1);
        atomic_fetch_sub(&outstanding, 1);
    }
}

static void on_done(void *ud, int32_t code, const uint8_t *resp, size_t len, const char *msg) {
    (void)ud;
    if (code == GF_OK && len == 5 && memcmp(resp, "chaos", 5) == 0) {
        atomic_fetch_add(&succeeded, 1);
    } else {
        if (atomic_fetch_add(&failed, 1) == 0) {
            pthread_mutex_lock(&mu);
            snprintf(first_error, sizeof first_error, "code %d: %s", code, msg);
            pthread_mutex_unlock(&mu);
        }
    }
    if (!atomic_load(&stopping)) {
        issue();
        return;
    }
    if (atomic_fetch_sub(&outstanding, 1) == 1) {
        pthread_mutex_lock(&mu);
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <gf-testserver> [seconds]\n", argv[0]);
        return 2;
    }
    server_bin = argv[1];
    double duration = argc > 2 ? atof(argv[2]) : 30.0;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int i = 0; i < INSTANCES; i++) start_instance(i, "127.0.0.1:0");
    char target[512];
    snprintf(target, sizeof target, "static:///%s,%s,%s", addrs[0], addrs[1], addrs[2]);
    const char *options =
        "{\"connect_backoff\": {\"base_delay_ms\": 200, \"max_delay_ms\": 1000},"
        " \"service_config\": {"
        "  \"loadBalancingConfig\": [{\"outlier_detection\": {\"interval\": \"1s\", \"baseEjectionTime\": \"2s\","
        "     \"maxEjectionPercent\": 34, \"failurePercentageEjection\": {\"threshold\": 50, \"minimumHosts\": 3, \"requestVolume\": 20},"
        "     \"childPolicy\": [{\"round_robin\": {}}]}}],"
        "  \"methodConfig\": [{\"name\": [{\"service\": \"UserService\"}], \"retryPolicy\": {\"maxAttempts\": 4,"
        "     \"initialBackoff\": \"0.01s\", \"maxBackoff\": \"0.1s\", \"backoffMultiplier\": 2.0,"
        "     \"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]}}";

    /* Baseline after the library's runtime exists: a warm-up client, used and closed. */
    char *err = NULL;
    if (gf_connect(target, options, &client, &err) != GF_OK) {
        fprintf(stderr, "FAIL: connect: %s\n", err);
        return 1;
    }
    gf_bytes out;
    if (gf_invoke(client, "/UserService/Echo", (const uint8_t *)"x", 1, 5000, &out, &err) != GF_OK) {
        fprintf(stderr, "FAIL: warm-up call: %s\n", err);
        return 1;
    }
    gf_bytes_free(&out);
    gf_close(client);
    sleep_s(0.5);
    int threads0 = count_dir("/proc/self/task"), fds0 = count_dir("/proc/self/fd");

    if (gf_connect(target, options, &client, &err) != GF_OK) {
        fprintf(stderr, "FAIL: connect: %s\n", err);
        return 1;
    }
    atomic_store(&outstanding, IN_FLIGHT);
    for (int i = 0; i < IN_FLIGHT; i++) issue();

    /* Chaos: kill one instance, then bring it back, alternating at random 1-3 s intervals, so
     * that at most one instance is down at a time. */
    double end = now_s() + duration;
    int down = -1, kills = 0, restarts = 0;
    while (now_s() < end) {
        sleep_s(1.0 + 2.0 * (double)rand() / RAND_MAX);
        if (down < 0) {
            down = rand() % INSTANCES;
            kill_instance(down);
            kills++;
            printf("t=%.1fs kill %s\n", duration - (end - now_s()), addrs[down]);
        } else {
            start_instance(down, addrs[down]);
            restarts++;
            printf("t=%.1fs restart %s\n", duration - (end - now_s()), addrs[down]);
            down = -1;
        }
        fflush(stdout);
    }
    atomic_store(&stopping, 1);
    pthread_mutex_lock(&mu);
    while (atomic_load(&outstanding) > 0) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    char *stats = NULL;
    gf_client_stats(client, &stats, NULL);
    gf_close(client);

    /* Threads and descriptors return to the baseline (connections close asynchronously). */
    int threads1 = 0, fds1 = 0;
    for (int i = 0; i < 100; i++) {
        threads1 = count_dir("/proc/self/task");
        fds1 = count_dir("/proc/self/fd");
        if (threads1 <= threads0 && fds1 <= fds0) break;
        sleep_s(0.1);
    }
    for (int i = 0; i < INSTANCES; i++)
        if (pids[i]) kill_instance(i);

    long s = atomic_load(&sent), ok = atomic_load(&succeeded), bad = atomic_load(&failed);
    printf("kills=%d restarts=%d sent=%ld succeeded=%ld failed=%ld threads %d->%d fds %d->%d\n", kills, restarts, s, ok, bad,
           threads0, threads1, fds0, fds1);
    int rc = 0;
    if (bad != 0) {
        printf("FAIL: %ld caller-visible errors, first: %s\nstats: %s\n", bad, first_error, stats);
        rc = 1;
    }
    if (s != ok + bad) {
        printf("FAIL: calls unaccounted for: sent %ld != %ld + %ld\n", s, ok, bad);
        rc = 1;
    }
    if (kills == 0 || ok == 0) {
        printf("FAIL: no chaos happened\n");
        rc = 1;
    }
    if (threads1 > threads0 || fds1 > fds0) {
        printf("FAIL: threads %d->%d, fds %d->%d after close\n", threads0, threads1, fds0, fds1);
        rc = 1;
    }
    gf_string_free(stats);
    printf("%s\n", rc == 0 ? "chaos: 1 passed, 0 failed" : "chaos: 0 passed, 1 failed");
    return rc;
}
