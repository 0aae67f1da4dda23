//! Values from a request (annotations, names) in error messages and audit lines.

/// `value` quoted (control characters escaped) and at most 100 characters, however long
/// the value: a pod's annotation cannot flood a log or forge its lines.
pub fn quoted(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &value[..end], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = format!("\u{1b}{}", "x".repeat(200));
        let q = quoted(&long);
        assert!(q.starts_with("\"\\u{1b}xx"), "{q}");
        assert!(q.ends_with("... (201 bytes)"), "{q}");
    }
}
