//! Reading and following what the root contract publishes as trusted
//! (worker and proxy images, models, configuration rules): [`read_lists`] reads them at one
//! version, [`AgreeingLists`] is the source a node's [`Published`] follows. A
//! node's trust rests on these lists, so each read asks every configured
//! endpoint (`attestation.ton_api` and `attestation.ton_api_agree`) and
//! believes them only when all answer alike: one lying TON HTTP API cannot
//! add an image, and while they disagree the node keeps what it had.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::freshness::BoxFuture;
use cocoon_attestation::published::ListsSource;
use cocoon_attestation::{ConfigurationRules, Published, PublishedLists};
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::dict::Dict;
use tycho_vm::RcStackValue;

use crate::registry::read_snake;
use crate::{stack_int, Chain, ChainError, Error, InputError, StdAddr};

/// The root contract's lists at one version, read from one endpoint. The
/// version is read before and after: a change between the reads is read
/// again, and lists still changing after three reads are an error (never
/// contents labelled with a version they may not have).
pub async fn read_lists(chain: &dyn Chain, root: &StdAddr) -> Result<PublishedLists, Error> {
    for _ in 0..3 {
        let version = version_of(chain, root).await?;
        let (worker_images, proxy_images) = {
            let stack = chain.get(root, "get_images", &[]).await?;
            (images(&stack, 0)?, images(&stack, 1)?)
        };
        let models = models(&chain.get(root, "get_models", &[]).await?)?;
        let rules = match chain.get(root, "get_rules", &[]).await {
            Ok(stack) => rules(&stack)?,
            // A root contract deployed before configuration rules has no
            // such get-method (TVM exit code 11): it publishes none.
            Err(e) if e.to_string().contains("failed with exit code 11") => {
                ConfigurationRules::default()
            }
            Err(e) => return Err(e),
        };
        if version_of(chain, root).await? == version {
            return Ok(PublishedLists {
                version,
                worker_images,
                proxy_images,
                models,
                rules,
            });
        }
    }
    Err(ChainError::Unexpected(format!(
        "the root contract {root}'s lists changed during each of three reads"
    )))
}

async fn version_of(chain: &dyn Chain, root: &StdAddr) -> Result<u32, Error> {
    let version = stack_int(&chain.get(root, "get_version", &[]).await?)?;
    u32::try_from(version)
        .map_err(|_| ChainError::Unexpected(format!("root version {version} is not a uint32")))
}

/// The lists as every one of `endpoints` reads them; an error names the
/// endpoints that disagree.
pub async fn read_agreeing(
    endpoints: &[Arc<dyn Chain>],
    root: &StdAddr,
) -> Result<PublishedLists, Error> {
    let (first, others) = endpoints
        .split_first()
        .ok_or_else(|| ChainError::Unexpected("no TON endpoint to read the root from".into()))?;
    let lists = read_lists(first.as_ref(), root).await?;
    for (i, other) in others.iter().enumerate() {
        let theirs = read_lists(other.as_ref(), root).await?;
        if theirs != lists {
            return Err(ChainError::Unexpected(format!(
                "TON endpoints disagree on the root contract {root}'s lists: the first reads version {}, endpoint {} of attestation.ton_api_agree reads version {}{}",
                lists.version,
                i + 1,
                theirs.version,
                if theirs.version == lists.version { " with other contents" } else { "" }
            )));
        }
    }
    Ok(lists)
}

/// One of `get_images`' dictionaries (image hash -> true) as hex hashes.
fn images(stack: &[RcStackValue], i: usize) -> Result<BTreeSet<String>, Error> {
    let Some(root) = dict_root(stack, i, "get_images")? else {
        return Ok(BTreeSet::new());
    };
    let dict: Dict<HashBytes, bool> = Dict::from_raw(Some(root));
    dict.iter()
        .map(|entry| {
            entry
                .map(|(hash, _)| hex::encode(hash.0))
                .map_err(|e| ChainError::Unexpected(format!("root images: {e}")))
        })
        .collect()
}

