//! A client of TON's HTTP API (toncenter v2 JSON-RPC): the same code talks to
//! the embedded devnet's API and to a toncenter-compatible endpoint on testnet
//! or mainnet (with an API key). Rate limits (HTTP 429, honouring
//! `Retry-After`) and transient failures are retried with backoff; errors
//! name the method and what the server said.

use crate::InputError;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tycho_types::boc::Boc;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;
use tycho_vm::RcStackValue;

use crate::Error;

/// Attempts per call when the server says it is rate limited or unavailable.
const ATTEMPTS: u32 = 4;

pub use crate::access::AccountInfo;
use crate::access::{Chain, MasterchainBlock, TxSummary};

/// toncenter's public endpoints (an API key from toncenter lifts their rate
/// limit of about one request per second).
pub const TESTNET_API: &str = "https://testnet.toncenter.com/api/v2";
pub const MAINNET_API: &str = "https://toncenter.com/api/v2";

/// `testnet`, `mainnet`, or an API URL as it is (e.g. the devnet's).
pub fn api_url(network: &str) -> &str {
    match network {
        "testnet" => TESTNET_API,
        "mainnet" => MAINNET_API,
        url => url,
    }
}

/// A client for `ton_api` (`testnet`, `mainnet` or an http(s) URL) with the
/// API key from the environment variable `api_key_env`, as the nodes'
/// configs name them. The error says what is wrong, for the config's field.
pub fn from_config(ton_api: &str, api_key_env: Option<&str>) -> Result<TonHttp, InputError> {
    let url = api_url(ton_api);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(InputError::ApiUrl(ton_api.to_string()));
    }
    let key = match api_key_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| InputError::MissingEnv(var.to_string()))?),
    };
    TonHttp::new(url, key).map_err(|e| InputError::Client(e.to_string()))
}

/// `ton_api` (with the API key in `api_key_env`) and each of `agree`
/// (other parties' APIs, no key): the endpoints whose answers must agree
/// before a node trusts what the chain says.
pub fn endpoints(
    ton_api: &str,
    api_key_env: Option<&str>,
    agree: &[String],
) -> Result<Vec<Arc<dyn crate::Chain>>, InputError> {
    keyed_endpoints(ton_api, api_key_env, agree, |_| Ok(())).map_err(|(_, e)| e)
}

/// `ton_api` and each of `agree` as one chain whose every read must agree
/// ([`crate::AgreeingChain`]; `ton_api` alone when `agree` is empty). On
/// error, the key at fault (`ton_api` or `ton_api_agree[i]`) and why.
pub fn agreeing(
    ton_api: &str,
    api_key_env: Option<&str>,
    agree: &[String],
) -> Result<Arc<dyn crate::Chain>, (String, InputError)> {
    let distinct = |i: usize| {
        let other = &agree[i];
        if api_url(other) == api_url(ton_api) {
            return Err(InputError::Client(format!(
                "{other:?} is ton_api itself: name another party's TON endpoint"
            )));
        }
        match agree[..i].iter().position(|o| api_url(o) == api_url(other)) {
            Some(j) => Err(InputError::Client(format!(
                "{other:?} is ton_api_agree[{j}] again: each must be another party's endpoint"
            ))),
            None => Ok(()),
        }
    };
    keyed_endpoints(ton_api, api_key_env, agree, distinct).map(crate::AgreeingChain::of)
}

/// [`endpoints`], each of `agree` first passing `check` (by its index); on
/// error, the key at fault (`ton_api` or `ton_api_agree[i]`) and why.
fn keyed_endpoints(
    ton_api: &str,
    api_key_env: Option<&str>,
    agree: &[String],
    check: impl Fn(usize) -> Result<(), InputError>,
) -> Result<Vec<Arc<dyn crate::Chain>>, (String, InputError)> {
    let mut out: Vec<Arc<dyn crate::Chain>> = vec![Arc::new(
        from_config(ton_api, api_key_env).map_err(|e| ("ton_api".to_string(), e))?,
    )];
    for (i, other) in agree.iter().enumerate() {
        let key = || format!("ton_api_agree[{i}]");
        check(i).map_err(|e| (key(), e))?;
        out.push(Arc::new(from_config(other, None).map_err(|e| (key(), e))?));
    }
    Ok(out)
}

