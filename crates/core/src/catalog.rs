//! The sticker catalog: what can be sent and what it costs. Prices come only
//! from here, never from a client.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::money::Currency;

/// One sticker of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticker {
    pub id: String,
    pub name: String,
    pub price_minor: i64,
    /// A hint for clients: which animation or asset to play.
    pub animation: String,
}

/// The stickers on sale, in display order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    stickers: Vec<Sticker>,
    by_id: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    sticker: Vec<StickerEntry>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct StickerEntry {
    id: String,
    name: String,
    price: String,
    #[serde(default)]
    animation: Option<String>,
}

/// The most stickers a catalog may hold.
pub const CATALOG_STICKERS_MAX: usize = 1_000;

const DEFAULT_CATALOG: &[(&str, &str, &str)] = &[
    ("clap", "Clap", "0.01"),
    ("heart", "Heart", "0.10"),
    ("rose", "Rose", "0.99"),
    ("coffee", "Coffee", "1.99"),
    ("star", "Star", "4.99"),
    ("cake", "Cake", "9.99"),
    ("fireworks", "Fireworks", "49.99"),
    ("rocket", "Rocket", "99.99"),
    ("castle", "Castle", "199.99"),
    ("galaxy", "Galaxy", "500.00"),
];

impl Catalog {
    /// The built-in catalog: ten stickers from 0.01 to 500.00 (in the
    /// deployment currency's major unit).
    pub fn builtin(currency: &Currency) -> Catalog {
        let entries = DEFAULT_CATALOG
            .iter()
            .map(|(id, name, price)| StickerEntry {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                price: (*price).to_owned(),
                animation: None,
            })
            .collect();
        Catalog::from_entries(entries, currency).expect("built-in catalog is valid")
    }

    /// Parses a catalog file:
    ///
    /// ```toml
    /// [[sticker]]
    /// id = "rose"
    /// name = "Rose"
    /// price = "0.99"
    /// animation = "rose.webp"   # optional
    /// ```
    pub fn from_toml(text: &str, currency: &Currency) -> Result<Catalog, String> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| format!("catalog: {e}"))?;
        Catalog::from_entries(file.sticker, currency)
    }

    fn from_entries(entries: Vec<StickerEntry>, currency: &Currency) -> Result<Catalog, String> {
        if entries.is_empty() {
            return Err("catalog: at least one sticker is required".into());
        }
        if entries.len() > CATALOG_STICKERS_MAX {
            return Err(format!(
                "catalog: more than {CATALOG_STICKERS_MAX} stickers"
            ));
        }
        let mut stickers = Vec::with_capacity(entries.len());
        let mut by_id = HashMap::new();
        for e in entries {
            if e.id.is_empty()
                || e.id.len() > 32
                || !e
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "catalog: sticker id {:?} must be 1–32 characters of a-z, 0-9, _ and -",
                    e.id
                ));
            }
            if e.name.trim().is_empty() || e.name.chars().count() > 64 {
                return Err(format!(
                    "catalog: sticker {:?} needs a name of 1–64 characters",
                    e.id
                ));
            }
            let price_minor = currency
                .parse_positive(&e.price)
                .map_err(|err| format!("catalog: sticker {:?} price {:?}: {err}", e.id, e.price))?;
            if by_id.insert(e.id.clone(), stickers.len()).is_some() {
                return Err(format!("catalog: sticker id {:?} appears twice", e.id));
            }
            let animation = e.animation.unwrap_or_else(|| format!("{}.webp", e.id));
            stickers.push(Sticker {
                id: e.id,
                name: e.name,
                price_minor,
                animation,
            });
        }
        Ok(Catalog { stickers, by_id })
    }

    pub fn get(&self, id: &str) -> Option<&Sticker> {
        self.by_id.get(id).map(|&i| &self.stickers[i])
    }

    pub fn stickers(&self) -> &[Sticker] {
        &self.stickers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_spans_a_cent_to_five_hundred() {
        let c = Catalog::builtin(&Currency::usd());
        assert!(c.stickers().len() >= 8);
        assert_eq!(c.stickers().iter().map(|s| s.price_minor).min(), Some(1));
        assert_eq!(
            c.stickers().iter().map(|s| s.price_minor).max(),
            Some(50_000)
        );
        assert_eq!(c.get("rose").unwrap().price_minor, 99);
        assert!(c.get("nope").is_none());
    }

    #[test]
    fn toml_files_are_validated() {
        let usd = Currency::usd();
        let ok = "[[sticker]]\nid = \"kiss\"\nname = \"Kiss\"\nprice = \"2.50\"\n";
        let c = Catalog::from_toml(ok, &usd).unwrap();
        assert_eq!(c.get("kiss").unwrap().price_minor, 250);
        assert_eq!(c.get("kiss").unwrap().animation, "kiss.webp");
        for bad in [
            "",
            "[[sticker]]\nid = \"a\"\nname = \"A\"\nprice = 2.5\n",
            "[[sticker]]\nid = \"a\"\nname = \"A\"\nprice = \"2.505\"\n",
            "[[sticker]]\nid = \"a\"\nname = \"A\"\nprice = \"0\"\n",
            "[[sticker]]\nid = \"A B\"\nname = \"A\"\nprice = \"1\"\n",
            "[[sticker]]\nid = \"a\"\nname = \"A\"\nprice = \"1\"\n[[sticker]]\nid = \"a\"\nname = \"B\"\nprice = \"1\"\n",
            "[[sticker]]\nid = \"a\"\nname = \"A\"\nprice = \"1\"\ncost = \"0\"\n",
        ] {
            assert!(Catalog::from_toml(bad, &usd).is_err(), "accepted {bad:?}");
        }
    }
}
