//! The subset of TON's public HTTP API (toncenter v2) that Cocoon's nodes and
//! TON's SDKs use, served from an [`Emulator`]: `sendBoc`,
//! `runGetMethod`, `getAddressInformation`, `getTransactions` and
//! `getMasterchainInfo` and (masterchain only) `getBlockHeader`, both as REST routes (`/api/v2/<method>`) and through
//! the JSON-RPC endpoint (`/api/v2/jsonRPC`) that `@ton/ton`'s `TonClient`
//! calls. Answers have toncenter's shape: `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": ..., "code": ...}`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tycho_types::boc::Boc;
use tycho_types::models::{AccountState, StdAddr};
use tycho_vm::RcStackValue;

use crate::Emulator;

/// The chain behind the API, shared with whoever else drives it.
pub type SharedChain = Arc<Mutex<Emulator>>;

/// The API's routes over `chain`. `clock` sets the chain's time before each
/// call (the devnet passes the wall clock).
pub fn router(chain: SharedChain, clock: fn() -> u32) -> Router {
    let state = ApiState { chain, clock };
    Router::new()
        .route("/api/v2/jsonRPC", post(json_rpc))
        .route("/api/v2/sendBoc", post(send_boc_rest))
        .route("/api/v2/runGetMethod", post(run_get_method_rest))
        .route("/api/v2/getAddressInformation", get(address_rest))
        .route("/api/v2/getTransactions", get(transactions_rest))
        .route("/api/v2/getMasterchainInfo", get(masterchain_rest))
        .route("/api/v2/getBlockHeader", get(block_header_rest))
        .with_state(state)
}

#[derive(Clone)]
struct ApiState {
    chain: SharedChain,
    clock: fn() -> u32,
}

/// A failed call: toncenter's error shape and an HTTP status.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"ok": false, "error": self.1, "code": self.0.as_u16()});
        (self.0, Json(body)).into_response()
    }
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

impl ApiState {
    fn call(&self, method: &str, params: &Value) -> Result<Value, ApiError> {
        let mut chain = self.chain.lock().map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "chain state poisoned".into(),
            )
        })?;
        chain.now = chain.now.max((self.clock)());
        match method {
            "sendBoc" => send_boc(&mut chain, params),
            "runGetMethod" => run_get_method(&chain, params),
            "getAddressInformation" => address_information(&chain, params),
            "getTransactions" => transactions(&chain, params),
            "getMasterchainInfo" => {
                let head = chain.masterchain_head();
                Ok(json!({
                    "@type": "blocks.masterchainInfo",
                    "last": header_id(&head),
                    "state_root_hash": "",
                    "init": block_id(0)
                }))
            }
            "getBlockHeader" => block_header(&chain, params),
            other => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("method {other} is not served by this devnet"),
            )),
        }
    }
}

fn param<'a>(params: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad(format!("missing string parameter `{name}`")))
}

/// `0:hex` or a user-friendly base64 address.
fn address(text: &str) -> Result<StdAddr, ApiError> {
    if let Ok(addr) = StdAddr::from_str(text) {
        return Ok(addr);
    }
    StdAddr::from_str_ext(text, tycho_types::models::StdAddrFormat::any())
        .map(|(addr, _)| addr)
        .map_err(|e| ApiError::bad(format!("`address`: not a TON address ({e})")))
}

fn send_boc(chain: &mut Emulator, params: &Value) -> Result<Value, ApiError> {
    let boc = param(params, "boc")?;
    let cell = Boc::decode_base64(boc).map_err(|e| ApiError::bad(format!("`boc`: {e}")))?;
    chain
        .submit(cell)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(json!({"@type": "ok"}))
}

fn run_get_method(chain: &Emulator, params: &Value) -> Result<Value, ApiError> {
    let addr = address(param(params, "address")?)?;
    let method = params
        .get("method")
        .ok_or_else(|| ApiError::bad("missing parameter `method`"))?;
    let method_name = match method {
        Value::String(name) => name.clone(),
        other => {
            return Err(ApiError::bad(format!(
                "`method` must be a name, got {other}"
            )))
        }
    };
    let args = params
        .get("stack")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(stack_arg).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    match chain.get_with_exit(&addr, &method_name, args) {
        Ok((exit_code, gas_used, stack)) => Ok(json!({
            "@type": "smc.runResult",
            "gas_used": gas_used,
            "stack": stack.iter().map(stack_json).collect::<Vec<_>>(),
            "exit_code": exit_code,
        })),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )),
    }
}

