/* stockade-load: the workload stockade-bench runs inside a container (built static, so
 * it needs nothing from the image). Each test times itself with CLOCK_MONOTONIC, so the
 * container's start and stop are not part of the figure, and prints one line:
 *   RESULT <name> <value> <unit>
 * Usage: stockade-load all <scale>   (scale 1 = full run; quick runs pass 10 = 1/10th)
 *        stockade-load nop           (exits at once: the target of the fork+exec test)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "stockade-load: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* getppid through syscall(2): glibc never caches it, but be explicit. */
static void bench_getppid(long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    printf("RESULT getppid %.2f ns/op\n", (now_ns() - t0) / (double)n);
}

/* One byte written and read back on a pipe: two syscalls per op. */
static void bench_pipe(long n) {
    int fds[2];
    char c = 'x';
    if (pipe(fds) != 0) die("pipe");
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (write(fds[1], &c, 1) != 1) die("write");
        if (read(fds[0], &c, 1) != 1) die("read");
    }
    printf("RESULT pipe_rw %.2f ns/op\n", (now_ns() - t0) / (double)n);
    close(fds[0]);
    close(fds[1]);
}

/* fork, exec this program with "nop", wait. */
static void bench_fork_exec(long n, const char *self) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            char *argv[] = {(char *)self, "nop", NULL};
            char *envp[] = {NULL};
            execve(self, argv, envp);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) die("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "stockade-load: exec child failed (status %d)\n", status);
            exit(2);
        }
    }
    printf("RESULT fork_exec %.2f us/op\n", (now_ns() - t0) / (double)n / 1e3);
}

/* Create and write n 4 KiB files in the container's rootfs (overlay upper dir), then
 * remove them (not timed). */
static void bench_files(long n) {
    const char *dir = "/bench-work/files";
    char buf[4096];
    char path[256];
    memset(buf, 'a', sizeof buf);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die("mkdir /bench-work/files");
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/f%ld", dir, i);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) die("open");
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) die("write file");
        close(fd);
    }
    printf("RESULT file_create_write %.2f us/op\n", (now_ns() - t0) / (double)n / 1e3);
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/f%ld", dir, i);
        unlink(path);
    }
}

/* Pure CPU: xorshift rounds; the result is printed so the loop is not optimised away. */
static void bench_cpu(long n) {
    uint64_t x = 88172645463325252ULL;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    double ms = (now_ns() - t0) / 1e6;
    printf("RESULT cpu_loop %.3f ms\n", ms);
    printf("CHECK %llu\n", (unsigned long long)(x & 0xff));
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "nop") == 0) return 0;
    if (argc < 3 || strcmp(argv[1], "all") != 0) {
        fprintf(stderr, "usage: stockade-load all <scale> | nop\n");
        return 2;
    }
    long scale = atol(argv[2]);
    if (scale < 1) scale = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_getppid(2000000 / scale);
    bench_pipe(500000 / scale);
    bench_fork_exec(2000 / scale, argv[0]);
    bench_files(5000 / scale);
    bench_cpu(300000000L / scale);
    printf("DONE\n");
    return 0;
}
