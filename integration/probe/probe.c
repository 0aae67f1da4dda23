/*
 * stockade-probe: escape attempts run inside a container by the security suite
 * (integration/tests/security.rs). Built with `gcc -static` at test time and put into a
 * busybox-based test image, so it needs nothing from the image.
 *
 * Every attempt prints one line
 *     PROBE <name> <ALLOWED|BLOCKED|UNSUPPORTED|UNOBSERVED> <detail>
 * ALLOWED means the attempt worked (for an escape probe: the runtime let it through);
 * BLOCKED means it failed with the errno in <detail>; UNSUPPORTED means the kernel
 * itself lacks the feature (so the result says nothing about the runtime). Attempts
 * never do harm when they succeed: a file opened for writing is closed unwritten, a
 * socket or fd is closed, a keyring joined is anonymous and dies with the process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <grp.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1

void report(const char *name, const char *outcome, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    for (char *p = detail; *p; p++)
        if (*p == '\n') *p = ' ';
    printf("PROBE %s %s %s\n", name, outcome, detail[0] ? detail : "-");
    fflush(stdout);
}

/* Report a syscall's result: fd/0 or more is ALLOWED, otherwise BLOCKED with errno
 * (or UNSUPPORTED for the errnos that mean "this kernel has no such thing"). */
void report_rc(const char *name, long rc, int err, int unsupported_errno) {
    if (rc >= 0) {
        report(name, "ALLOWED", "rc=%ld", rc);
    } else if (unsupported_errno && err == unsupported_errno) {
        report(name, "UNSUPPORTED", "errno=%s", strerrorname_np(err));
    } else {
        report(name, "BLOCKED", "errno=%s", strerrorname_np(err));
    }
}

static int probe_userns(void) {
    long rc = unshare(CLONE_NEWUSER);
    report_rc("userns", rc, errno, 0);
    return 0;
}

static int probe_mount_tmpfs(void) {
    mkdir("/tmp/probe-mnt", 0755);
    long rc = mount("probe", "/tmp/probe-mnt", "tmpfs", 0, "size=64k");
    int err = errno;
    if (rc == 0) umount2("/tmp/probe-mnt", MNT_DETACH);
    report_rc("mount-tmpfs", rc, err, 0);
    return 0;
}

/* cgroup v1 release_agent: mount a v1 hierarchy (the classic escape needs that) or
 * find a writable release_agent among the mounted ones. The file is never written. */
static int probe_release_agent(void) {
    mkdir("/tmp/probe-cg", 0755);
    const char *ctrls[] = {"rdma", "memory", "pids", "none,name=probe", NULL};
    int mount_err = 0;
    for (int i = 0; ctrls[i]; i++) {
        if (mount("cgroup", "/tmp/probe-cg", "cgroup", 0, ctrls[i]) == 0) {
            int fd = open("/tmp/probe-cg/release_agent", O_WRONLY | O_CLOEXEC);
            int err = errno;
            umount2("/tmp/probe-cg", MNT_DETACH);
            if (fd >= 0) {
                close(fd);
                report("release-agent", "ALLOWED", "mounted cgroup v1 (%s), release_agent writable", ctrls[i]);
            } else {
                report("release-agent", "ALLOWED", "mounted cgroup v1 (%s); release_agent open: %s", ctrls[i], strerrorname_np(err));
            }
            return 0;
        }
        mount_err = errno;
    }
    DIR *d = opendir("/sys/fs/cgroup");
    int open_err = ENOENT;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            char path[512];
            snprintf(path, sizeof path, "/sys/fs/cgroup/%s/release_agent", e->d_name);
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                close(fd);
                closedir(d);
                report("release-agent", "ALLOWED", "%s writable", path);
                return 0;
            }
            if (errno != ENOENT && errno != ENOTDIR) open_err = errno;
        }
        closedir(d);
    }
    report("release-agent", "BLOCKED", "mount errno=%s; release_agent open errno=%s",
           strerrorname_np(mount_err), strerrorname_np(open_err));
    return 0;
}

static int probe_socket(const char *name, int family, int type, int proto, int unsupported) {
    int fd = socket(family, type | SOCK_CLOEXEC, proto);
    int err = errno;
    if (fd >= 0) close(fd);
    report_rc(name, fd, err, unsupported);
    return 0;
}

static int probe_keyctl(void) {
    long rc = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0);
    report_rc("keyctl", rc, errno, 0);
    return 0;
}

static int probe_bpf(void) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    long rc = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    int err = errno;
    if (rc >= 0) close((int)rc);
    report_rc("bpf", rc, err, 0);
    return 0;
}

