/* pkt: what a hostile guest sends, for umlstate's end-to-end tests.
 *
 * Runs inside the busybox test guest (built static: gcc -static -Os), as root
 * there. Writes raw Ethernet frames on one interface through an AF_PACKET
 * socket that receives nothing; no loop runs longer than its COUNT, nothing
 * stays behind.
 *
 *   pkt send IFACE HEXFRAME [COUNT]   the frame (hex, no separators), COUNT times
 *   pkt arpflood IFACE COUNT          gratuitous ARP requests, random MAC and 10/8 address each
 *   pkt macflood IFACE COUNT          broadcast frames (ethertype 0x88b5), random source MAC each
 *   pkt ra IFACE SRCMAC               an ICMPv6 router advertisement of 2001:db8:bad::/64
 *   pkt dhcpoffer IFACE SRCMAC        a DHCP offer from 10.99.99.99 (UDP 67 -> 68, broadcast)
 *
 * Every frame counted in "sent" left the interface: one that the interface dropped (its
 * tx_dropped grew: a UML NIC on a uml_switch drops what the switch's socket has no room
 * for, a burst's tail) is sent again after a millisecond, a bounded number of times.
 * Prints `pkt: sent N` on success; a message on stderr and a non-zero exit
 * otherwise (2: usage, 1: the system said no).
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 1518     /* an Ethernet frame with one VLAN tag, without its FCS */
#define MIN_FRAME 60       /* shorter ones are padded with zeros */
#define MAX_COUNT 100000
#define RETRIES 1000       /* per frame, 1 ms apart, while the queue is full or the NIC drops */

static const uint8_t BROADCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

__attribute__((noreturn)) static void die(int code, const char *what) {
    fprintf(stderr, "pkt: %s\n", what);
    exit(code);
}

__attribute__((noreturn)) static void usage(void) {
    die(2, "usage: pkt send IFACE HEXFRAME [COUNT] | arpflood IFACE COUNT | macflood IFACE COUNT"
           " | ra IFACE SRCMAC | dhcpoffer IFACE SRCMAC");
}

/* --- randomness: xorshift64*, seeded from getrandom (or the clock when the pool is not ready) --- */
static uint64_t rng_state;

static void rng_seed(void) {
    if (getrandom(&rng_state, sizeof rng_state, GRND_NONBLOCK) != (ssize_t)sizeof rng_state) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        rng_state = ((uint64_t)now.tv_sec << 32) ^ (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 16);
    }
    if (rng_state == 0)
        rng_state = 0x9e3779b97f4a7c15ULL;
}

static uint32_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

static void random_mac(uint8_t mac[6]) { /* locally administered, unicast */
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)rng();
    mac[0] = (uint8_t)((mac[0] & 0xfc) | 0x02);
}

