//! What a request costs, from the root contract's prices: integer nano-TON,
//! never floats. Each kind of token has its multiplier in basis points
//! (10000 = 1x) of the base price per token; cached prompt tokens are part of
//! the prompt tokens and reasoning tokens part of the completion tokens, and
//! are priced at their own multipliers instead.

use crate::Prices;

/// One TON in nano-TON.
pub const TON: u128 = 1_000_000_000;

/// The devnet's default prices: 20 nano-TON per token (prompt 1x, cached
/// prompt 0.1x, completion and reasoning 4x), 90% to workers.
pub fn default_prices() -> Prices {
    Prices {
        price_per_token: 20,
        worker_share_bps: 9000,
        prompt_bps: 10_000,
        cached_prompt_bps: 1_000,
        completion_bps: 40_000,
        reasoning_bps: 40_000,
        min_client_stake: TON,
        min_proxy_stake: 100 * TON,
        client_close_delay: 3600,
        proxy_close_delay: 86_400,
    }
}

/// Token counts of one request (as in a worker's signed receipt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub cached_prompt: u64,
    pub completion: u64,
    pub reasoning: u64,
}

/// A request's price split between the worker and the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// What the client pays, nano-TON.
    pub total: u128,
    /// The worker's share of it (`worker_share_bps`), rounded down.
    pub worker: u128,
}

impl Charge {
    /// The proxy's part.
    pub fn proxy(&self) -> u128 {
        self.total - self.worker
    }
}

/// A worker's price coefficient at the network's base price: a worker
/// announcing 1500 charges 1.5x the root contract's prices.
pub const BASE_COEFFICIENT: u32 = 1000;

impl Prices {
    /// The charge for `tokens` at the base price (coefficient 1000).
    pub fn charge(&self, tokens: TokenCounts) -> Charge {
        self.charge_at(tokens, BASE_COEFFICIENT)
    }

    /// What a worker with price `coefficient` (1000 = base) is paid per
    /// million tokens of each kind: (prompt, completion), nano-TON.
    pub fn per_million(&self, coefficient: u32) -> (u128, u128) {
        let prompt = self.charge_at(
            TokenCounts {
                prompt: 1_000_000,
                ..TokenCounts::default()
            },
            coefficient,
        );
        let completion = self.charge_at(
            TokenCounts {
                completion: 1_000_000,
                ..TokenCounts::default()
            },
            coefficient,
        );
        (prompt.total, completion.total)
    }

    /// The charge for `tokens` served by a worker with price `coefficient`,
    /// rounded down to the nano-TON (the client is never charged a fraction
    /// it did not use). Counts that claim more cached than prompt tokens, or
    /// more reasoning than completion tokens, are priced as if the parts were
    /// capped at the wholes.
    pub fn charge_at(&self, tokens: TokenCounts, coefficient: u32) -> Charge {
        let cached = tokens.cached_prompt.min(tokens.prompt) as u128;
        let reasoning = tokens.reasoning.min(tokens.completion) as u128;
        let fresh_prompt = tokens.prompt as u128 - cached;
        let answer = tokens.completion as u128 - reasoning;
        // u64 counts x u16 multipliers x u128 price: the sum of basis-point
        // tokens fits in 2^82, times a price below 2^46 stays below 2^128.
        let bps_tokens = fresh_prompt * self.prompt_bps as u128
            + cached * self.cached_prompt_bps as u128
            + answer * self.completion_bps as u128
            + reasoning * self.reasoning_bps as u128;
        // x 10^-4 for the basis points, x 10^-3 for the coefficient.
        let total = bps_tokens
            .checked_mul(self.price_per_token)
            .and_then(|n| n.checked_mul(coefficient as u128))
            .map(|n| n / 10_000_000)
            .unwrap_or(u128::MAX);
        let worker = total / 10_000 * self.worker_share_bps as u128
            + total % 10_000 * self.worker_share_bps as u128 / 10_000;
        Charge { total, worker }
    }
}

