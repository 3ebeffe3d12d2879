/*
 * snstack payload API (libsnstack_payload.so): serve and connect framed TCP without sockets.
 *
 * The TCP stack runs in snstack-agent (the SmartNIC). A *group* is one attach to it, owned by
 * one thread (use one group per thread; several groups may serve the same address, the agent
 * spreads new connections over them). The agent splits each connection's bytes into whole
 * messages by the framing the service declared, so the application receives one event per
 * message and never parses a stream.
 *
 * Return values: 0 (or a count) on success, -errno on failure. Every call may fail with
 * -ECONNRESET once the agent is gone, and -EBADMSG once the group found the shared memory
 * corrupt; the group is dead then (detach it).
 *
 * Ownership:
 *  - snp_event.data of an SNP_MESSAGE points into the group's shared memory. It is valid until
 *    the next snp_poll on that group, or snp_detach, whichever comes first. Copy what you keep.
 *    Replying (snp_send, snp_reserve...) and closing while holding it is fine: a snp_close of a
 *    connection whose messages are still held takes effect at the next snp_poll.
 *  - A conn handle (uint64_t) is valid from SNP_OPENED / snp_connect until snp_close or
 *    snp_abort. A stale handle gets -EBADF, never another connection.
 *  - After SNP_CLOSED the connection must still be closed with snp_close (or snp_abort): only
 *    that frees it. After a peer close (SNP_PEER_CLOSED) it may still send.
 *  - Sends are published at once and handed to the agent at the next snp_flush or snp_poll
 *    (snp_poll flushes first). Close, shutdown and abort are delivered the same way.
 */
#ifndef SNSTACK_PAYLOAD_H
#define SNSTACK_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct snp_group snp_group;

/* Framings (snp_framing.kind). */
#define SNP_FRAMING_RAW 0            /* every byte is content, messages of up to max_message */
#define SNP_FRAMING_LENGTH 1         /* length prefix: width 2 or 4, flags BIG_ENDIAN, INCLUDES_HEADER */
#define SNP_FRAMING_LINE 2           /* one line per message, delimiter included; flag CRLF */
#define SNP_FRAMING_HTTP1_REQUEST 3  /* HTTP/1.1 requests (servers) */
#define SNP_FRAMING_HTTP1_RESPONSE 4 /* HTTP/1.1 responses (clients) */
#define SNP_FRAMING_RESP_REQUEST 5   /* RESP2 commands (servers) */
#define SNP_FRAMING_RESP_REPLY 6     /* RESP2 replies (clients) */

/* snp_framing.flags */
#define SNP_BIG_ENDIAN 1      /* LENGTH: prefix in network order */
#define SNP_INCLUDES_HEADER 2 /* LENGTH: the prefix counts its own bytes */
#define SNP_CRLF 4            /* LINE: lines end in \r\n; a bare \n is malformed */

typedef struct snp_framing {
    uint8_t kind;     /* SNP_FRAMING_* */
    uint8_t flags;    /* SNP_BIG_ENDIAN | SNP_INCLUDES_HEADER | SNP_CRLF, as the kind allows */
    uint8_t width;    /* LENGTH: 2 or 4; else 0 */
    uint8_t reserved; /* 0 */
} snp_framing;

/* snp_event.kind */
#define SNP_OPENED 1    /* conn, service, peer */
#define SNP_CONNECTED 2 /* conn (from snp_connect) is established */
#define SNP_MESSAGE 3   /* conn, data, len, flags */
#define SNP_WRITABLE 4  /* conn: a send that failed with -EAGAIN would fit now */
#define SNP_CLOSED 5    /* conn, reason, error, reason_name; reported once, after the last message */

/* snp_event.flags of SNP_MESSAGE */
#define SNP_PART 1 /* a piece of a message longer than max_message; more follow, the last without */

/* snp_event.reason of SNP_CLOSED */
#define SNP_PEER_CLOSED 0 /* the peer closed (FIN); error 0 */
#define SNP_RESET 1       /* the peer reset the connection; error ECONNRESET */
#define SNP_ERROR 2       /* the connection failed (refused connect, timeout...); error = errno */
#define SNP_MALFORMED 3   /* the peer broke the framing, the agent reset it; error EPROTO,
                             reason_name e.g. "bad_request_line" */