/* --- parsing --- */
static unsigned long parse_count(const char *text) {
    char *end;
    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (errno || *text == '\0' || *text == '-' || *end != '\0' || n < 1 || n > MAX_COUNT)
        die(2, "COUNT must be a number from 1 to 100000");
    return n;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t parse_hex(const char *text, uint8_t *out, size_t room) {
    size_t len = strlen(text);
    if (len % 2 || len / 2 > room || len / 2 < 14)
        die(2, "HEXFRAME must be 14 to 1518 bytes in hex digits, no separators");
    for (size_t i = 0; i < len / 2; i++) {
        int high = hex_digit(text[2 * i]), low = hex_digit(text[2 * i + 1]);
        if (high < 0 || low < 0)
            die(2, "HEXFRAME must be hex digits only");
        out[i] = (uint8_t)(high << 4 | low);
    }
    return len / 2;
}

static void parse_mac(const char *text, uint8_t mac[6]) {
    unsigned int b[6];
    char tail;
    if (sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        die(2, "SRCMAC must look like 02:00:00:00:00:01");
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)b[i];
}

/* --- the socket --- */
static int sock = -1;
static struct sockaddr_ll to;
static char dropped_path[64 + IF_NAMESIZE];

static long tx_dropped(void) { /* what the interface dropped so far; -1 when it does not say */
    char text[32];
    int fd = open(dropped_path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    return strtol(text, NULL, 10);
}

static void open_on(const char *iface) {
    unsigned int index = if_nametoindex(iface);
    if (index == 0) {
        fprintf(stderr, "pkt: no interface %s: %s\n", iface, strerror(errno));
        exit(1);
    }
    sock = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: sends, never receives */
    if (sock < 0) {
        fprintf(stderr, "pkt: socket(AF_PACKET): %s\n", strerror(errno));
        exit(1);
    }
    memset(&to, 0, sizeof to);
    to.sll_family = AF_PACKET;
    to.sll_ifindex = (int)index;
    to.sll_halen = 6;
    snprintf(dropped_path, sizeof dropped_path, "/sys/class/net/%s/statistics/tx_dropped", iface);
}

static void send_frame(const uint8_t *frame, size_t len) {
    uint8_t padded[MIN_FRAME];
    if (len < MIN_FRAME) {
        memset(padded, 0, sizeof padded);
        memcpy(padded, frame, len);
        frame = padded;
        len = MIN_FRAME;
    }
    memcpy(to.sll_addr, frame, 6);
    for (int attempt = 0;; attempt++) {
        long before = tx_dropped();
        if (sendto(sock, frame, len, 0, (const struct sockaddr *)&to, sizeof to) == (ssize_t)len) {
            long after = tx_dropped();
            if (before < 0 || after <= before)
                return;
            errno = ENOBUFS; /* the interface dropped it */
        }
        if ((errno != ENOBUFS && errno != EAGAIN && errno != EINTR) || attempt >= RETRIES) {
            fprintf(stderr, "pkt: sendto: %s\n", strerror(errno));
            exit(1);
        }
        usleep(1000);
    }
}

/* --- frame building --- */
static size_t put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

static size_t put32(uint8_t *p, uint32_t v) {
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
    return 4;
}

static size_t ethernet(uint8_t *p, const uint8_t dst[6], const uint8_t src[6], uint16_t type) {
    memcpy(p, dst, 6);
    memcpy(p + 6, src, 6);
    put16(p + 12, type);
    return 14;
}

/* the Internet checksum (RFC 1071) over a pseudo-header sum and the data */
static uint16_t checksum(uint32_t sum, const uint8_t *data, size_t len) {
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)data[i] << 8 | data[i + 1];
    if (len % 2)
        sum += (uint32_t)data[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint32_t sum_bytes(const uint8_t *data, size_t len) { /* len even */
    uint32_t sum = 0;
    for (size_t i = 0; i < len; i += 2)
        sum += (uint32_t)data[i] << 8 | data[i + 1];
    return sum;
}

static int cmd_send(const char *iface, const char *hex, const char *count_text) {
    static uint8_t frame[MAX_FRAME];
    size_t len = parse_hex(hex, frame, sizeof frame);
    unsigned long count = count_text ? parse_count(count_text) : 1;
    open_on(iface);
    for (unsigned long i = 0; i < count; i++)
        send_frame(frame, len);
    return (int)count;
}

static int cmd_arpflood(const char *iface, const char *count_text) {
    unsigned long count = parse_count(count_text);
    open_on(iface);
    for (unsigned long i = 0; i < count; i++) {
        uint8_t frame[MIN_FRAME] = {0}, mac[6];
        random_mac(mac);
        uint32_t ip = 0x0a000000u | (rng() & 0x00ffffffu);
        if ((ip & 0xff) == 0 || (ip & 0xff) == 0xff)
            ip ^= 0x01;
        uint8_t *p = frame + ethernet(frame, BROADCAST, mac, 0x0806);
        p += put16(p, 1);      /* hardware: Ethernet */
        p += put16(p, 0x0800); /* protocol: IPv4 */
        *p++ = 6;
        *p++ = 4;
        p += put16(p, 1); /* request: who has ip? tell ip (gratuitous) */
        memcpy(p, mac, 6);
        p += 6;
        p += put32(p, ip);
        memset(p, 0, 6);
        p += 6;
        put32(p, ip);
        send_frame(frame, sizeof frame);
    }
    return (int)count;
}

static int cmd_macflood(const char *iface, const char *count_text) {
    unsigned long count = parse_count(count_text);
    open_on(iface);
    for (unsigned long i = 0; i < count; i++) {
        uint8_t frame[MIN_FRAME] = {0}, mac[6];
        random_mac(mac);
        size_t at = ethernet(frame, BROADCAST, mac, 0x88b5); /* IEEE local experimental */
        memcpy(frame + at, "umlstate-pkt macflood", 21);
        send_frame(frame, sizeof frame);
    }
    return (int)count;
}

static int cmd_ra(const char *iface, const char *mac_text) {
    static const uint8_t ALL_NODES[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
    static const uint8_t ALL_NODES_MAC[6] = {0x33, 0x33, 0, 0, 0, 0x01};
    static const uint8_t PREFIX[16] = {0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad};
    uint8_t mac[6], frame[14 + 40 + 56] = {0}, source[16] = {0xfe, 0x80};
    parse_mac(mac_text, mac);
    /* fe80::EUI-64: the MAC with its universal/local bit flipped and ff:fe in the middle */
    source[8] = mac[0] ^ 0x02;
    source[9] = mac[1];
    source[10] = mac[2];
    source[11] = 0xff;
    source[12] = 0xfe;
    source[13] = mac[3];
    source[14] = mac[4];
    source[15] = mac[5];

    uint8_t *ip6 = frame + ethernet(frame, ALL_NODES_MAC, mac, 0x86dd);
    uint8_t *icmp = ip6 + 40;
    size_t icmp_len = 16 + 8 + 32;
    ip6[0] = 0x60;
    put16(ip6 + 4, (uint16_t)icmp_len);
    ip6[6] = 58;  /* next header: ICMPv6 */
    ip6[7] = 255; /* hop limit: what a router advertisement must carry */
    memcpy(ip6 + 8, source, 16);
    memcpy(ip6 + 24, ALL_NODES, 16);

    uint8_t *p = icmp;
    *p++ = 134; /* router advertisement */
    *p++ = 0;
    p += put16(p, 0); /* checksum, below */
    *p++ = 64;        /* current hop limit */
    *p++ = 0;         /* flags: no managed, no other */
    p += put16(p, 1800); /* router lifetime: be the default router */
    p += put32(p, 0);    /* reachable time */
    p += put32(p, 0);    /* retransmit timer */
    *p++ = 1; /* option: source link-layer address */
    *p++ = 1;
    memcpy(p, mac, 6);
    p += 6;
    *p++ = 3; /* option: prefix information */
    *p++ = 4;
    *p++ = 64;   /* prefix length */
    *p++ = 0xc0; /* on-link, autonomous */
    p += put32(p, 86400); /* valid lifetime */
    p += put32(p, 14400); /* preferred lifetime */
    p += put32(p, 0);
    memcpy(p, PREFIX, 16);

    /* pseudo-header: source, destination, upper-layer length, next header */
    uint32_t sum = sum_bytes(ip6 + 8, 32) + (uint32_t)icmp_len + 58;
    put16(icmp + 2, checksum(sum, icmp, icmp_len));
    open_on(iface);
    send_frame(frame, sizeof frame);
    return 1;
}

static int cmd_dhcpoffer(const char *iface, const char *mac_text) {
    enum { BOOTP = 300, UDP = 8 + BOOTP, IP = 20 + UDP };
    static uint8_t frame[14 + IP];
    uint8_t mac[6];
    parse_mac(mac_text, mac);
    memset(frame, 0, sizeof frame);
    const uint32_t server = 0x0a636363u, offered = 0x0a636364u, everyone = 0xffffffffu; /* 10.99.99.99, .100 */

    uint8_t *ip = frame + ethernet(frame, BROADCAST, mac, 0x0800);
    ip[0] = 0x45;
    put16(ip + 2, IP);
    put16(ip + 4, (uint16_t)rng());
    ip[8] = 64; /* TTL */
    ip[9] = 17; /* UDP */
    put32(ip + 12, server);
    put32(ip + 16, everyone);
    put16(ip + 10, checksum(0, ip, 20));

    uint8_t *udp = ip + 20, *bootp = udp + 8;
    put16(udp, 67);
    put16(udp + 2, 68);
    put16(udp + 4, UDP);

    bootp[0] = 2; /* BOOTREPLY */
    bootp[1] = 1; /* Ethernet */
    bootp[2] = 6;
    put32(bootp + 4, rng()); /* xid */
    put16(bootp + 10, 0x8000); /* broadcast */
    put32(bootp + 16, offered); /* yiaddr */
    put32(bootp + 20, server);  /* siaddr */
    uint8_t *o = bootp + 236;
    o += put32(o, 0x63825363); /* magic cookie */
    *o++ = 53; *o++ = 1; *o++ = 2;                           /* DHCP message type: OFFER */
    *o++ = 54; *o++ = 4; o += put32(o, server);             /* server identifier */
    *o++ = 51; *o++ = 4; o += put32(o, 3600);               /* lease time */
    *o++ = 1;  *o++ = 4; o += put32(o, 0xff000000u);        /* subnet mask */
    *o++ = 3;  *o++ = 4; o += put32(o, server);             /* router */
    *o++ = 6;  *o++ = 4; o += put32(o, server);             /* DNS server */
    *o = 255;                                               /* end */

    uint8_t pseudo[12] = {0};
    put32(pseudo, server);
    put32(pseudo + 4, everyone);
    pseudo[9] = 17;
    put16(pseudo + 10, UDP);
    uint16_t sum = checksum(sum_bytes(pseudo, sizeof pseudo), udp, UDP);
    put16(udp + 6, sum ? sum : 0xffff);
    open_on(iface);
    send_frame(frame, sizeof frame);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3)
        usage();
    const char *cmd = argv[1], *iface = argv[2];
    if (strlen(iface) >= IF_NAMESIZE)
        die(2, "IFACE is too long");
    rng_seed();
    int sent;
    if (!strcmp(cmd, "send") && (argc == 4 || argc == 5))
        sent = cmd_send(iface, argv[3], argc == 5 ? argv[4] : NULL);
    else if (!strcmp(cmd, "arpflood") && argc == 4)
        sent = cmd_arpflood(iface, argv[3]);
    else if (!strcmp(cmd, "macflood") && argc == 4)
        sent = cmd_macflood(iface, argv[3]);
    else if (!strcmp(cmd, "ra") && argc == 4)
        sent = cmd_ra(iface, argv[3]);
    else if (!strcmp(cmd, "dhcpoffer") && argc == 4)
        sent = cmd_dhcpoffer(iface, argv[3]);
    else
        usage();
    printf("pkt: sent %d\n", sent);
    return 0;
}