static int probe_perf(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    long rc = syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    int err = errno;
    if (rc >= 0) close((int)rc);
    report_rc("perf_event_open", rc, err, 0);
    return 0;
}

static int probe_userfaultfd(void) {
    long rc = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    int err = errno;
    if (rc >= 0) close((int)rc);
    report_rc("userfaultfd", rc, err, 0);
    return 0;
}

static int probe_io_uring(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long rc = syscall(SYS_io_uring_setup, 4, &p);
    int err = errno;
    if (rc >= 0) close((int)rc);
    report_rc("io_uring_setup", rc, err, 0);
    return 0;
}

static int probe_sysrq(void) {
    /* Opening for writing is the breach; nothing is written. */
    int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
    int err = errno;
    if (fd >= 0) close(fd);
    report_rc("sysrq-trigger", fd, err, ENOENT); /* ENOENT: kernel without MAGIC_SYSRQ */
    return 0;
}

static int probe_kcore(void) {
    int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        /* ENOENT: kernel without PROC_KCORE */
        report("kcore", errno == ENOENT ? "UNSUPPORTED" : "BLOCKED", "open errno=%s", strerrorname_np(errno));
        return 0;
    }
    struct stat st;
    fstat(fd, &st);
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    if (n > 0)
        report("kcore", "ALLOWED", "read %zd bytes", n);
    else if (n == 0)
        report("kcore", "BLOCKED", "masked: read 0 bytes (%s %u:%u)",
               S_ISCHR(st.st_mode) ? "char device" : "file", major(st.st_rdev), minor(st.st_rdev));
    else
        report("kcore", "BLOCKED", "read errno=%s", strerrorname_np(err));
    return 0;
}

/* As root: drop to uid/gid 1000, then exec the setuid-root copy of this program, which
 * reports whether it became root again. */
static int probe_setuid(const char *suid_path) {
    if (setgroups(0, NULL) != 0 || setgid(1000) != 0 || setuid(1000) != 0) {
        report("setuid", "BLOCKED", "could not drop to uid 1000 first: %s", strerrorname_np(errno));
        return 0;
    }
    execl(suid_path, suid_path, "setuid-check", (char *)NULL);
    report("setuid", "BLOCKED", "exec %s: %s", suid_path, strerrorname_np(errno));
    return 0;
}

static int probe_setuid_check(void) {
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    char nnp[256] = "?";
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "NoNewPrivs:", 11)) snprintf(nnp, sizeof nnp, "%s", line + 11);
        fclose(f);
    }
    for (char *p = nnp; *p; p++)
        if (*p == '\t' || *p == ' ' || *p == '\n') memmove(p, p + 1, strlen(p));
    if (e == 0)
        report("setuid", "ALLOWED", "uid %u gained euid 0 (NoNewPrivs=%s)", r, nnp);
    else
        report("setuid", "BLOCKED", "euid stayed %u (NoNewPrivs=%s)", e, nnp);
    return 0;
}

/* CVE-2019-5736 class: for `seconds`, watch for processes whose executable is not a
 * file of this container (the runtime's helper during an exec) and try to open that
 * executable for writing through /proc/PID/exe. Nothing is ever written. */
static int probe_exe_watch(int seconds) {
    struct stat root;
    if (stat("/", &root) != 0) {
        report("proc-exe-overwrite", "BLOCKED", "stat /: %s", strerrorname_np(errno));
        return 0;
    }
    pid_t self = getpid();
    time_t end = time(NULL) + seconds;
    int seen = 0, opened = 0, last_err = 0;
    char seen_path[256] = "";
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        if (!d) break;
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == self) continue;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            struct stat st;
            if (stat(path, &st) != 0) {
                /* Not allowed to even look: counts as seen only with EACCES/EPERM. */
                if (errno == EACCES || errno == EPERM) {
                    seen++;
                    last_err = errno;
                }
                continue;
            }
            if (st.st_dev == root.st_dev) continue; /* one of this container's files */
            seen++;
            if (!seen_path[0]) {
                ssize_t n = readlink(path, seen_path, sizeof seen_path - 1);
                seen_path[n > 0 ? n : 0] = 0;
            }
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                opened++;
                close(fd);
            } else {
                last_err = errno;
            }
        }
        closedir(d);
    }
    if (opened)
        report("proc-exe-overwrite", "ALLOWED", "opened a runtime executable (%s) for writing %d times", seen_path, opened);
    else if (seen)
        report("proc-exe-overwrite", "BLOCKED", "saw runtime executable %d times (%s), open for write: %s",
               seen, seen_path[0] ? seen_path : "?", strerrorname_np(last_err));
    else
        report("proc-exe-overwrite", "UNOBSERVED", "no runtime process became visible during exec");
    return 0;
}