/// A TON address, `0:<hex>` or user-friendly; contracts live on the basechain.
pub fn parse_address(text: &str) -> Result<StdAddr, InputError> {
    use std::str::FromStr;
    let address = StdAddr::from_str(text)
        .or_else(|_| StdAddr::from_str_ext(text, crate::AddressFormat::any()).map(|(a, _)| a))
        .map_err(|e| InputError::NotAnAddress {
            text: text.to_string(),
            reason: e.to_string(),
        })?;
    if address.workchain != 0 {
        return Err(InputError::NotBasechain(address.workchain));
    }
    Ok(address)
}

/// A TON HTTP API endpoint, e.g. `http://127.0.0.1:8081/api/v2` or
/// `https://testnet.toncenter.com/api/v2`.
#[derive(Clone)]
pub struct TonHttp {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for TonHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key stays out of logs.
        f.debug_struct("TonHttp")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl TonHttp {
    pub fn new(base: &str, api_key: Option<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| crate::ChainError::Api(format!("an HTTP client for {base}: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http,
        })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        let body = json!({"id": 1, "jsonrpc": "2.0", "method": method, "params": params});
        let mut delay = Duration::from_millis(250);
        for attempt in 1..=ATTEMPTS {
            let mut request = self.http.post(format!("{}/jsonRPC", self.base)).json(&body);
            if let Some(key) = &self.api_key {
                request = request.header("X-API-Key", key);
            }
            let response = request.send().await;
            let retry = match &response {
                Err(e) => e.is_connect() || e.is_timeout(),
                Ok(r) => r.status() == 429 || r.status().is_server_error() && r.status() != 500,
            };
            if retry && attempt < ATTEMPTS {
                // A rate limit may say when to come back (seconds); never
                // wait longer than 10 s on its word.
                let asked = response
                    .as_ref()
                    .ok()
                    .and_then(|r| r.headers().get("retry-after"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(10)));
                tokio::time::sleep(asked.unwrap_or(delay).max(delay)).await;
                delay *= 2;
                continue;
            }
            let response =
                response.map_err(|e| crate::ChainError::Api(format!("TON API {method}: {e}")))?;
            let status = response.status();
            let answer: Value = response.json().await.map_err(|e| {
                crate::ChainError::Api(format!("TON API {method}: HTTP {status}, not JSON: {e}"))
            })?;
            if answer["ok"] != true {
                crate::error::fail!(
                    Api,
                    "TON API {method}: HTTP {status}: {}",
                    answer["error"].as_str().unwrap_or("no error message")
                );
            }
            return Ok(answer["result"].clone());
        }
        unreachable!("the last attempt returns")
    }
}

#[async_trait::async_trait]
impl Chain for TonHttp {
    async fn send_boc(&self, message: &Cell) -> Result<(), Error> {
        self.call("sendBoc", json!({"boc": Boc::encode_base64(message)}))
            .await
            .map(|_| ())
    }

    async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error> {
        let info = self
            .call(
                "getAddressInformation",
                json!({"address": address.to_string()}),
            )
            .await?;
        let balance = match &info["balance"] {
            Value::String(s) => s.parse().map_err(|e| {
                crate::ChainError::Unexpected(format!("getAddressInformation: balance {s:?}: {e}"))
            })?,
            Value::Number(n) => n.as_u64().unwrap_or(0) as u128,
            _ => 0,
        };
        Ok(AccountInfo {
            balance,
            state: info["state"]
                .as_str()
                .unwrap_or("uninitialized")
                .to_string(),
        })
    }

