/* Shared by the probe's source files: the one output format of every attempt. */
#ifndef STOCKADE_PROBE_H
#define STOCKADE_PROBE_H

/* Print `PROBE <name> <outcome> <detail>` (newlines in detail become spaces). */
void report(const char *name, const char *outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* rc >= 0: ALLOWED; err == unsupported_errno (if non-zero): UNSUPPORTED; else BLOCKED. */
void report_rc(const char *name, long rc, int err, int unsupported_errno);

/* probe_rules.c: the probes of the profile rules (host-devices, run-as-root, strict's
 * seccomp narrowing). Each returns the process exit code. */
int probe_name_to_handle(void);
int probe_fileless_exec(const char *self);
int probe_seccomp_listener(void);
int probe_device(const char *path);
int probe_whoami(void);

#endif
