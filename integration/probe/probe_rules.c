/*
 * Probes of Stockade's profile rules: host devices, root in the container, and the calls
 * only the strict profile denies (name_to_handle_at, fileless exec, seccomp listeners).
 * Output format and safety rules: probe.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x1U
#endif
#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif

/* Shocker's first half: a file handle for a path (the second half, open_by_handle_at,
 * is denied everywhere). Tries filesystems until one answers (/dev is a tmpfs, which
 * exports handles; overlayfs may not). */
int probe_name_to_handle(void) {
    static const char *const paths[] = {"/dev", "/", "/tmp", NULL};
    char errors[256] = "";
    for (int i = 0; paths[i]; i++) {
        struct {
            struct file_handle fh;
            unsigned char bytes[MAX_HANDLE_SZ];
        } h;
        int mount_id = -1;
        h.fh.handle_bytes = MAX_HANDLE_SZ;
        long rc = syscall(SYS_name_to_handle_at, AT_FDCWD, paths[i], &h.fh, &mount_id, 0);
        if (rc == 0) {
            report("name-to-handle-at", "ALLOWED", "handle of %s: type %d, %u bytes, mount id %d",
                   paths[i], h.fh.handle_type, h.fh.handle_bytes, mount_id);
            return 0;
        }
        size_t l = strlen(errors);
        snprintf(errors + l, sizeof errors - l, "%s%s errno=%s", l ? ", " : "", paths[i],
                 strerrorname_np(errno));
    }
    report("name-to-handle-at", "BLOCKED", "%s", errors);
    return 0;
}

/* Run the fd's program in a child; returns "ran" or why not. */
static const char *exec_fd(int fd, int by_path, char *why, size_t len) {
    pid_t c = fork();
    if (c < 0) return "fork failed";
    if (c == 0) {
        char *args[] = {"probe", "fileless-exec-ran", NULL};
        char *env[] = {NULL};
        if (by_path) {
            char path[64];
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            execve(path, args, env);
        } else {
            syscall(SYS_execveat, fd, "", args, env, AT_EMPTY_PATH);
        }
        _exit(errno & 0x7f);
    }
    int status = 0;
    waitpid(c, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 42) return "ran";
    snprintf(why, len, "errno=%s", WIFEXITED(status) ? strerrorname_np(WEXITSTATUS(status)) : "?");
    return why;
}

/* A copy of this program in `fd`; 0 on success, else errno. */
static int copy_self(int fd) {
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (self < 0) return errno;
    struct stat st;
    int err = fstat(self, &st) ? errno : 0;
    off_t off = 0;
    while (!err && off < st.st_size)
        if (sendfile(fd, self, &off, st.st_size - off) <= 0) err = errno ? errno : EIO;
    close(self);
    return err;
}

/* Fileless exec: a program that exists only in memory (memfd_create), run through
 * execveat(AT_EMPTY_PATH) or /proc/self/fd; and execveat(AT_EMPTY_PATH) of an unnamed
 * O_TMPFILE. ALLOWED when any of them ran. */
int probe_fileless_exec(const char *self) {
    (void)self;
    char detail[400] = "", w1[64], w2[64], w3[64];
    int ran = 0;
    int fd = (int)syscall(SYS_memfd_create, "probe", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(detail, sizeof detail, "memfd_create errno=%s; ", strerrorname_np(errno));
    } else {
        int err = copy_self(fd);
        if (err) {
            snprintf(detail, sizeof detail, "copy into memfd errno=%s; ", strerrorname_np(err));
        } else {
            const char *a = exec_fd(fd, 0, w1, sizeof w1), *b = exec_fd(fd, 1, w2, sizeof w2);
            ran |= !strcmp(a, "ran") || !strcmp(b, "ran");
            snprintf(detail, sizeof detail, "memfd + execveat(AT_EMPTY_PATH): %s, memfd + execve(/proc/self/fd): %s; ", a, b);
        }
        close(fd);
    }
    size_t l = strlen(detail);
    fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0700);
    if (fd < 0) {
        snprintf(detail + l, sizeof detail - l, "O_TMPFILE errno=%s", strerrorname_np(errno));
    } else {
        int err = copy_self(fd);
        /* execve refuses a file still open for writing: reopen it read-only. */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int ro = err ? -1 : open(path, O_RDONLY | O_CLOEXEC);
        close(fd);
        if (ro < 0) {
            snprintf(detail + l, sizeof detail - l, "O_TMPFILE copy errno=%s", strerrorname_np(err ? err : errno));
        } else {
            const char *c = exec_fd(ro, 0, w3, sizeof w3);
            ran |= !strcmp(c, "ran");
            snprintf(detail + l, sizeof detail - l, "O_TMPFILE + execveat(AT_EMPTY_PATH): %s", c);
            close(ro);
        }
    }
    report("fileless-exec", ran ? "ALLOWED" : "BLOCKED", "%s", detail);
    return 0;
}

/* A workload's own seccomp filter with a user-notification listener (an always-allow
 * filter: harmless, and it dies with the child). */
int probe_seccomp_listener(void) {
    pid_t c = fork();
    if (c == 0) {
        struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
        struct sock_fprog prog = {.len = 1, .filter = allow};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
            report("seccomp-listener", "BLOCKED", "PR_SET_NO_NEW_PRIVS errno=%s", strerrorname_np(errno));
            _exit(0);
        }
        long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        int err = errno;
        if (rc >= 0)
            report("seccomp-listener", "ALLOWED", "listener fd %ld", rc);
        else
            report_rc("seccomp-listener", rc, err, EINVAL);
        _exit(0);
    }
    if (c > 0) waitpid(c, NULL, 0);
    return 0;
}

/* Read the first sector of a host device the container was given (never writes). */
int probe_device(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        report("host-device", "BLOCKED", "open %s errno=%s", path, strerrorname_np(errno));
        return 0;
    }
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    /* Opened is reached: an empty device (an unattached loop) reads 0 bytes. */
    if (n >= 0)
        report("host-device", "ALLOWED", "opened the host's %s and read %zd bytes", path, n);
    else
        report("host-device", "ALLOWED", "opened the host's %s (read errno=%s)", path, strerrorname_np(err));
    return 0;
}

int probe_whoami(void) {
    uid_t uid = getuid();
    report("run-as-root", uid == 0 ? "ALLOWED" : "BLOCKED", "uid=%u gid=%u", uid, getgid());
    return 0;
}