    async fn get(
        &self,
        address: &StdAddr,
        method: &str,
        args: &[u128],
    ) -> Result<Vec<RcStackValue>, Error> {
        let stack: Vec<Value> = args
            .iter()
            .map(|n| json!(["num", format!("0x{n:x}")]))
            .collect();
        let result = self
            .call(
                "runGetMethod",
                json!({"address": address.to_string(), "method": method, "stack": stack}),
            )
            .await?;
        let exit_code = result["exit_code"].as_i64().unwrap_or(-1);
        crate::error::ensure!(
            exit_code == 0 || exit_code == 1,
            Api,
            "get-method {method} at {address} failed with exit code {exit_code}"
        );
        result["stack"]
            .as_array()
            .map(|items| items.iter().map(stack_value).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    async fn masterchain_head(&self) -> Result<MasterchainBlock, Error> {
        let info = self.call("getMasterchainInfo", json!({})).await?;
        let last = block_id(&info["last"])?;
        // The head's time is in its header; the two answers must agree.
        let block = self.masterchain_block(last.0).await?.ok_or_else(|| {
            crate::ChainError::Api(format!(
                "TON API getBlockHeader: the newest block {} is not found",
                last.0
            ))
        })?;
        crate::error::ensure!(
            block.root_hash == last.1,
            Api,
            "TON API: getMasterchainInfo and getBlockHeader disagree on block {}'s hash",
            last.0
        );
        Ok(block)
    }

    async fn masterchain_block(&self, seqno: u32) -> Result<Option<MasterchainBlock>, Error> {
        let params = json!({"workchain": -1, "shard": "-9223372036854775808", "seqno": seqno});
        let header = match self.call("getBlockHeader", params).await {
            Ok(header) => header,
            Err(crate::ChainError::Api(message)) if not_found(&message) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (number, root_hash) = block_id(&header["id"])?;
        crate::error::ensure!(
            number == seqno,
            Api,
            "TON API getBlockHeader: asked for block {seqno}, got {number}"
        );
        let gen_utime = header["gen_utime"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| {
                crate::ChainError::Api(format!("TON API getBlockHeader: no gen_utime in {header}"))
            })?;
        Ok(Some(MasterchainBlock {
            seqno,
            root_hash,
            gen_utime,
        }))
    }

    async fn transactions(&self, address: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, Error> {
        let result = self
            .call(
                "getTransactions",
                json!({"address": address.to_string(), "limit": limit.min(100), "archival": true}),
            )
            .await?;
        parse_transactions(&result)
    }
}

/// toncenter's `getTransactions` result: each transaction's `data` is its
/// BOC, read for the fee, time and outcome.
/// A `ton.blockIdExt`'s seqno and root hash.
fn block_id(id: &Value) -> Result<(u32, [u8; 32]), Error> {
    use base64::Engine;
    let seqno = id["seqno"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(|| {
            crate::ChainError::Api(format!("TON API: a block id without a seqno: {id}"))
        })?;
    let root_hash = id["root_hash"]
        .as_str()
        .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| {
            crate::ChainError::Api(format!(
                "TON API: a block id without a 32-byte root_hash: {id}"
            ))
        })?;
    Ok((seqno, root_hash))
}

/// Whether an API error says the block does not exist (toncenter relays
/// the liteserver's words).
fn not_found(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["not found", "not in db", "not applied", "http 404"]
        .iter()
        .any(|m| message.contains(m))
}

pub fn parse_transactions(result: &Value) -> Result<Vec<TxSummary>, Error> {
    let items = result.as_array().ok_or_else(|| {
        crate::ChainError::Api("getTransactions: the result is not a list".into())
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let data = item["data"].as_str().ok_or_else(|| {
                crate::ChainError::Api(format!("getTransactions: transaction {i} has no `data`"))
            })?;
            let cell = Boc::decode_base64(data).map_err(|e| {
                crate::ChainError::Api(format!("getTransactions: transaction {i}: bad BOC: {e}"))
            })?;
            TxSummary::from_cell(&cell).map_err(|e| {
                crate::ChainError::Api(format!("getTransactions: transaction {i}: {e}"))
            })
        })
        .collect()
}

fn stack_value(item: &Value) -> Result<RcStackValue, Error> {
    match item.get(0).and_then(Value::as_str) {
        Some("num") => {
            let text = item[1].as_str().unwrap_or_default();
            let (negative, digits) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let digits = digits.strip_prefix("0x").unwrap_or(digits);
            let n = num_bigint::BigInt::parse_bytes(digits.as_bytes(), 16).ok_or_else(|| {
                crate::ChainError::Api(format!("bad number in a get-method result: {text}"))
            })?;
            Ok(RcStackValue::new_dyn_value(if negative { -n } else { n }))
        }
        Some("cell") | Some("slice") => {
            let b64 = item[1]["bytes"]
                .as_str()
                .or(item[1].as_str())
                .unwrap_or_default();
            let cell = Boc::decode_base64(b64)?;
            Ok(RcStackValue::new_dyn_value(cell))
        }
        Some("null") => Ok(tycho_vm::Stack::make_null()),
        _ => crate::error::fail!(Api, "unsupported get-method result entry {item}"),
    }
}