/* CVE-2024-21626 class: the process started with cwd /proc/self/fd/N. If the runtime
 * leaked a host directory fd, the cwd is outside the container's root. */
static int probe_cwd(const char *canary) {
    char buf[4096];
    char *cwd = getcwd(buf, sizeof buf);
    int err = errno;
    char rel[4200];
    snprintf(rel, sizeof rel, "../../../../../../../../../..%s", canary);
    int fd = open(rel, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        report("cwd-leaked-fd", "ALLOWED", "host file %s reachable from cwd", canary);
    } else if (!cwd) {
        report("cwd-leaked-fd", "ALLOWED", "cwd outside the root (getcwd: %s)", strerrorname_np(err));
    } else if (cwd[0] != '/') {
        report("cwd-leaked-fd", "ALLOWED", "cwd outside the root: %s", cwd);
    } else {
        report("cwd-leaked-fd", "BLOCKED", "cwd is %s inside the container", cwd);
    }
    return 0;
}

/* CVE-2025-31133 class: the image's /dev/null is a symlink to a host path. The runtime
 * must not follow it: /dev/null and the masked paths must be the real null device (or
 * an empty tmpfs), and writes to them must not reach the host file. */
static int probe_devnull(void) {
    const char *paths[] = {"/dev/null", "/proc/kcore", "/proc/keys", "/proc/timer_list", NULL};
    char bad[1024] = "";
    for (int i = 0; paths[i]; i++) {
        struct stat st;
        if (lstat(paths[i], &st) != 0) continue;
        int is_null = S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
        if (!is_null) {
            size_t l = strlen(bad);
            snprintf(bad + l, sizeof bad - l, "%s is %s; ", paths[i],
                     S_ISLNK(st.st_mode) ? "a symlink" : S_ISREG(st.st_mode) ? "a regular file" : "not 1:3");
        }
        int fd = open(paths[i], O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, "stockade-probe\n", 15);
            (void)w;
            close(fd);
        }
    }
    if (bad[0])
        report("devnull-symlink", "ALLOWED", "%s", bad);
    else
        report("devnull-symlink", "BLOCKED", "/dev/null and masked paths are the null device 1:3");
    return 0;
}

static int probe_signal(int pid) {
    long rc = kill(pid, 0);
    report_rc("signal-other-pod", rc, errno, 0);
    rc = ptrace(PTRACE_SEIZE, pid, 0, 0);
    int err = errno;
    if (rc == 0) ptrace(PTRACE_DETACH, pid, 0, 0);
    report_rc("ptrace-other-pod", rc, err, 0);
    return 0;
}

/* Whether this process runs in the network namespace whose nsfs inode is `host_ino`. */
static int probe_netns(unsigned long long host_ino) {
    struct stat st;
    if (stat("/proc/self/ns/net", &st) != 0) {
        report("host-netns-by-path", "BLOCKED", "stat /proc/self/ns/net: %s", strerrorname_np(errno));
        return 0;
    }
    if ((unsigned long long)st.st_ino == host_ino)
        report("host-netns-by-path", "ALLOWED", "in the host's network namespace (net:[%llu])", host_ino);
    else
        report("host-netns-by-path", "BLOCKED", "in its own network namespace (net:[%llu])",
               (unsigned long long)st.st_ino);
    return 0;
}

/* Fork children that sleep until the container ends, up to `max`. */
static int probe_forkbomb(int max) {
    int n = 0, err = 0;
    for (; n < max; n++) {
        pid_t p = fork();
        if (p == 0) {
            for (;;) pause();
        }
        if (p < 0) {
            err = errno;
            break;
        }
    }
    if (n >= max)
        report("fork-bomb", "ALLOWED", "forked all %d processes", n);
    else
        report("fork-bomb", "BLOCKED", "fork failed after %d processes: %s", n, strerrorname_np(err));
    return 0;
}

/* Touch `mib` MiB in 16 MiB steps, printing progress (the container may die mid-way). */
static int probe_membomb(int mib) {
    int done = 0;
    for (; done < mib; done += 16) {
        char *p = malloc(16 << 20);
        if (!p) {
            report("memory-bomb", "BLOCKED", "malloc failed after %d MiB", done);
            return 0;
        }
        memset(p, 0xa5, 16 << 20);
        printf("MEM %d\n", done + 16);
        fflush(stdout);
    }
    report("memory-bomb", "ALLOWED", "allocated and touched %d MiB", done);
    return 0;
}

/* `workers` processes spin for `seconds` each; prints the CPU time they got per second
 * of wall time (2 cores: 2.0 unlimited). */
