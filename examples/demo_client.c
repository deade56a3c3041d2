/*
 * The failover demo's client: calls /UserService/Whoami from several threads through
 * libgrpc_failover and prints, once a second, the calls made, the errors callers saw, the
 * retries the library made, and each instance's share of the answers.
 *
 *   demo_client <target> <options_json> <threads> <seconds>
 *
 * Then prints the run's failover metrics (the grpc_failover_* lines of gf_client_metrics:
 * retries, hedges, per-instance picks, failures and ejections), and ends with
 * "summary: calls=N failed=F retries=R"; exits 0 only when F is 0.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc_failover.h"

#define MAX_NAMES 16

static gf_client *client;
static atomic_int stop;
static atomic_long calls, failed;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char names[MAX_NAMES][64];
static long counts[MAX_NAMES];
static int n_names;
static char last_error[256];

static void count_answer(const uint8_t *data, size_t len) {
    char name[64];
    size_t n = len < sizeof name - 1 ? len : sizeof name - 1;
    memcpy(name, data, n);
    name[n] = 0;
    pthread_mutex_lock(&mu);
    int i = 0;
    while (i < n_names && strcmp(names[i], name) != 0) i++;
    if (i == n_names && n_names < MAX_NAMES) strcpy(names[n_names++], name);
    if (i < MAX_NAMES) counts[i]++;
    pthread_mutex_unlock(&mu);
}

static void *worker(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        gf_bytes out;
        char *err = NULL;
        int32_t rc = gf_invoke(client, "/UserService/Whoami", (const uint8_t *)"demo", 4, 2000, &out, &err);
        atomic_fetch_add(&calls, 1);
        if (rc == GF_OK) {
            count_answer(out.data, out.len);
        } else {
            atomic_fetch_add(&failed, 1);
            pthread_mutex_lock(&mu);
            snprintf(last_error, sizeof last_error, "%d %s", rc, err ? err : "");
            pthread_mutex_unlock(&mu);
        }
        gf_bytes_free(&out);
        gf_string_free(err);
    }
    return NULL;
}

/* Reads an integer field such as "retries": N from the stats JSON. */
static long stat_field(const char *json, const char *field) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *p = strstr(json, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static long retries_so_far(void) {
    char *json = NULL;
    if (gf_client_stats(client, &json, NULL) != GF_OK) return -1;
    long r = stat_field(json, "retries");
    gf_string_free(json);
    return r;
}

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&stop, 1);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s <target> <options_json> <threads> <seconds>\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[3]), seconds = atoi(argv[4]);
    char *err = NULL;
    if (gf_connect(argv[1], argv[2], &client, &err) != GF_OK) {
        fprintf(stderr, "gf_connect: %s\n", err);
        gf_string_free(err);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    long prev_calls = 0;
    for (int s = 1; s <= seconds && !atomic_load(&stop); s++) {
        struct timespec one = {1, 0};
        nanosleep(&one, NULL);
        long c = atomic_load(&calls);
        pthread_mutex_lock(&mu);
        long total = 0;
        for (int i = 0; i < n_names; i++) total += counts[i];
        printf("t=%2ds calls=%-7ld (+%-5ld) errors=%-3ld retries=%-5ld share:", s, c, c - prev_calls,
               atomic_load(&failed), retries_so_far());
        for (int i = 0; i < n_names; i++)
            printf(" %s=%.0f%%", names[i], total ? 100.0 * (double)counts[i] / (double)total : 0.0);
        printf("\n");
        memset(counts, 0, sizeof counts);
        pthread_mutex_unlock(&mu);
        fflush(stdout);
        prev_calls = c;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    free(t);
    long retries = retries_so_far();
    /* The run's failover metrics, as gf_client_metrics hands them to a scrape endpoint. */
    char *text = NULL;
    if (gf_client_metrics(client, &text, NULL) == GF_OK) {
        printf("failover metrics:\n");
        for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n"))
            if (strncmp(line, "grpc_failover_", 14) == 0) printf("  %s\n", line);
        gf_string_free(text);
    }
    gf_close(client);
    if (atomic_load(&failed) > 0) printf("last error: %s\n", last_error);
    printf("summary: calls=%ld failed=%ld retries=%ld\n", atomic_load(&calls), atomic_load(&failed), retries);
    return atomic_load(&failed) == 0 ? 0 : 1;
}
