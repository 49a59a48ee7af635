/* In-container probe for hutch's tests: runs one check and prints its result on one line.
 *   probe sys NR [ARG...]      raw syscall: "ok RET" or "errno N"
 *   probe i386 NR              the same through the 32-bit ABI (int 0x80)
 *   probe adjtimex             adjtimex() with modes=0 (a harmless read)
 * Built static by the tests (gcc -static), bind-mounted read-only into the container. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <unistd.h>

static int report(long r) {
        if (r < 0) {
                printf("errno %d\n", errno);
                return 0;
        }
        printf("ok %ld\n", r);
        return 0;
}

int main(int argc, char **argv) {
        if (argc < 2)
                return 2;
        if (!strcmp(argv[1], "sys") && argc >= 3) {
                long a[6] = {0};
                for (int i = 3; i < argc && i < 9; i++)
                        a[i - 3] = strtol(argv[i], NULL, 0);
                errno = 0;
                return report(syscall(strtol(argv[2], NULL, 0), a[0], a[1], a[2], a[3], a[4], a[5]));
        }
        if (!strcmp(argv[1], "i386") && argc >= 3) {
                long nr = strtol(argv[2], NULL, 0), r;
                __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr) : "memory");
                if (r < 0 && r > -4096) {
                        errno = (int) -r;
                        r = -1;
                }
                return report(r);
        }
        if (!strcmp(argv[1], "adjtimex")) {
                struct timex t;
                memset(&t, 0, sizeof t);
                return report(adjtimex(&t));
        }
        return 2;
}