static int probe_cpuhog(int workers, int seconds) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < workers; i++) {
        if (fork() == 0) {
            struct timespec s, n;
            clock_gettime(CLOCK_MONOTONIC, &s);
            volatile unsigned long x = 0;
            do {
                for (int k = 0; k < 1000000; k++) x++;
                clock_gettime(CLOCK_MONOTONIC, &n);
            } while (n.tv_sec - s.tv_sec < seconds);
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    report("cpu-hog", "ALLOWED", "cores_used=%.2f (cpu %.2fs over %.2fs wall, %d workers)", cpu / wall, cpu, wall, workers);
    return 0;
}

static int usage(void) {
    fprintf(stderr,
            "usage: probe userns|mount-tmpfs|release-agent|af-packet|af-vsock|af-alg|keyctl|bpf|"
            "perf|userfaultfd|io-uring|sysrq|kcore|setuid SUID|setuid-check|exe-watch SECS|"
            "cwd CANARY|devnull|signal PID|forkbomb MAX|membomb MIB|cpuhog N SECS|all|"
            "name-to-handle|fileless-exec|seccomp-listener|device PATH|whoami|strict\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *p = argv[1];
    if (!strcmp(p, "userns")) return probe_userns();
    if (!strcmp(p, "mount-tmpfs")) return probe_mount_tmpfs();
    if (!strcmp(p, "release-agent")) return probe_release_agent();
    if (!strcmp(p, "af-packet")) return probe_socket("af-packet", AF_PACKET, SOCK_RAW, htons(0x0003), 0);
    if (!strcmp(p, "af-vsock")) return probe_socket("af-vsock", AF_VSOCK, SOCK_STREAM, 0, EAFNOSUPPORT);
    if (!strcmp(p, "af-alg")) return probe_socket("af-alg", AF_ALG, SOCK_SEQPACKET, 0, EAFNOSUPPORT);
    if (!strcmp(p, "keyctl")) return probe_keyctl();
    if (!strcmp(p, "bpf")) return probe_bpf();
    if (!strcmp(p, "perf")) return probe_perf();
    if (!strcmp(p, "userfaultfd")) return probe_userfaultfd();
    if (!strcmp(p, "io-uring")) return probe_io_uring();
    if (!strcmp(p, "sysrq")) return probe_sysrq();
    if (!strcmp(p, "kcore")) return probe_kcore();
    if (!strcmp(p, "setuid") && argc > 2) return probe_setuid(argv[2]);
    if (!strcmp(p, "setuid-check")) return probe_setuid_check();
    if (!strcmp(p, "exe-watch") && argc > 2) return probe_exe_watch(atoi(argv[2]));
    if (!strcmp(p, "cwd") && argc > 2) return probe_cwd(argv[2]);
    if (!strcmp(p, "devnull")) return probe_devnull();
    if (!strcmp(p, "signal") && argc > 2) return probe_signal(atoi(argv[2]));
    if (!strcmp(p, "netns") && argc > 2) return probe_netns(strtoull(argv[2], NULL, 10));
    if (!strcmp(p, "forkbomb") && argc > 2) return probe_forkbomb(atoi(argv[2]));
    if (!strcmp(p, "membomb") && argc > 2) return probe_membomb(atoi(argv[2]));
    if (!strcmp(p, "cpuhog") && argc > 3) return probe_cpuhog(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(p, "name-to-handle")) return probe_name_to_handle();
    if (!strcmp(p, "fileless-exec")) return probe_fileless_exec(argv[0]);
    if (!strcmp(p, "fileless-exec-ran")) return 42;
    if (!strcmp(p, "seccomp-listener")) return probe_seccomp_listener();
    if (!strcmp(p, "device") && argc > 2) return probe_device(argv[2]);
    if (!strcmp(p, "whoami")) return probe_whoami();
    if (!strcmp(p, "all") || !strcmp(p, "strict")) {
        /* The syscall-level probes in one container (one start instead of thirteen),
         * each in its own child so one that succeeds (unshare) cannot affect the next.
         * `strict`: the calls only the strict profile denies. */
        static const char *const every[] = {"userns", "mount-tmpfs", "release-agent", "af-packet",
                                            "af-vsock", "af-alg", "keyctl", "bpf", "perf",
                                            "userfaultfd", "io-uring", "sysrq", "kcore", NULL};
        static const char *const strict[] = {"name-to-handle", "fileless-exec",
                                             "seccomp-listener", NULL};
        const char *const *all = !strcmp(p, "all") ? every : strict;
        for (int i = 0; all[i]; i++) {
            fflush(stdout);
            pid_t c = fork();
            if (c == 0) {
                char *args[] = {argv[0], (char *)all[i], NULL};
                _exit(main(2, args));
            }
            if (c > 0) waitpid(c, NULL, 0);
        }
        return 0;
    }
    return usage();
}
