//! Installing compiled filters: no_new_privs, then seccomp(2) once per BPF program.
//!
//! Runs in the container's init between fork and exec: nothing here may allocate, lock or
//! log. Errors carry only integers and static strings.

use super::{Arch, CompiledFilter, SeccompError};

/// `struct sock_fprog` from `<linux/filter.h>`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs each profile's programs, in order, in the calling thread (and, for profiles
/// with SECCOMP_FILTER_FLAG_TSYNC, its other threads). Later profiles can only narrow
/// earlier ones. `log_denials` sets SECCOMP_FILTER_FLAG_LOG (see the module docs for the
/// one exception). Everything is checked before the first change, so a refusal from the
/// checks leaves the process untouched; a failure of seccomp(2) itself may leave earlier
/// programs installed, which only restricts the process further — the caller must not exec.
pub fn install_all(filters: &[&CompiledFilter], log_denials: bool) -> Result<(), SeccompError> {
    let running =
        Arch::running().ok_or(SeccompError::UnsupportedHostArch(std::env::consts::ARCH))?;
    for filter in filters {
        if filter.arch != running {
            return Err(SeccompError::WrongArch {
                compiled: filter.arch.name(),
                running: running.name(),
            });
        }
        for program in &filter.programs {
            if program.bpf.is_empty() || program.bpf.len() > super::BPF_MAX_LEN {
                return Err(SeccompError::TooLarge {
                    filter: program.role.name(),
                    len: program.bpf.len(),
                });
            }
        }
    }

    // SAFETY: prctl with integer arguments only; it reads no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(SeccompError::NoNewPrivs {
            errno: last_errno(),
        });
    }

    let mut index = 0;
    for filter in filters {
        for program in &filter.programs {
            let mut flags: libc::c_ulong = 0;
            if (log_denials || filter.log) && program.log {
                flags |= libc::SECCOMP_FILTER_FLAG_LOG;
            }
            if filter.tsync {
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC;
            }
            let fprog = SockFprog {
                // Checked above: at most 4096.
                len: program.bpf.len() as libc::c_ushort,
                filter: program.bpf.as_ptr(),
            };
            // SAFETY: `fprog` points at `program.bpf`, a live slice of repr(C) sock_filter
            // of the stated length, which the kernel only reads (and copies) during the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                    flags,
                    &fprog as *const SockFprog,
                )
            };
            if rc > 0 {
                return Err(SeccompError::ThreadSync { tid: rc as i64 });
            }
            if rc != 0 {
                return Err(SeccompError::Install {
                    program: index,
                    errno: last_errno(),
                });
            }
            index += 1;
        }
    }
    Ok(())
}

fn last_errno() -> i32 {
    // Reading errno does not allocate.
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
