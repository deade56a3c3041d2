/*
 * client.c: the smallest useful grpc-failover program in C.
 *
 * Connects to a static list of instances, calls the unary method /gf.test.Echo/Echo with a
 * message, prints the reply and frees everything it got from the library.
 *
 * Build and run (from the repository root, after `make build`):
 *
 *     cc -I include examples/client.c -L target/release -lgrpc_failover -o client
 *     target/release/gf-testserver --listen 127.0.0.1:50051 --name demo &
 *     LD_LIBRARY_PATH=target/release ./client static:///127.0.0.1:50051 hello
 *
 * The target may list several instances (static:///host:port,host:port) or name an etcd
 * prefix (etcd:///service/echo); the library picks a ready instance for every call.
 */
#include <stdio.h>
#include <string.h>

#include "grpc_failover.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s static:///host:port[,host:port...] [message]\n", argv[0]);
        return 2;
    }
    const char *target = argv[1];
    const char *message = argc > 2 ? argv[2] : "hello";

    /* Every gf_ function that can fail returns a gRPC status code (0 = OK) and, when asked,
     * a message that we own and must free with gf_string_free (freeing NULL is fine). */
    char *error = NULL;

    /* Options are JSON; NULL means defaults (pick_first, no retries). gf_connect does not
     * touch the network: an unreachable instance shows up in the calls' errors instead. */
    gf_client *client = NULL;
    int32_t code = gf_connect(target, NULL, &client, &error);
    if (code != GF_OK) {
        fprintf(stderr, "gf_connect: status %d: %s\n", (int)code, error);
        gf_string_free(error);
        return 1;
    }

    /* A blocking unary call with raw request bytes and a 5 s deadline. The library copies
     * the request; the response buffer belongs to us until gf_bytes_free. */
    gf_bytes response = {NULL, 0};
    code = gf_invoke(client, "/gf.test.Echo/Echo", (const uint8_t *)message, strlen(message),
                     5000, &response, &error);
    if (code == GF_OK) {
        /* The reply is raw bytes, not a C string; data is NULL when the reply is empty. */
        const char *text = response.data ? (const char *)response.data : "";
        printf("reply: %.*s\n", (int)response.len, text);
    } else {
        fprintf(stderr, "gf_invoke: status %d: %s\n", (int)code, error);
    }

    gf_bytes_free(&response); /* fine on {NULL, 0} too */
    gf_string_free(error);
    gf_close(client); /* closes connections; a client is freed exactly once */
    return code == GF_OK ? 0 : 1;
}
