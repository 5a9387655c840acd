//! A client of TON's HTTP API (toncenter v2 JSON-RPC): the same code talks to
//! the embedded devnet's API and to a toncenter-compatible endpoint on testnet
//! or mainnet (with an API key). Rate limits (HTTP 429) and transient failures
//! are retried with backoff; errors name the method and what the server said.

use std::time::Duration;

use serde_json::{json, Value};
use tycho_types::boc::Boc;
use tycho_types::cell::Cell;
use tycho_types::models::StdAddr;
use tycho_vm::RcStackValue;

use crate::Error;

/// Attempts per call when the server says it is rate limited or unavailable.
const ATTEMPTS: u32 = 4;

/// An account as `getAddressInformation` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub balance: u128,
    /// `active`, `uninitialized` or `frozen`.
    pub state: String,
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
            .build()?;
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
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            let response = response.map_err(|e| anyhow::anyhow!("TON API {method}: {e}"))?;
            let status = response.status();
            let answer: Value = response
                .json()
                .await
                .map_err(|e| anyhow::anyhow!("TON API {method}: HTTP {status}, not JSON: {e}"))?;
            if answer["ok"] != true {
                anyhow::bail!(
                    "TON API {method}: HTTP {status}: {}",
                    answer["error"].as_str().unwrap_or("no error message")
                );
            }
            return Ok(answer["result"].clone());
        }
        unreachable!("the last attempt returns")
    }

    /// Send an external message (e.g. a signed wallet transfer).
    pub async fn send_boc(&self, message: &Cell) -> Result<(), Error> {
        self.call("sendBoc", json!({"boc": Boc::encode_base64(message)}))
            .await
            .map(|_| ())
    }

    /// Balance and state of an account.
    pub async fn account(&self, address: &StdAddr) -> Result<AccountInfo, Error> {
        let info = self
            .call(
                "getAddressInformation",
                json!({"address": address.to_string()}),
            )
            .await?;
        let balance = match &info["balance"] {
            Value::String(s) => s.parse()?,
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

    /// Run a get-method with integer arguments; the result stack, first value
    /// first (integers and cells), ready for the `from_stack` parsers.
    pub async fn get(
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
        anyhow::ensure!(
            exit_code == 0 || exit_code == 1,
            "get-method {method} at {address} failed with exit code {exit_code}"
        );
        result["stack"]
            .as_array()
            .map(|items| items.iter().map(stack_value).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }
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
            let n = num_bigint::BigInt::parse_bytes(digits.as_bytes(), 16)
                .ok_or_else(|| anyhow::anyhow!("bad number in a get-method result: {text}"))?;
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
        _ => anyhow::bail!("unsupported get-method result entry {item}"),
    }
}
