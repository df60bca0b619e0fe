/* LD_PRELOAD shim for jasco-serve's private local Ray instance: every bind() on a non-loopback address
 * (Ray's gRPC servers bind 0.0.0.0 / [::] and offer no option to change it) is rewritten to loopback
 * (127.0.0.1, or ::ffff:127.0.0.1 for IPv6 sockets, which keeps IPv4 loopback clients working).
 * JASCO_LOOPBACK_KEEP_PORT=N leaves binds on port N as asked (the HTTP port of --host 0.0.0.0).
 * Built by jasco_serve.loopback with the system C compiler; loaded only into the local Ray's processes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real_bind = NULL;
    if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    const char *keep = getenv("JASCO_LOOPBACK_KEEP_PORT");
    int keep_port = keep ? atoi(keep) : 0;
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if ((ntohl(a.sin_addr.s_addr) >> 24) != 127 && !(keep_port && ntohs(a.sin_port) == keep_port)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        int loop6 = IN6_IS_ADDR_LOOPBACK(&a.sin6_addr);
        int loop4 = IN6_IS_ADDR_V4MAPPED(&a.sin6_addr) && a.sin6_addr.s6_addr[12] == 127;
        if (!loop6 && !loop4 && !(keep_port && ntohs(a.sin6_port) == keep_port)) {
            memset(&a.sin6_addr, 0, sizeof a.sin6_addr);  /* ::ffff:127.0.0.1 */
            a.sin6_addr.s6_addr[10] = 0xff; a.sin6_addr.s6_addr[11] = 0xff;
            a.sin6_addr.s6_addr[12] = 127; a.sin6_addr.s6_addr[15] = 1;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
