//! Cheap field extraction from JSON text frames.
//!
//! The receive path sees hundreds of thousands of frames a second, so it must
//! not build a JSON tree per frame. These helpers find a key by its quoted
//! name followed by `:` and slice out its scalar value. They rely on what the
//! protocol guarantees: the top-level fields (`type`, `seq`, `gift_id`, …) are
//! plain scalars, and a quoted key followed by a colon cannot occur inside a
//! JSON string value (quotes there are escaped).

/// The fields of a room frame the load generator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFields<'a> {
    pub kind: &'a str,
    pub seq: Option<u64>,
    pub epoch: Option<u64>,
    pub gift_id: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// Scans a frame for `type`, `seq`, `epoch`, `gift_id` and (for errors) `code`.
pub fn scan_frame(text: &str) -> FrameFields<'_> {
    let kind = str_field(text, "\"type\"").unwrap_or("");
    let gift_id = match kind {
        "gift" | "ack" => str_field(text, "\"gift_id\""),
        _ => None,
    };
    let code = if kind == "error" {
        str_field(text, "\"code\"")
    } else {
        None
    };
    FrameFields {
        kind,
        seq: u64_field(text, "\"seq\""),
        epoch: u64_field(text, "\"epoch\""),
        gift_id,
        code,
    }
}

/// The raw value text after `quoted_key:` (whitespace skipped), or `None`.
fn value_after<'a>(text: &'a str, quoted_key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = text[from..].find(quoted_key) {
        let after = from + i + quoted_key.len();
        let rest = text[after..].trim_start();
        if let Some(value) = rest.strip_prefix(':') {
            return Some(value.trim_start());
        }
        from = after;
    }
    None
}

/// The string value of a key; escapes are not decoded (ids never contain them).
pub fn str_field<'a>(text: &'a str, quoted_key: &str) -> Option<&'a str> {
    let value = value_after(text, quoted_key)?.strip_prefix('"')?;
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(&value[..i]),
            _ => i += 1,
        }
    }
    None
}

/// The unsigned integer value of a key (a bare number or a numeric string).
pub fn u64_field(text: &str, quoted_key: &str) -> Option<u64> {
    let value = value_after(text, quoted_key)?;
    let value = value.strip_prefix('"').unwrap_or(value);
    let end = value
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// A 64-bit FNV-1a hash: a cheap, stable fingerprint of a gift id, so the
/// hot path stores and compares integers instead of strings.
pub fn fingerprint(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, kind: &str, seq: Option<u64>, gift: Option<&str>) {
        let f = scan_frame(text);
        assert_eq!(f.kind, kind, "{text}");
        assert_eq!(f.seq, seq, "{text}");
        assert_eq!(f.gift_id, gift, "{text}");
    }

    #[test]
    fn scans_room_frames() {
        check(
            r#"{"room_id":"r1","epoch":3,"seq":17,"type":"gift","gift_id":"g-9","sender":{"id":"u","name":"n"},"message":"\"seq\": 99"}"#,
            "gift",
            Some(17),
            Some("g-9"),
        );
        check(
            r#"{"type": "welcome", "room_id": "r", "epoch": 1, "seq": 0, "server_time": "x"}"#,
            "welcome",
            Some(0),
            None,
        );
        check(
            r#"{"type":"ack","seq":5,"gift_id":"g1","text":"thanks"}"#,
            "ack",
            Some(5),
            Some("g1"),
        );
        check(
            r#"{"type":"resync_required"}"#,
            "resync_required",
            None,
            None,
        );
        check("not json", "", None, None);
    }

    #[test]
    fn error_frames_carry_their_code() {
        let f = scan_frame(r#"{"type":"error","code":"slow_consumer","message":"m"}"#);
        assert_eq!(f.code, Some("slow_consumer"));
    }

    #[test]
    fn a_key_inside_a_string_value_is_skipped() {
        // The key text appears first inside a value, without a colon after it.
        let t = r#"{"message":"see \"seq\" docs","seq":4}"#;
        assert_eq!(u64_field(t, "\"seq\""), Some(4));
        assert_eq!(u64_field(r#"{"ts":"123"}"#, "\"ts\""), Some(123));
    }
}
