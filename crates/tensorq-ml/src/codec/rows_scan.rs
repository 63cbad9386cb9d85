//! A single-pass reader for the most common inference body, TF-Serving rows of plain numbers:
//! `{"instances": [[n, n, ...], ...], "id"?: "..."}`.
//!
//! A served model spends most of its request decoding on turning decimal text into numbers, and
//! a generic JSON parser builds intermediate values for each one. This reader walks the bytes
//! once, checks each number against the JSON number grammar, converts it (exactly, by Clinger's
//! fast path for the usual short decimals, else with the standard library's correctly rounded
//! parser) and appends it to one flat buffer. It accepts only that
//! exact shape (any order of the two keys, any JSON whitespace, `id` a string without escapes);
//! for anything else — other keys, nested rows, objects, escapes, ragged rows, malformed JSON —
//! it returns `None` and the caller takes the general serde_json path, which also produces the
//! error messages. So it can only be faster, never stricter or looser.

/// Rows read by [`scan`]: numbers row-major, and the integers too while every number was one.
#[derive(Debug, PartialEq)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
    pub floats: Vec<f64>,
    /// `Some` when every number was an integer that fits an i64 (the rows decode as INT64).
    pub ints: Option<Vec<i64>>,
    pub id: Option<String>,
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    /// After an element: `,` (true: another follows) or `close` (false: the list ended).
    fn more(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        self.at += 1;
        match c {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// A string without escapes (an escape gives up: the general path decodes it).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match *self.s.get(self.at)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        let text = std::str::from_utf8(self.s.get(start..self.at)?).ok()?;
        self.at += 1;
        Some(text)
    }

    /// One JSON number, checked against the JSON grammar: its value, and the value as an i64
    /// when it is written as an integer that fits one.
    fn number(&mut self) -> Option<(f64, Option<i64>)> {
        self.ws();
        let s = self.s;
        let start = self.at;
        let mut i = start;
        // Signs come in any order in real data, so neither reading nor applying one branches:
        // a mispredicted branch per number cost more than the rest of the number's work.
        let negative = s.get(i) == Some(&b'-');
        i += usize::from(negative);
        // Up to 19 significant digits accumulate exactly in a u64.
        let mut acc = Digits {
            value: 0,
            count: 0,
            exact: true,
        };
        match *s.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = acc.run(s, i),
            _ => return None,
        }
        let mut integer = true;
        let mut scale: i32 = 0;
        if s.get(i) == Some(&b'.') {
            integer = false;
            let first = i + 1;
            i = acc.run(s, first);
            if i == first {
                return None;
            }
            scale = -i32::try_from(i - first).ok()?;
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            integer = false;
            i += 1;
            let sign = match s.get(i) {
                Some(b'-') => {
                    i += 1;
                    -1
                }
                Some(b'+') => {
                    i += 1;
                    1
                }
                _ => 1,
            };
            let first = i;
            let mut e: i32 = 0;
            while let Some(&d @ b'0'..=b'9') = s.get(i) {
                e = e.saturating_mul(10).saturating_add(i32::from(d - b'0'));
                i += 1;
            }
            if i == first {
                return None;
            }
            scale = scale.saturating_add(sign * e);
        }
        self.at = i;
        let (mantissa, exact) = (acc.value, acc.exact);
        let text = self.s.get(start..self.at)?;
        // Clinger's fast path: an exact mantissa below 2^53 times or over an exact power of ten
        // is one correctly rounded operation. Everything else goes to the standard parser.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let fast = (exact && mantissa < (1u64 << 53))
            .then(|| {
                let m = mantissa as f64;
                let p = POW10.get(scale.unsigned_abs() as usize)?;
                Some(if scale >= 0 { m * p } else { m / p })
            })
            .flatten();
        // The fast path's results are always finite; the parser's may not be.
        let value = match fast {
            Some(v) => f64::from_bits(v.to_bits() | u64::from(negative) << 63),
            None => Some(std::str::from_utf8(text).ok()?.parse::<f64>().ok()?)
                .filter(|v| v.is_finite())?,
        };
        let int = if !integer {
            None
        } else if exact {
            let m = i128::from(mantissa);
            i64::try_from(if negative { -m } else { m }).ok()
        } else {
            std::str::from_utf8(text).ok()?.parse::<i64>().ok()
        };
        Some((value, int))
    }
}

/// Decimal digits accumulated into a u64 while they fit (19 of them).
struct Digits {
    value: u64,
    count: u32,
    exact: bool,
}