/// Parse a TON amount ("1.5") into nano-TON exactly, without floats.
pub fn parse_ton(text: &str) -> Result<u128, crate::InputError> {
    let bad = || crate::InputError::NotAnAmount(text.to_string());
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > 9 {
        return Err(crate::InputError::TooPrecise(text.to_string()));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u128 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    let nano = whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    if nano == 0 {
        return Err(crate::InputError::Zero);
    }
    Ok(nano)
}

/// nano-TON as TON with all 9 decimals, e.g. `1.500000000`.
pub fn format_ton(nano: u128) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn prices() -> Prices {
        crate::pricing::default_prices()
    }

    #[test]
    fn each_kind_of_token_has_its_multiplier() {
        let p = prices(); // 20 nano-TON; prompt 1x, cached 0.1x, completion and reasoning 4x
        let c = p.charge(TokenCounts {
            prompt: 100,
            cached_prompt: 40,
            completion: 10,
            reasoning: 0,
        });
        // 60 x 20 + 40 x 2 + 10 x 80 = 1200 + 80 + 800
        assert_eq!(c.total, 2080);
        assert_eq!(c.worker, 1872); // 90%
        assert_eq!(c.proxy(), 208);
        assert_eq!(p.charge(TokenCounts::default()), Charge::default());
        // Parts larger than their wholes are capped, not negative.
        let odd = p.charge(TokenCounts {
            prompt: 5,
            cached_prompt: 50,
            completion: 1,
            reasoning: 9,
        });
        assert_eq!(odd.total, 5 * 2 + 80);
    }

    #[test]
    fn a_coefficient_scales_the_price() {
        let p = prices();
        let t = TokenCounts {
            prompt: 1234,
            completion: 567,
            ..Default::default()
        };
        assert_eq!(p.charge_at(t, 1000), p.charge(t));
        assert_eq!(p.charge_at(t, 2000).total, 2 * p.charge(t).total);
        assert_eq!(p.charge_at(t, 500).total, p.charge(t).total / 2);
        // 20 nano-TON per prompt token, 4x for completion, at the base price.
        assert_eq!(p.per_million(1000), (20_000_000, 80_000_000));
        assert_eq!(p.per_million(1500), (30_000_000, 120_000_000));
    }

    proptest! {
        #[test]
        fn charges_never_overflow_or_pay_the_worker_more_than_the_total(
            prompt in any::<u64>(), cached in any::<u64>(), completion in any::<u64>(), reasoning in any::<u64>(),
            price in 0u128..(1u128 << 46), share in 0u16..=10_000,
            bps in proptest::array::uniform4(any::<u16>()),
        ) {
            let p = Prices {
                price_per_token: price,
                worker_share_bps: share,
                prompt_bps: bps[0],
                cached_prompt_bps: bps[1],
                completion_bps: bps[2],
                reasoning_bps: bps[3],
                ..prices()
            };
            let c = p.charge(TokenCounts { prompt, cached_prompt: cached, completion, reasoning });
            prop_assert!(c.worker <= c.total);
        }

        #[test]
        fn a_stream_charged_in_parts_never_costs_more_than_whole(
            prompt in 0u64..100_000,
            parts in proptest::collection::vec(0u64..10_000, 1..20),
            coefficient in 1u32..5000,
        ) {
            // The prompt with the first part, then each further part alone:
            // rounding down per part may lose under one nano-TON per part,
            // never charge more than the whole.
            let p = prices();
            let whole = p.charge_at(
                TokenCounts { prompt, completion: parts.iter().sum(), ..Default::default() },
                coefficient,
            );
            let mut sum = Charge::default();
            for (i, &completion) in parts.iter().enumerate() {
                let part = p.charge_at(
                    TokenCounts { prompt: if i == 0 { prompt } else { 0 }, completion, ..Default::default() },
                    coefficient,
                );
                prop_assert!(part.worker <= part.total);
                sum.total += part.total;
                sum.worker += part.worker;
            }
            prop_assert!(sum.total <= whole.total);
            prop_assert!(whole.total - sum.total < parts.len() as u128);
            prop_assert!(sum.worker <= sum.total);
        }

        #[test]
        fn more_tokens_never_cost_less(prompt in 0u64..1_000_000, completion in 0u64..1_000_000, extra in 0u64..1000) {
            let p = prices();
            let base = p.charge(TokenCounts { prompt, completion, ..Default::default() });
            let more = p.charge(TokenCounts { prompt: prompt + extra, completion: completion + extra, ..Default::default() });
            prop_assert!(more.total >= base.total);
            prop_assert!(more.worker >= base.worker);
        }
    }
}
