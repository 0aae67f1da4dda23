//! Harness for tests against a private containerd.