/// `get_models`' dictionary (weights hash -> name) as hex hash -> name.
fn models(stack: &[RcStackValue]) -> Result<BTreeMap<String, String>, Error> {
    let Some(root) = dict_root(stack, 0, "get_models")? else {
        return Ok(BTreeMap::new());
    };
    let dict: Dict<HashBytes, Cell> = Dict::from_raw(Some(root));
    let mut out = BTreeMap::new();
    for entry in dict.iter() {
        let (hash, name) =
            entry.map_err(|e| ChainError::Unexpected(format!("root models: {e}")))?;
        let name = read_snake(&name)
            .map_err(|e| ChainError::Unexpected(format!("root model {hash}: name: {e}")))?;
        out.insert(hex::encode(hash.0), name);
    }
    Ok(out)
}

/// `get_rules`: (require configuration, loopback upstreams only, engine
/// kinds as a comma-separated snake string or null).
fn rules(stack: &[RcStackValue]) -> Result<ConfigurationRules, Error> {
    let flag = |i: usize| -> Result<bool, Error> {
        stack
            .get(i)
            .and_then(|v| v.as_int())
            .map(|n| n.sign() != num_bigint::Sign::NoSign)
            .ok_or_else(|| ChainError::Unexpected(format!("get_rules: value {i} is not a flag")))
    };
    let worker_engines = match dict_root(stack, 2, "get_rules")? {
        None => BTreeSet::new(),
        Some(cell) => read_snake(&cell)
            .map_err(|e| ChainError::Unexpected(format!("get_rules: engines: {e}")))?
            .split(',')
            .map(str::trim)
            .filter(|kind| !kind.is_empty())
            .map(str::to_string)
            .collect(),
    };
    Ok(ConfigurationRules {
        require_configuration: flag(0)?,
        upstream_loopback_only: flag(1)?,
        worker_engines,
    })
}

fn dict_root(stack: &[RcStackValue], i: usize, method: &str) -> Result<Option<Cell>, Error> {
    let value = stack
        .get(i)
        .ok_or_else(|| ChainError::Unexpected(format!("{method} returned no value {i}")))?;
    if value.is_null() {
        return Ok(None);
    }
    value
        .as_cell()
        .cloned()
        .map(Some)
        .ok_or_else(|| ChainError::Unexpected(format!("{method}: value {i} is not a cell")))
}

/// The root contract's lists read through endpoints that must agree: the
/// [`ListsSource`] a node's [`Published`] follows.
#[derive(Debug)]
pub struct AgreeingLists {
    endpoints: Vec<Arc<dyn Chain>>,
    root: StdAddr,
}

impl ListsSource for AgreeingLists {
    fn read(&self) -> BoxFuture<'_, Result<PublishedLists, String>> {
        Box::pin(async move {
            read_agreeing(&self.endpoints, &self.root)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// [`read_through`] for a node's check, which follows a root contract when
/// `published` is set, through the node's chain API (`api`; none is an
/// error naming `attestation.ton_api`).
pub fn read_through_node(
    published: Option<&Published>,
    api: Option<crate::anchors::ChainApi<'_>>,
    agree: &[String],
    every: Duration,
) -> Result<(), (&'static str, InputError)> {
    let Some(published) = published else {
        return Ok(());
    };
    let (field, url, key) =
        api.ok_or(("attestation.ton_api", InputError::ApiUrl(String::new())))?;
    read_through(published, url, key, agree, every).map_err(|(f, e)| match f {
        "attestation.ton_api" => (field, e),
        other => (other, e),
    })
}

/// Have `published` (a node's `[attestation] root`) read through `ton_api`
/// (its key in `api_key_env`) and every `agree` endpoint, all alike, again
/// every `every`. The error names the configuration key at fault.
pub fn read_through(
    published: &Published,
    ton_api: &str,
    api_key_env: Option<&str>,
    agree: &[String],
    every: Duration,
) -> Result<(), (&'static str, InputError)> {
    let root =
        crate::ton_http::parse_address(published.root()).map_err(|e| ("attestation.root", e))?;
    let endpoints = crate::ton_http::endpoints(ton_api, api_key_env, agree)
        .map_err(|e| ("attestation.ton_api", e))?;
    published.read_from(Arc::new(AgreeingLists { endpoints, root }), every);
    Ok(())
}
