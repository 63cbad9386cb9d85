//! The headers exchange: a binding's arguments are matched against the message headers.
//!
//! `x-match` selects the rule: `all` (the default) needs every binding argument present with an
//! equal value, `any` needs one; `all-with-x` and `any-with-x` also compare arguments whose
//! names start with `x-`, which the plain forms skip. A binding argument of type void matches
//! any value of a present header.

use tensorq_amqp::error::AmqpError;
use tensorq_amqp::{AMQPValue, FieldTable};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

fn rule(args: &FieldTable) -> Result<Rule, String> {
    match args.inner().get("x-match") {
        None => Ok(Rule::All),
        Some(AMQPValue::LongString(s)) => parse(&String::from_utf8_lossy(s.as_bytes())),
        Some(AMQPValue::ShortString(s)) => parse(s.as_str()),
        Some(other) => Err(format!("{other:?}")),
    }
}

fn parse(s: &str) -> Result<Rule, String> {
    match s {
        "all" => Ok(Rule::All),
        "any" => Ok(Rule::Any),
        "all-with-x" => Ok(Rule::AllWithX),
        "any-with-x" => Ok(Rule::AnyWithX),
        other => Err(other.to_owned()),
    }
}

/// 406 when the binding's `x-match` is not one of the four rules.
pub fn check_binding(args: &FieldTable) -> Result<(), AmqpError> {
    rule(args).map(|_| ()).map_err(|v| {
        AmqpError::precondition_failed(format!(
            "Invalid x-match field value {v}; expected all, any, all-with-x, or any-with-x"
        ))
    })
}

/// True when the binding `args` route a message with `headers`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let Ok(rule) = rule(args) else {
        return false;
    };
    let with_x = matches!(rule, Rule::AllWithX | Rule::AnyWithX);
    let wanted = args
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")));
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let hit = |(k, v): (&tensorq_amqp::ShortString, &AMQPValue)| match headers.get(k.as_str()) {
        Some(h) => matches!(v, AMQPValue::Void) || h == v,
        None => false,
    };
    match rule {
        Rule::All | Rule::AllWithX => wanted.into_iter().all(hit),
        Rule::Any | Rule::AnyWithX => wanted.into_iter().any(hit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn rules() {
        let msg = table(&[("a", s("1")), ("b", s("2")), ("x-k", s("3"))]);
        let all = table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
        assert!(matches(&all, Some(&msg)));
        let all_miss = table(&[("a", s("1")), ("c", s("2"))]);
        assert!(!matches(&all_miss, Some(&msg)));
        let any = table(&[("x-match", s("any")), ("a", s("9")), ("b", s("2"))]);
        assert!(matches(&any, Some(&msg)));
        // plain all skips x- arguments; all-with-x compares them
        let allx_skip = table(&[("x-match", s("all")), ("a", s("1")), ("x-k", s("nope"))]);
        assert!(matches(&allx_skip, Some(&msg)));
        let allx = table(&[
            ("x-match", s("all-with-x")),
            ("a", s("1")),
            ("x-k", s("nope")),
        ]);
        assert!(!matches(&allx, Some(&msg)));
        let anyx = table(&[("x-match", s("any-with-x")), ("x-k", s("3"))]);
        assert!(matches(&anyx, Some(&msg)));
        let anyx_plain = table(&[("x-match", s("any")), ("x-k", s("3"))]);
        assert!(!matches(&anyx_plain, Some(&msg)));
        // void matches presence
        let void = table(&[("a", AMQPValue::Void)]);
        assert!(matches(&void, Some(&msg)));
        assert!(!matches(&void, None));
        // empty all matches everything
        assert!(matches(&FieldTable::default(), None));
        assert_eq!(
            check_binding(&table(&[("x-match", s("some"))]))
                .unwrap_err()
                .code,
            406
        );
    }
}
