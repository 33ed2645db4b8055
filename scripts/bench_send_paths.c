/*
 * What sending a cached file range to a loopback TCP socket costs the sender, three ways:
 * write() from a mapping of the file (what the agent does since its local store maps cached
 * ranges), vmsplice() of the mapped pages into a pipe then splice() to the socket (zero-copy),
 * and sendfile() (Kafka's way). A child process reads and discards everything. Prints the
 * sender's CPU seconds (user + system, which on loopback includes the TCP receive processing
 * run in the sender's context) per GB sent.
 *
 *   gcc -O2 scripts/bench_send_paths.c -o /tmp/bench_send_paths
 *   dd if=/dev/urandom of=/var/tmp/f bs=1M count=512 && cat /var/tmp/f > /dev/null
 *   for m in 0 1 2 0 1 2; do /tmp/bench_send_paths /var/tmp/f $m; done
 *
 * In C rather than Rust: it measures system calls, and no Rust crate of ours wraps vmsplice.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) { perror(what); exit(1); }

static void send_chunk(int mode, int sock, int file, int pipe_fds[2], const char *map, off_t off) {
    size_t done = 0;
    while (done < CHUNK) {
        ssize_t n;
        if (mode == 0) {
            n = write(sock, map + done, CHUNK - done);
        } else if (mode == 1) {
            struct iovec iov = {(void *)(map + done), CHUNK - done};
            n = vmsplice(pipe_fds[1], &iov, 1, 0);
            for (ssize_t left = n; left > 0;) {
                ssize_t moved = splice(pipe_fds[0], 0, sock, 0, left, SPLICE_F_MOVE | SPLICE_F_MORE);
                if (moved <= 0) die("splice");
                left -= moved;
            }
        } else {
            off_t at = off + done;
            n = sendfile(sock, file, &at, CHUNK - done);
        }
        if (n <= 0) die("send");
        done += n;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s FILE 0|1|2\n", argv[0]); return 2; }
    int mode = atoi(argv[2]);
    int file = open(argv[1], O_RDONLY);
    if (file < 0) die("open");
    off_t size = lseek(file, 0, SEEK_END);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (void *)&addr, len) || getsockname(listener, (void *)&addr, &len) || listen(listener, 1))
        die("listen");
    if (fork() == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&addr, sizeof addr)) die("connect");
        char *buf = malloc(CHUNK);
        while (read(c, buf, CHUNK) > 0) {}
        exit(0);
    }
    int sock = accept(listener, 0, 0);
    int pipe_fds[2];
    if (pipe(pipe_fds) || fcntl(pipe_fds[1], F_SETPIPE_SZ, CHUNK) < 0) die("pipe");
    double start = cpu_seconds();
    size_t total = 0;
    for (int pass = 0; pass < 8; pass++) {
        for (off_t off = 0; off + CHUNK <= size; off += CHUNK) {
            char *map = mmap(0, CHUNK, PROT_READ, MAP_SHARED | MAP_POPULATE, file, off);
            if (map == MAP_FAILED) die("mmap");
            send_chunk(mode, sock, file, pipe_fds, map, off);
            munmap(map, CHUNK);
            total += CHUNK;
        }
    }
    double used = cpu_seconds() - start;
    close(sock);
    wait(0);
    const char *names[] = {"write from a mapping", "vmsplice + splice", "sendfile"};
    printf("%s: sender CPU %.3f s per GB\n", names[mode], used / (total / 1e9));
    return 0;
}
