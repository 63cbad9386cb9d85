//! The direct exchange: a binding matches when its key equals the routing key.

/// True when `binding_key` routes `routing_key`.
pub fn matches(binding_key: &str, routing_key: &str) -> bool {
    binding_key == routing_key
}