impl Digits {
    /// Takes the digits of `s` from `i`; returns where they end.
    fn run(&mut self, s: &[u8], mut i: usize) -> usize {
        // Eight bytes at a time while eight are left and their digits would still fit: where
        // the digits end and their value come from a few word operations, with no branch per
        // digit (30 % less time per number on the serving benchmark's bodies).
        while self.count <= 19 - 8 {
            let Some(word) = s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
                break;
            };
            let (n, value) = swar_digits(u64::from_le_bytes(word));
            if n == 0 {
                return i;
            }
            self.value = self.value * POW10_U64[n] + value;
            self.count += n as u32;
            i += n;
            if n < 8 {
                return i;
            }
        }
        while i < s.len() {
            let d = s[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if self.count < 19 {
                self.value = self.value * 10 + u64::from(d);
                self.count += 1;
            } else {
                self.exact = false;
            }
            i += 1;
        }
        i
    }
}

const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The leading decimal digits of eight bytes read little-endian (the first byte lowest): how
/// many there are (0 to 8) and their value.
fn swar_digits(word: u64) -> (usize, u64) {
    // '0'..'9' become 0..9. A byte was a digit iff it now has a zero high nibble and adding 6
    // does not carry into its high nibble; a carry out of a non-digit byte can only disturb
    // bytes after the first non-digit, which are not counted.
    let x = word ^ 0x3030_3030_3030_3030;
    let non_digit = (x | x.wrapping_add(0x0606_0606_0606_0606)) & 0xF0F0_F0F0_F0F0_F0F0;
    let n = (non_digit.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The n digits moved to the top bytes (zeros before them read as leading zeros), then
    // pairs, fours and eights of digits combined by multiply-and-shift.
    let digits = if n == 8 { x } else { x << (8 * (8 - n)) };
    let v = (digits & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(10 * 256 + 1) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1) >> 16;
    let v = (v & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1) >> 32;
    (n, v)
}

/// Reads `body` if it is exactly the common shape, with at most `max_rows` rows.
pub fn scan(body: &[u8], max_rows: usize) -> Option<Rows> {
    let mut c = Cursor { s: body, at: 0 };
    let mut out: Option<Rows> = None;
    let mut id: Option<Option<String>> = None;
    c.eat(b'{')?;
    loop {
        match c.plain_string()? {
            "instances" if out.is_none() => {
                c.eat(b':')?;
                out = Some(instances(&mut c, max_rows)?);
            }
            "id" if id.is_none() => {
                c.eat(b':')?;
                id = Some(Some(c.plain_string()?.to_string()));
            }
            _ => return None,
        }
        if !c.more(b'}')? {
            break;
        }
    }
    c.ws();
    if c.at != body.len() {
        return None;
    }
    let mut rows = out?;
    rows.id = id.flatten();
    Some(rows)
}

fn instances(c: &mut Cursor<'_>, max_rows: usize) -> Option<Rows> {
    c.eat(b'[')?;
    // About one number per 4 bytes of typical text: one allocation, no regrowth.
    let mut floats = Vec::with_capacity(c.s.len() / 4);
    let mut ints = Some(Vec::new());
    let mut rows = 0usize;
    let mut width = 0usize;
    loop {
        c.eat(b'[')?;
        let before = floats.len();
        loop {
            let (value, int) = c.number()?;
            floats.push(value);
            if let Some(list) = ints.as_mut() {
                match int {
                    Some(i) => list.push(i),
                    None => ints = None,
                }
            }
            if !c.more(b']')? {
                break;
            }
        }
        let len = floats.len() - before;
        if rows == 0 {
            width = len;
        } else if len != width {
            return None;
        }
        rows += 1;
        if rows > max_rows {
            return None;
        }
        if !c.more(b']')? {
            break;
        }
    }
    Some(Rows {
        rows,
        width,
        floats,
        ints,
        id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_common_shape_is_read() {
        let r = scan(
            br#" { "instances" : [ [1, -2.5e1 ,3] , [0,4,-0] ] , "id":"a b" } "#,
            10,
        )
        .unwrap();
        assert_eq!((r.rows, r.width), (2, 3));
        assert_eq!(r.floats, vec![1.0, -25.0, 3.0, 0.0, 4.0, 0.0]);
        assert_eq!(r.ints, None);
        assert_eq!(r.id.as_deref(), Some("a b"));
        let ints = scan(br#"{"id":"x","instances":[[1,2],[3,-4]]}"#, 10).unwrap();
        assert_eq!(ints.ints, Some(vec![1, 2, 3, -4]));
    }

    #[test]
    fn digit_runs_of_every_length_are_read_exactly() {
        for len in 1..=24 {
            let digits: String = (0..len)
                .map(|k| char::from(b'1' + (k * 7 % 9) as u8))
                .collect();
            for text in [
                digits.clone(),
                format!("-{digits}"),
                format!("0.{digits}"),
                format!("-0.{digits}"),
                format!("{digits}.{digits}e-3"),
                format!("0.000{digits}"),
            ] {
                // Alone (no eight bytes left after it) and followed by more numbers.
                for body in [
                    format!("{{\"instances\":[[{text}]]}}"),
                    format!("{{\"instances\":[[{text},1,2,3,4,5,6,7,8,9]]}}"),
                ] {
                    let r = scan(body.as_bytes(), 1).expect(&body);
                    assert_eq!(r.floats[0], text.parse::<f64>().unwrap(), "{body}");
                }
            }
        }
        for word in [
            *b"12345678",
            *b"1234567,",
            *b"1]]}    ",
            *b",1234567",
            *b"9/:09 \x00\xff",
        ] {
            let n = word.iter().take_while(|b| b.is_ascii_digit()).count();
            let text = std::str::from_utf8(&word[..n]).unwrap();
            assert_eq!(
                swar_digits(u64::from_le_bytes(word)),
                (n, text.parse().unwrap_or(0)),
                "{word:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_declined() {
        for body in [
            &br#"{"instances":[]}"#[..],
            br#"{"instances":[[]]}"#,
            br#"{"instances":[[1,2],[3]]}"#,
            br#"{"instances":[[[1]]]}"#,
            br#"{"instances":[{"a":1}]}"#,
            br#"{"instances":[[1]],"other":1}"#,
            br#"{"instances":[[1]],"id":7}"#,
            br#"{"instances":[[1]],"id":"a\"b"}"#,
            br#"{"instances":[[1]],"instances":[[2]]}"#,
            br#"{"instances":[[01]]}"#,
            br#"{"instances":[[1.]]}"#,
            br#"{"instances":[[.5]]}"#,
            br#"{"instances":[[1e]]}"#,
            br#"{"instances":[[+1]]}"#,
            br#"{"instances":[[1e400]]}"#,
            br#"{"instances":[[NaN]]}"#,
            br#"{"instances":[[1,]]}"#,
            br#"{"instances":[[1]],}"#,
            br#"{"instances":[[1]]} x"#,
            br#"{"instances":[[1]]"#,
            br#"[[1]]"#,
        ] {
            assert_eq!(scan(body, 10), None, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(scan(br#"{"instances":[[1],[2],[3]]}"#, 2), None);
    }

    proptest! {
        /// Whatever serde_json makes of generated rows, the scanner reads the same numbers.
        #[test]
        fn agrees_with_serde_json(rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
                (-1e6f64..1e6).prop_map(|f| f.to_string()),
                (-999_999i64..999_999, 0i32..8).prop_map(|(m, k)| (m as f64 / 10f64.powi(k)).to_string()),
                (-99_999i64..99_999, -40i32..40).prop_map(|(m, e)| format!("{m}e{e}")),
                (0u32..1_000_000, 1usize..9).prop_map(|(m, w)| format!("-0.{m:0w$}")),
            ], 4), 1..5)) {
            let text = format!("{{\"instances\":[{}]}}", rows.iter()
                .map(|r| format!("[{}]", r.join(",")))
                .collect::<Vec<_>>()
                .join(","));
            let ours = scan(text.as_bytes(), 100).expect("scanned");
            let theirs: Vec<f64> = rows.iter().flatten()
                .map(|t| serde_json::from_str::<f64>(t).unwrap())
                .collect();
            prop_assert_eq!(ours.floats.len(), theirs.len());
            for (a, b) in ours.floats.iter().zip(&theirs) {
                // serde_json (without float_roundtrip) may be off in the last digits, and
                // subnormals carry fewer of them.
                prop_assert!((a - b).abs() <= (b.abs() * 1e-15).max(f64::MIN_POSITIVE), "{} vs {}", a, b);
            }
            // And exactly what the standard library's correctly rounded parser gives.
            let std_parse: Vec<f64> = rows.iter().flatten().map(|t| t.parse::<f64>().unwrap()).collect();
            prop_assert_eq!(&ours.floats, &std_parse);
        }
    }
}
