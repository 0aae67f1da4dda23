/* A workload that forks and execs: N children, each execs `/bin/busybox echo child I`
 * with its stdout on a pipe the parent reads; the parent waits for each and prints
 * what it read and "forker done" when every child exited 0. With a second argument
 * `sync` it then makes one syscall more (the record test's probe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    for (int i = 0; i < n; i++) {
        int fds[2];
        if (pipe(fds) != 0) { perror("pipe"); return 1; }
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            char arg[16];
            snprintf(arg, sizeof arg, "%d", i);
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
            execl("/bin/busybox", "busybox", "echo", "child", arg, (char *)NULL);
            perror("execl");
            _exit(127);
        }
        close(fds[1]);
        char buf[64] = {0};
        ssize_t got = read(fds[0], buf, sizeof buf - 1);
        close(fds[0]);
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed (status %d)\n", i, status);
            return 1;
        }
        printf("parent read: %.*s", (int)(got > 0 ? got : 0), buf);
    }
    if (argc > 2 && strcmp(argv[2], "sync") == 0) {
        long r = syscall(SYS_sync);
        printf("sync: %ld (errno %d)\n", r, r == 0 ? 0 : errno);
    }
    printf("forker done\n");
    return 0;
}
