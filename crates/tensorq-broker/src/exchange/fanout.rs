//! The fanout exchange: every binding matches, whatever the routing key.

/// Always true: fanout ignores routing keys and headers.
pub fn matches() -> bool {
    true
}
