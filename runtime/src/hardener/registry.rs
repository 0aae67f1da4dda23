//! Registry allowlist: which registry an image name comes from, and whether a pattern
//! admits it.

/// The registry host and the full repository path of an image reference, normalized the
/// way containerd does: a name without a host is docker.io's, and a one-segment docker.io
/// name lives under `library/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOrigin {
    /// `docker.io`, `localhost:5000`, `myreg.azurecr.io`.
    pub domain: String,
    /// `docker.io/library/busybox` (no tag, no digest).
    pub repository: String,
}

impl ImageOrigin {
    pub fn parse(reference: &str) -> Option<ImageOrigin> {
        let reference = reference.trim();
        if reference.is_empty() || reference.chars().any(char::is_whitespace) {
            return None;
        }
        // Drop the digest, then a tag (a ':' after the last '/').
        let name = reference.split('@').next()?;
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let name = match name[last_slash..].find(':') {
            Some(colon) => &name[..last_slash + colon],
            None => name,
        };
        if name.is_empty() || name.ends_with('/') {
            return None;
        }
        let (first, rest) = match name.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (name, None),
        };
        let first_is_host = first.contains('.') || first.contains(':') || first == "localhost";
        let (domain, path) = match (first_is_host, rest) {
            (true, Some(rest)) => (first.to_ascii_lowercase(), rest.to_string()),
            (_, None) => ("docker.io".to_string(), format!("library/{name}")),
            (false, Some(_)) => ("docker.io".to_string(), name.to_string()),
        };
        if path.is_empty() {
            return None;
        }
        Some(ImageOrigin {
            repository: format!("{domain}/{path}"),
            domain,
        })
    }

    /// Does a profile's registry pattern admit this image?
    /// - `*.azurecr.io`: any host under that domain;
    /// - `ghcr.io/acme`: repositories under that path (whole segments only);
    /// - `docker.io` or `localhost:5000`: that registry; a pattern without a port admits
    ///   the host on any port.
    pub fn matches(&self, pattern: &str) -> bool {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix("*.") {
            let host = self.host();
            return host.len() > suffix.len()
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
        }
        if pattern.contains('/') {
            return self.repository == pattern
                || self
                    .repository
                    .strip_prefix(&pattern)
                    .is_some_and(|rest| rest.starts_with('/'));
        }
        self.domain == pattern || (!pattern.contains(':') && self.host() == pattern)
    }

    fn host(&self) -> &str {
        self.domain.split(':').next().unwrap_or(&self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(r: &str) -> ImageOrigin {
        ImageOrigin::parse(r).unwrap()
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(origin("busybox").repository, "docker.io/library/busybox");
        assert_eq!(
            origin("busybox:1.36").repository,
            "docker.io/library/busybox"
        );
        assert_eq!(origin("acme/app:v1").repository, "docker.io/acme/app");
        assert_eq!(origin("localhost:5000/app:v1").domain, "localhost:5000");
        assert_eq!(
            origin("myreg.azurecr.io/team/app@sha256:abcd").repository,
            "myreg.azurecr.io/team/app"
        );
        assert_eq!(
            origin("registry.k8s.io/pause:3.9").repository,
            "registry.k8s.io/pause"
        );
        for bad in ["", "   ", "a b", "docker.io/", "@sha256:x"] {
            assert!(ImageOrigin::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        assert!(origin("busybox").matches("docker.io"));
        assert!(origin("docker.io/library/busybox").matches("docker.io/library"));
        assert!(!origin("docker.io/libraryx/busybox").matches("docker.io/library"));
        assert!(origin("a.azurecr.io/x").matches("*.azurecr.io"));
        assert!(!origin("azurecr.io/x").matches("*.azurecr.io"));
        assert!(!origin("evilazurecr.io/x").matches("*.azurecr.io"));
        assert!(!origin("a.azurecr.io.evil.com/x").matches("*.azurecr.io"));
        assert!(origin("localhost:5000/x").matches("localhost"));
        assert!(!origin("localhost:5000/x").matches("localhost:6000"));
        assert!(!origin("quay.io/x").matches("docker.io"));
        assert!(origin("Quay.IO/x").matches("quay.io"));
    }
}
