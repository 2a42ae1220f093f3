/* Minimal C relay used as the native ceiling in tunlab's relay benchmark.
 * usage: tunrelay FD_A FD_B  -- forwards frames A->B and B->A, one thread each, until killed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct pipe_ends { int in, out; };

static void *pump(void *arg) {
    struct pipe_ends *p = arg;
    static __thread unsigned char buf[65536 + 64];
    for (;;) {
        ssize_t n = read(p->in, buf, sizeof buf);
        if (n <= 0) return NULL;
        if (write(p->out, buf, (size_t)n) < 0) { /* dropped, like a NIC would */ }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s FD_A FD_B\n", argv[0]); return 2; }
    struct pipe_ends ab = { atoi(argv[1]), atoi(argv[2]) }, ba = { ab.out, ab.in };
    pthread_t t1, t2;
    pthread_create(&t1, NULL, pump, &ab);
    pthread_create(&t2, NULL, pump, &ba);
    puts("READY");
    fflush(stdout);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    return 0;
}