typedef struct snp_event {
    uint32_t kind;
    uint32_t flags;
    uint64_t conn;
    const uint8_t *data; /* SNP_MESSAGE: valid until the next snp_poll / snp_detach */
    size_t len;
    uint32_t service;    /* SNP_OPENED: as snp_serve returned it */
    uint32_t reason;     /* SNP_CLOSED: SNP_PEER_CLOSED... */
    int32_t error;       /* SNP_CLOSED: errno, 0 for a peer close */
    uint32_t _pad;
    const char *reason_name; /* SNP_CLOSED: static string: "peer_closed", "reset", "error",
                                or the malformed reason's name */
    struct sockaddr_in6 peer; /* SNP_OPENED: a struct sockaddr_in when peer.sin6_family == AF_INET */
} snp_event;

/* The library is built with this layout (checked on both sides). */
#ifndef __cplusplus
_Static_assert(sizeof(snp_event) == 88, "snp_event layout");
#endif

/* A reservation: the (up to two) pieces of the TX ring to fill, in order. */
typedef struct snp_reply {
    uint8_t *ptr[2];
    size_t len[2];
} snp_reply;

/* Attaches a group to the agent at `agent` (NULL: $SNSTACK_AGENT, else /run/snstack/agent.sock). */
int snp_attach(const char *agent, snp_group **out);
/* Kicks what was sent and detaches; the agent drains and closes the group's connections.
 * Every message pointer of the group becomes invalid. */
void snp_detach(snp_group *g);

/* Declares a service: listen on addr ("ip:port" or "[ip6]:port") with framing f. Messages
 * longer than max_message (raised to 16, lowered to half the RX ring) come as SNP_PART pieces.
 * *service_out (may be NULL) is the id SNP_OPENED reports. */
int snp_serve(snp_group *g, const char *addr, const snp_framing *f, uint32_t max_message,
              uint32_t *service_out);
/* Connects to addr; returns at once with *conn_out; SNP_CONNECTED or SNP_CLOSED follows.
 * Sends fail with -ENOTCONN until SNP_CONNECTED. */
int snp_connect(snp_group *g, const char *addr, const snp_framing *f, uint32_t max_message,
                uint64_t *conn_out);

/* Releases the previous batch's messages, flushes, then fills up to max events; with none,
 * spins up to spin_us without system calls, then sleeps until timeout_ms (< 0: no bound;
 * 0: do not sleep). Returns the number of events (0 on timeout) or -errno. */
int snp_poll(snp_group *g, snp_event *ev, int max, int spin_us, int timeout_ms);

/* Sends len bytes whole or not at all: -EAGAIN when the TX ring lacks room (SNP_WRITABLE
 * follows), -EMSGSIZE when it never could, -EPIPE after a shutdown or a failure, -EBUSY while a
 * reservation is open. */
int snp_send(snp_group *g, uint64_t conn, const void *buf, size_t len);
/* snp_send of the concatenation of iovcnt buffers. */
int snp_sendv(snp_group *g, uint64_t conn, const struct iovec *iov, int iovcnt);
/* Reserves len bytes at the conn's TX tail (all or nothing, errors as snp_send): fill
 * r->ptr[0][0..r->len[0]] then r->ptr[1][0..r->len[1]], then snp_commit. One open reservation
 * per conn. */
int snp_reserve(snp_group *g, uint64_t conn, size_t len, snp_reply *r);
/* Publishes the first `used` bytes of the conn's reservation (0 cancels it); ends it. */
int snp_commit(snp_group *g, uint64_t conn, size_t used);
/* Hands every conn sent to since the last flush to the agent (its TX-changed mark, no command) and
 * rings it once, if it sleeps. */
int snp_flush(snp_group *g);

/* Shuts the write side: FIN after the bytes already sent. Messages still arrive. */
int snp_shutdown(snp_group *g, uint64_t conn);
/* HTTP/1.1 client connections (SNP_FRAMING_HTTP1_RESPONSE): what the next request sent on
 * `conn` is, announced before sending it, so that its response is framed right: a HEAD's
 * response has no body, a 2xx to CONNECT ends HTTP. Unannounced requests count as GETs. */
#define SNP_EXPECT_OTHER 0
#define SNP_EXPECT_HEAD 1
#define SNP_EXPECT_CONNECT 2
int snp_expect_response(snp_group *g, uint64_t conn, int to);
/* Closes: bytes already sent still go out, then FIN. The handle is dead at once. */
int snp_close(snp_group *g, uint64_t conn);
/* Resets (RST): unsent bytes are dropped. The handle is dead at once. */
int snp_abort(snp_group *g, uint64_t conn);

/* The name of a malformed-input reason code (1 = "truncated", ...; the agent's
 * payload_malformed_<name> counters use the same names), NULL for an unknown code. */
const char *snp_reason_name(uint32_t code);

#ifdef __cplusplus
}
#endif

#endif
