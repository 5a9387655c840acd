//! What every node shows its operator, over plain HTTP on a private port:
//! `/healthz` (the process answers), `/readyz` (it can do its job now: 200,
//! else 503), Prometheus `/metrics` (OpenMetrics text: requests by outcome,
//! tokens, time to first token and duration as histograms, requests in
//! flight, plus what each role adds through a [`Collector`]) and a JSON
//! `/stats`. Nothing here ever holds prompt or answer text: requests are
//! labelled by model and outcome only, and model labels are bounded.
//!
//! # Layout
//! * `requests` - [`Metrics`]: the request counters and histograms, and
//!   [`RequestTimer`], one request's measurements.
//! * `gauges`   - [`encode_gauges`]: a role's gauges, made at scrape time.
//! * `http`     - [`http::serve`]: every node's HTTP listener, with a
//!   connection cap and header and body read timeouts.
//! * `status`   - [`router`] / [`serve`] / [`spawn`]: the HTTP endpoints over a node's
//!   [`NodeStatus`], and [`page_script`], the script all nodes' pages share.
//! * `admin`    - `/admin/...`: a node's run-time controls, behind its admin token.

#![forbid(unsafe_code)]

pub mod admin;
mod gauges;
pub mod http;
mod requests;
mod status;

pub use gauges::{encode_gauges, Row};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use requests::{metered, Metrics, RequestTimer, MAX_MODEL_LABELS};
pub use status::{openmetrics, page_script, router, serve, spawn, NodeStatus, PAGE_SCRIPT};
