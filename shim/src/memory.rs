//! The shim's own memory: one pod's shim runs as long as the pod, so what it keeps per
//! pod counts hundreds of times on a full node.
//!
//! glibc gives every thread that allocates an arena of its own (64 MiB reserved, what it
//! touched stays resident); the shim's few threads share one instead. Memory freed after a
//! Create is handed back to the kernel ([`trim`]) once the shim has been quiet for a moment
//! (the zygote after each of its requests), rather than kept for a next Create that may
//! never come.

/// One malloc arena for the whole process. Call before any thread starts (the zygote,
/// forked later, inherits it).
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt with integer arguments; called while single-threaded.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Return the free pages of the heap to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the arena locks itself; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
