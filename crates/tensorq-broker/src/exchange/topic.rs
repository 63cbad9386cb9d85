//! The topic exchange: dot-separated words, where `*` in a binding key matches exactly one word
//! and `#` matches zero or more words, as RabbitMQ matches them: an empty routing key or binding
//! key has no words (so `#` matches it and `*` does not), while empty words between dots count.

fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// True when the binding pattern routes `routing_key`.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let pat = words(pattern);
    let key = words(routing_key);
    // Iterative matcher with one backtrack point per `#` (the classic wildcard algorithm,
    // over words instead of characters): linear in practice, never exponential.
    let (mut p, mut k) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pat.len() && pat[p] == "#" {
            star = Some((p, k));
            p += 1;
        } else if p < pat.len() && (pat[p] == "*" || pat[p] == key[k]) {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == "#" {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rabbitmq_examples() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(matches("#", ""));
        assert!(matches("#", "a.b"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(!matches("a.#.b", "a.x.y.c"));
        assert!(!matches("*", ""));
        assert!(!matches("*.#", ""));
        assert!(!matches("*", "a.b"));
        assert!(matches("#.#", "a"));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.*", "a"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("a..b", "a..b"));
    }

    /// The obvious recursive definition, used as the reference model.
    fn reference(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| reference(rest, &k[i..])),
            Some((w, rest)) => match k.split_first() {
                Some((kw, krest)) => (*w == "*" || w == kw) && reference(rest, krest),
                None => false,
            },
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(p in proptest::collection::vec(prop_oneof!["a", "b", "\\*", "#", ""], 1..6),
                                     k in proptest::collection::vec(prop_oneof!["a", "b", ""], 1..6)) {
            let pat = p.join(".");
            let key = k.join(".");
            let pv = words(&pat);
            let kv = words(&key);
            prop_assert_eq!(matches(&pat, &key), reference(&pv, &kv), "{} vs {}", pat, key);
        }
    }
}
