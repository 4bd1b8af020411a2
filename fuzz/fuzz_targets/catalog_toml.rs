//! The catalog TOML (`Catalog::from_toml`): never a panic; an accepted
//! catalog has 1–1000 stickers with unique ids and positive bounded prices,
//! and written back as TOML (prices in the currency's format) it parses to
//! the same catalog.
#![no_main]

use std::collections::HashSet;

use applause_core::catalog::CATALOG_STICKERS_MAX;
use applause_core::money::AMOUNT_MINOR_MAX;
use applause_core::{Catalog, Currency};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

#[derive(Serialize)]
struct File {
    sticker: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    id: String,
    name: String,
    price: String,
    animation: String,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let usd = Currency::usd();
    let Ok(catalog) = Catalog::from_toml(text, &usd) else {
        return;
    };
    let stickers = catalog.stickers();
    assert!((1..=CATALOG_STICKERS_MAX).contains(&stickers.len()));
    let ids: HashSet<&str> = stickers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), stickers.len(), "duplicate ids accepted");
    for s in stickers {
        assert!((1..=AMOUNT_MINOR_MAX).contains(&s.price_minor), "{s:?}");
        assert_eq!(catalog.get(&s.id), Some(s));
    }
    let file = File {
        sticker: stickers
            .iter()
            .map(|s| Entry {
                id: s.id.clone(),
                name: s.name.clone(),
                price: usd.format(s.price_minor),
                animation: s.animation.clone(),
            })
            .collect(),
    };
    let written = toml::to_string(&file).expect("a catalog serializes");
    assert_eq!(
        Catalog::from_toml(&written, &usd).as_ref(),
        Ok(&catalog),
        "{written}"
    );
});