/// A get-method argument in toncenter's form: `["num", "0x.."]` or `["cell", "<base64 boc>"]`.
fn stack_arg(item: &Value) -> Result<RcStackValue, ApiError> {
    let kind = item.get(0).and_then(Value::as_str).unwrap_or_default();
    let value = item.get(1);
    match (kind, value) {
        ("num", Some(Value::String(text))) => {
            let n = match text.strip_prefix("0x").or_else(|| text.strip_prefix("-0x")) {
                Some(hex) => {
                    let n = num_bigint::BigInt::parse_bytes(hex.as_bytes(), 16)
                        .ok_or_else(|| ApiError::bad(format!("bad number {text}")))?;
                    if text.starts_with('-') {
                        -n
                    } else {
                        n
                    }
                }
                None => num_bigint::BigInt::from_str(text)
                    .map_err(|_| ApiError::bad(format!("bad number {text}")))?,
            };
            Ok(RcStackValue::new_dyn_value(n))
        }
        ("num", Some(Value::Number(n))) => Ok(RcStackValue::new_dyn_value(
            num_bigint::BigInt::from(n.as_i64().ok_or_else(|| ApiError::bad("bad number"))?),
        )),
        ("cell" | "tvm.Cell" | "slice" | "tvm.Slice", Some(v)) => {
            let b64 = v
                .as_str()
                .or_else(|| v.get("bytes").and_then(Value::as_str))
                .unwrap_or_default();
            let cell =
                Boc::decode_base64(b64).map_err(|e| ApiError::bad(format!("bad cell: {e}")))?;
            if kind.ends_with("lice") {
                Ok(RcStackValue::new_dyn_value(
                    tycho_vm::OwnedCellSlice::new_allow_exotic(cell),
                ))
            } else {
                Ok(RcStackValue::new_dyn_value(cell))
            }
        }
        _ => Err(ApiError::bad(format!("unsupported stack entry {item}"))),
    }
}

/// A result value in toncenter's form.
fn stack_json(value: &RcStackValue) -> Value {
    if let Some(n) = value.as_int() {
        let text = if n.sign() == num_bigint::Sign::Minus {
            format!("-0x{:x}", -n)
        } else {
            format!("0x{n:x}")
        };
        return json!(["num", text]);
    }
    if let Some(cell) = value.as_cell() {
        return json!(["cell", {"bytes": Boc::encode_base64(cell)}]);
    }
    if let Some(slice) = value.as_cell_slice() {
        let cell = tycho_types::cell::CellBuilder::build_from(slice.apply())
            .map(Boc::encode_base64)
            .unwrap_or_default();
        return json!(["cell", {"bytes": cell}]);
    }
    if value.is_null() {
        return json!(["null", null]);
    }
    json!(["unsupported", null])
}

fn address_information(chain: &Emulator, params: &Value) -> Result<Value, ApiError> {
    let addr = address(param(params, "address")?)?;
    let account = chain
        .account(&addr)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let last = chain.latest_transactions(&addr, None, 1).into_iter().next();
    let (balance, state, code, data) = match account {
        None => (0u128, "uninitialized", String::new(), String::new()),
        Some(account) => {
            let balance = account.balance.tokens.into_inner();
            match account.state {
                AccountState::Active(init) => (
                    balance,
                    "active",
                    init.code
                        .map(|c| Boc::encode_base64(&c))
                        .unwrap_or_default(),
                    init.data
                        .map(|c| Boc::encode_base64(&c))
                        .unwrap_or_default(),
                ),
                AccountState::Frozen(_) => (balance, "frozen", String::new(), String::new()),
                AccountState::Uninit => (balance, "uninitialized", String::new(), String::new()),
            }
        }
    };
    Ok(json!({
        "@type": "raw.fullAccountState",
        "balance": balance.to_string(),
        "code": code,
        "data": data,
        "last_transaction_id": {
            "@type": "internal.transactionId",
            "lt": last.as_ref().map(|t| t.lt).unwrap_or(0).to_string(),
            "hash": last.as_ref().map(|t| base64_of(t.hash.as_slice())).unwrap_or_else(|| base64_of(&[0; 32])),
        },
        "frozen_hash": "",
        "block_id": block_id(chain.now),
        "sync_utime": chain.now,
        "state": state,
    }))
}

