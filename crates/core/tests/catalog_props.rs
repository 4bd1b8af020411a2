//! Property tests of the catalog file: a random valid catalog written as TOML
//! parses to exactly its stickers (prices through the currency's text
//! format), and random text never panics the parser. Case count:
//! `APPLAUSE_PROP_CASES` (a tenth of it: each case parses a whole file).

use applause_core::{Catalog, Currency};
use proptest::prelude::*;
use serde::Serialize;

fn cases() -> u32 {
    let all = std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u32);
    (all / 10).max(100)
}

#[derive(Serialize)]
struct File {
    sticker: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    id: String,
    name: String,
    price: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    animation: Option<String>,
}

fn entries() -> impl Strategy<Value = Vec<(String, String, i64, Option<String>)>> {
    prop::collection::btree_map(
        "[a-z0-9_-]{1,32}",
        (
            "[^\\p{C}]{0,63}[^\\p{C}\\s]",
            1i64..=1_000_000_000,
            prop::option::of("[a-z0-9./_-]{1,40}"),
        ),
        1..20,
    )
    .prop_map(|m| m.into_iter().map(|(id, (n, p, a))| (id, n, p, a)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn written_catalogs_parse_back(stickers in entries()) {
        let usd = Currency::usd();
        let file = File {
            sticker: stickers.iter().map(|(id, name, price, animation)| Entry {
                id: id.clone(),
                name: name.clone(),
                price: usd.format(*price),
                animation: animation.clone(),
            }).collect(),
        };
        let text = toml::to_string(&file).unwrap();
        let catalog = Catalog::from_toml(&text, &usd).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(catalog.stickers().len(), stickers.len());
        for ((id, name, price, animation), s) in stickers.iter().zip(catalog.stickers()) {
            prop_assert_eq!(&s.id, id);
            prop_assert_eq!(&s.name, name);
            prop_assert_eq!(s.price_minor, *price);
            let expected = animation.clone().unwrap_or_else(|| format!("{id}.webp"));
            prop_assert_eq!(&s.animation, &expected);
            prop_assert_eq!(catalog.get(id), Some(s));
        }
    }

    #[test]
    fn any_text_never_panics(text in prop_oneof![
        any::<String>(),
        "(\\[\\[sticker\\]\\]\n(id|name|price|animation) = \"[a-z0-9.]{0,6}\"\n){0,6}",
    ]) {
        let usd = Currency::usd();
        if let Ok(c) = Catalog::from_toml(&text, &usd) {
            prop_assert!(!c.stickers().is_empty());
            prop_assert!(c.stickers().iter().all(|s| s.price_minor > 0));
        }
    }
}
