//! The price a worker asks for each model, and its GPU owner's change of
//! it at run time (`cocoon worker set-price MODEL COEFF`). A new price is
//! announced at once to every proxy, and signed into the receipt of every
//! request sealed at it. A client node seals each request at the price it
//! saw listed (in the seal: the proxy cannot alter it), so the worker
//! serves a request only at a price it announced: its current one, or the
//! one it asked before for [`PRICE_GRACE`] after a change (a client node
//! that fetched its key list just before the change; it agreed to that
//! price and the worker asked it). Any other price is refused before a
//! token, as `KeysChanged`, and the client node seals again at the new one.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cocoon_protocol::sync::LockRecover;
use cocoon_protocol::{ModelOffer, MAX_PRICE_COEFFICIENT};

/// How long after a change the price before it is still served: longer
/// than a client node keeps a key list, with room for the announcement to
/// reach the proxy.
pub const PRICE_GRACE: Duration = Duration::from_secs(30);

/// What a model costs now, and what it cost until a moment ago.
#[derive(Debug, Clone, Copy)]
struct Asked {
    now: u32,
    before: Option<(u32, Instant)>,
}

/// Why a price cannot be set, or a request's price is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("this worker does not serve '{0}'")]
    UnknownModel(String),
    #[error("a price coefficient must be 1 to {MAX_PRICE_COEFFICIENT}, got {0}")]
    OutOfRange(u32),
    #[error("this worker serves '{model}' at price coefficient {now}, not {listed}: fetch its listing again")]
    NotAsked {
        model: String,
        listed: u32,
        now: u32,
    },
}

/// Each model's price; changes are announced to [`Prices::changes`].
pub struct Prices {
    asked: std::sync::Mutex<HashMap<String, Asked>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Prices {
    /// The prices of `offers`, as the worker starts with them.
    pub fn new(offers: &[ModelOffer]) -> Self {
        Self {
            asked: std::sync::Mutex::new(
                offers
                    .iter()
                    .map(|o| {
                        let asked = Asked {
                            now: o.price_coefficient,
                            before: None,
                        };
                        (o.name.clone(), asked)
                    })
                    .collect(),
            ),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The price of `model` now.
    pub fn current(&self, model: &str) -> Option<u32> {
        self.asked.locked().get(model).map(|a| a.now)
    }

    /// Every model's price now, by name.
    pub fn all(&self) -> BTreeMap<String, u32> {
        self.asked
            .locked()
            .iter()
            .map(|(name, a)| (name.clone(), a.now))
            .collect()
    }

    /// Ask `price` for `model` from now on; returns the price before.
    pub fn set(&self, model: &str, price: u32) -> Result<u32, PriceError> {
        if !(1..=MAX_PRICE_COEFFICIENT).contains(&price) {
            return Err(PriceError::OutOfRange(price));
        }
        let before = {
            let mut asked = self.asked.locked();
            let entry = asked
                .get_mut(model)
                .ok_or_else(|| PriceError::UnknownModel(model.to_string()))?;
            let before = entry.now;
            if before != price {
                *entry = Asked {
                    now: price,
                    before: Some((before, Instant::now())),
                };
            }
            before
        };
        if before != price {
            tracing::info!(
                model,
                before,
                price,
                "price changed: announced to every proxy"
            );
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(before)
    }

    /// Whether a request for `model` sealed at `listed` is served: the
    /// price now, or the one before within [`PRICE_GRACE`] of the change.
    pub fn accepts(&self, model: &str, listed: u32) -> Result<(), PriceError> {
        let asked = self.asked.locked();
        let asked = asked
            .get(model)
            .ok_or_else(|| PriceError::UnknownModel(model.to_string()))?;
        let recent = asked
            .before
            .is_some_and(|(price, since)| price == listed && since.elapsed() < PRICE_GRACE);
        if listed == asked.now || recent {
            Ok(())
        } else {
            Err(PriceError::NotAsked {
                model: model.to_string(),
                listed,
                now: asked.now,
            })
        }
    }

    /// Ticks at every change of a price.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, price: u32) -> ModelOffer {
        ModelOffer {
            name: name.into(),
            max_concurrent: 1,
            weights_sha256: None,
            price_coefficient: price,
            context_length: None,
            quantization: None,
            features: Default::default(),
        }
    }

    #[test]
    fn a_request_is_served_at_the_price_now_or_the_one_before_within_the_grace() {
        let prices = Prices::new(&[offer("a", 1000), offer("b", 700)]);
        let changes = prices.changes();
        assert_eq!(prices.accepts("a", 1000), Ok(()));
        assert!(matches!(
            prices.accepts("a", 999),
            Err(PriceError::NotAsked { now: 1000, .. })
        ));
        assert_eq!(prices.set("a", 1500), Ok(1000));
        assert!(changes.has_changed().unwrap());
        assert_eq!(prices.current("a"), Some(1500));
        assert_eq!(prices.current("b"), Some(700), "one model's price only");
        // Both the new price and, for now, the old one.
        assert_eq!(prices.accepts("a", 1500), Ok(()));
        assert_eq!(prices.accepts("a", 1000), Ok(()));
        assert!(prices.accepts("a", 1200).is_err());
        // Another change: the price before is the last one, not the first.
        prices.set("a", 2000).unwrap();
        assert_eq!(prices.accepts("a", 1500), Ok(()));
        assert!(prices.accepts("a", 1000).is_err());
        // Past the grace, only the price now.
        prices.asked.locked().get_mut("a").unwrap().before =
            Some((1500, Instant::now() - PRICE_GRACE));
        assert!(prices.accepts("a", 1500).is_err());
        assert_eq!(prices.accepts("a", 2000), Ok(()));
    }

    #[test]
    fn a_price_is_set_only_for_a_model_served_and_within_range() {
        let prices = Prices::new(&[offer("a", 1000)]);
        let changes = prices.changes();
        assert_eq!(
            prices.set("nope", 900),
            Err(PriceError::UnknownModel("nope".into()))
        );
        assert_eq!(prices.set("a", 0), Err(PriceError::OutOfRange(0)));
        assert_eq!(
            prices.set("a", MAX_PRICE_COEFFICIENT + 1),
            Err(PriceError::OutOfRange(MAX_PRICE_COEFFICIENT + 1))
        );
        // Setting the same price is no change: nothing re-announced, and
        // the grace of an earlier change is not reset.
        assert_eq!(prices.set("a", 1000), Ok(1000));
        assert!(!changes.has_changed().unwrap());
        assert_eq!(prices.all(), BTreeMap::from([("a".to_string(), 1000)]));
    }
}