fn transactions(chain: &Emulator, params: &Value) -> Result<Value, ApiError> {
    let addr = address(param(params, "address")?)?;
    let limit = params
        .get("limit")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(10)
        .min(100) as usize;
    // Paging: `lt` (with `hash`, which this devnet does not need) starts the
    // page at that transaction, as toncenter does.
    let from_lt = match params.get("lt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ApiError::bad(format!("`lt`: not a logical time: {v}")))?,
        ),
    };
    let list: Vec<Value> = chain
        .latest_transactions(&addr, from_lt, limit)
        .into_iter()
        .map(|t| {
            json!({
                "@type": "raw.transaction",
                "data": Boc::encode_base64(&t.cell),
                "utime": t.now,
                "transaction_id": {"@type": "internal.transactionId", "lt": t.lt.to_string(), "hash": base64_of(t.hash.as_slice())},
                "fee": t.fees.to_string(),
                "storage_fee": "0",
                "other_fee": "0",
                "in_msg": message_json(&t.in_msg),
                "out_msgs": t.out_msgs.iter().map(message_json).collect::<Vec<_>>(),
                "exit_code": t.report.exit_code,
                "success": t.report.success,
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// A made block's id, as toncenter's `ton.blockIdExt`.
fn header_id(header: &crate::BlockHeader) -> Value {
    json!({"@type": "ton.blockIdExt", "workchain": -1, "shard": "-9223372036854775808",
           "seqno": header.seqno, "root_hash": base64_of(&header.root_hash),
           "file_hash": base64_of(&header.root_hash)})
}

/// `getBlockHeader` for the masterchain (`workchain` -1): toncenter's
/// `blocks.header` with the block's id and `gen_utime`; 404 for a block
/// not made (or long gone).
fn block_header(chain: &Emulator, params: &Value) -> Result<Value, ApiError> {
    let number = |name: &str| -> Result<i64, ApiError> {
        let value = params
            .get(name)
            .ok_or_else(|| ApiError::bad(format!("missing parameter {name}")))?;
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| ApiError::bad(format!("{name} must be an integer, got {value}")))
    };
    if number("workchain")? != -1 {
        return Err(ApiError::bad(
            "this devnet has only the masterchain's headers",
        ));
    }
    let seqno = u32::try_from(number("seqno")?)
        .map_err(|_| ApiError::bad("seqno must be a 32-bit block number"))?;
    let header = chain.masterchain_block(seqno).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("block not found: masterchain block {seqno} is not in the db"),
        )
    })?;
    Ok(json!({
        "@type": "blocks.header",
        "id": header_id(&header),
        "global_id": 100,
        "version": 0,
        "gen_utime": header.gen_utime,
    }))
}

/// A block id for the devnet's account states (no real block): its seqno
/// is the time.
fn block_id(seqno: u32) -> Value {
    json!({"@type": "ton.blockIdExt", "workchain": -1, "shard": "-9223372036854775808",
           "seqno": seqno, "root_hash": base64_of(&[0; 32]), "file_hash": base64_of(&[0; 32])})
}

/// A message in toncenter's `raw.message` shape.
fn message_json(cell: &tycho_types::cell::Cell) -> Value {
    use tycho_types::models::{Message, MsgInfo};
    let Ok(message) = cell.parse::<Message<'_>>() else {
        return json!({"source": "", "destination": "", "value": "0", "fwd_fee": "0", "ihr_fee": "0",
                      "created_lt": "0", "body_hash": "", "msg_data": {"@type": "msg.dataRaw", "body": ""}});
    };
    let (source, destination, value, fwd_fee, created_lt) = match &message.info {
        MsgInfo::Int(info) => (
            info.src.to_string(),
            info.dst.to_string(),
            info.value.tokens.into_inner(),
            info.fwd_fee.into_inner(),
            info.created_lt,
        ),
        MsgInfo::ExtIn(info) => (String::new(), info.dst.to_string(), 0, 0, 0),
        MsgInfo::ExtOut(info) => (info.src.to_string(), String::new(), 0, 0, info.created_lt),
    };
    let body = tycho_types::cell::CellBuilder::build_from(message.body).unwrap_or_default();
    json!({
        "source": source,
        "destination": destination,
        "value": value.to_string(),
        "fwd_fee": fwd_fee.to_string(),
        "ihr_fee": "0",
        "created_lt": created_lt.to_string(),
        "body_hash": base64_of(body.repr_hash().as_slice()),
        "msg_data": {"@type": "msg.dataRaw", "body": Boc::encode_base64(&body)},
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Deserialize)]
struct RpcRequest {
    #[serde(default)]
    id: Value,
    method: String,
    #[serde(default)]
    params: Value,
}

async fn json_rpc(State(state): State<ApiState>, Json(request): Json<RpcRequest>) -> Response {
    match state.call(&request.method, &request.params) {
        Ok(result) => {
            Json(json!({"ok": true, "result": result, "id": request.id, "jsonrpc": "2.0"}))
                .into_response()
        }
        Err(e) => {
            let body = json!({"ok": false, "error": e.1, "code": e.0.as_u16(), "id": request.id, "jsonrpc": "2.0"});
            (e.0, Json(body)).into_response()
        }
    }
}

async fn send_boc_rest(
    State(state): State<ApiState>,
    Json(params): Json<Value>,
) -> Result<Response, ApiError> {
    state.call("sendBoc", &params).map(ok)
}

async fn run_get_method_rest(
    State(state): State<ApiState>,
    Json(params): Json<Value>,
) -> Result<Response, ApiError> {
    state.call("runGetMethod", &params).map(ok)
}

async fn address_rest(
    State(state): State<ApiState>,
    Query(params): Query<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    state
        .call("getAddressInformation", &Value::Object(params))
        .map(ok)
}

async fn transactions_rest(
    State(state): State<ApiState>,
    Query(params): Query<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    state
        .call("getTransactions", &Value::Object(params))
        .map(ok)
}

async fn masterchain_rest(State(state): State<ApiState>) -> Result<Response, ApiError> {
    state.call("getMasterchainInfo", &Value::Null).map(ok)
}

async fn block_header_rest(
    State(state): State<ApiState>,
    Query(params): Query<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    state.call("getBlockHeader", &Value::Object(params)).map(ok)
}
