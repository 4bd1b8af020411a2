//! Property tests of the client frames of SPEC §4: a random valid frame,
//! written as JSON (any key order, extra whitespace), parses back to itself;
//! random text and random JSON never panic and are refused with
//! `invalid_json` or `invalid_request`. Case count: `APPLAUSE_PROP_CASES`.

use applause_gateway::protocol::ClientFrame;
use proptest::prelude::*;
use serde_json::json;

fn cases() -> u32 {
    std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        Just(ClientFrame::Ping),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, since_seq)| ClientFrame::Resume { epoch, since_seq }),
        (any::<String>(), any::<String>())
            .prop_map(|(gift_id, text)| ClientFrame::Ack { gift_id, text }),
    ]
}

fn to_json(frame: &ClientFrame, reversed: bool) -> String {
    let v = match frame {
        ClientFrame::Ping => json!({"type": "ping"}),
        ClientFrame::Resume { epoch, since_seq } => {
            json!({"type": "resume", "epoch": epoch, "since_seq": since_seq})
        }
        ClientFrame::Ack { gift_id, text } => {
            json!({"type": "ack", "gift_id": gift_id, "text": text})
        }
    };
    let mut fields: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{} : {v}", json!(k)))
        .collect();
    if reversed {
        fields.reverse();
    }
    format!("{{ {} }}", fields.join(" ,\n"))
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        prop_oneof![
            "ping|resume|ack|type|epoch|since_seq|gift_id|text",
            any::<String>()
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("type|epoch|since_seq|gift_id|text|x", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn refused_cleanly(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = ClientFrame::parse(text) {
        prop_assert!(
            matches!(e.code, "invalid_json" | "invalid_request"),
            "{}",
            e.code
        );
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn written_frames_parse_back(f in frame(), reversed in any::<bool>()) {
        prop_assert_eq!(ClientFrame::parse(&to_json(&f, reversed)), Ok(f));
    }

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        refused_cleanly(&text)?;
    }

    #[test]
    fn random_json_never_panics(v in any_json()) {
        let text = v.to_string();
        refused_cleanly(&text)?;
        if let Ok(f) = ClientFrame::parse(&text) {
            // Accepted only with the frame's own type tag.
            let tag = v["type"].as_str().unwrap_or_default();
            let expected = match f {
                ClientFrame::Ping => "ping",
                ClientFrame::Resume { .. } => "resume",
                ClientFrame::Ack { .. } => "ack",
            };
            prop_assert_eq!(tag, expected);
        }
    }
}
