/*
 * A line echo service on the payload API: every line a client sends comes back.
 *
 *   echo AGENT_SOCK ADDR:PORT      e.g.  echo /run/snstack/agent.sock 0.0.0.0:7007
 *
 * The agent splits the byte stream into lines on the NIC; each SNP_MESSAGE is one whole line
 * (or a piece of a longer one), and the reply is written straight into the connection's TX
 * ring. A client that does not read its echoes is reset when its ring is full.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "snstack_payload.h"

#define BATCH 64

static int reply(snp_group *g, uint64_t conn, const uint8_t *data, size_t len)
{
    snp_reply r;
    int rc = snp_reserve(g, conn, len, &r);
    if (rc < 0)
        return rc;
    memcpy(r.ptr[0], data, r.len[0]);
    memcpy(r.ptr[1], data + r.len[0], r.len[1]);
    return snp_commit(g, conn, len);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s AGENT_SOCK ADDR:PORT\n", argv[0]);
        return 2;
    }
    snp_group *g;
    int rc = snp_attach(argv[1], &g);
    if (rc < 0) {
        fprintf(stderr, "attach %s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    snp_framing f = {.kind = SNP_FRAMING_LINE, .flags = 0, .width = 0, .reserved = 0};
    uint32_t service;
    rc = snp_serve(g, argv[2], &f, 4096, &service);
    if (rc < 0) {
        fprintf(stderr, "serve %s: %s\n", argv[2], strerror(-rc));
        snp_detach(g);
        return 1;
    }
    fprintf(stderr, "echo: serving %s (service %u)\n", argv[2], service);
    snp_event ev[BATCH];
    for (;;) {
        int n = snp_poll(g, ev, BATCH, 50, -1);
        if (n < 0) {
            fprintf(stderr, "poll: %s\n", strerror(-n));
            break;
        }
        for (int i = 0; i < n; i++) {
            switch (ev[i].kind) {
            case SNP_MESSAGE:
                rc = reply(g, ev[i].conn, ev[i].data, ev[i].len);
                if (rc == -EAGAIN || rc == -EMSGSIZE)
                    snp_abort(g, ev[i].conn); /* not reading its echoes */
                break;
            case SNP_CLOSED:
                if (ev[i].reason != SNP_PEER_CLOSED)
                    fprintf(stderr, "conn %llx: %s\n", (unsigned long long)ev[i].conn,
                            ev[i].reason_name);
                snp_close(g, ev[i].conn);
                break;
            default:
                break;
            }
        }
    }
    snp_detach(g);
    return 1;
}
