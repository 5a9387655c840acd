//! The chain's masterchain blocks as what anchors TEE evidence in time
//! (`cocoon_attestation::freshness`): a node binds the newest block into
//! its evidence, and verifiers look the block up here to learn when it was
//! made.

use std::sync::Arc;

use cocoon_attestation::freshness::{Anchor, AnchorBlock, BlockSource, BoxFuture};
use cocoon_attestation::BlockAnchors;

use crate::{Chain, MasterchainBlock};

/// [`BlockSource`] over any [`Chain`] (TON's HTTP API, the embedded devnet).
#[derive(Debug, Clone)]
pub struct ChainBlocks(pub Arc<dyn Chain>);

fn anchor_block(block: MasterchainBlock) -> AnchorBlock {
    AnchorBlock {
        anchor: Anchor {
            seqno: block.seqno,
            root_hash: block.root_hash,
        },
        gen_utime: block.gen_utime as u64,
    }
}

impl BlockSource for ChainBlocks {
    fn head(&self) -> BoxFuture<'_, Result<AnchorBlock, String>> {
        Box::pin(async move {
            self.0
                .masterchain_head()
                .await
                .map(anchor_block)
                .map_err(|e| e.to_string())
        })
    }

    fn block(&self, seqno: u32) -> BoxFuture<'_, Result<Option<AnchorBlock>, String>> {
        Box::pin(async move {
            self.0
                .masterchain_block(seqno)
                .await
                .map(|b| b.map(anchor_block))
                .map_err(|e| e.to_string())
        })
    }
}

/// A cache of `chain`'s blocks for anchoring and checking evidence.
pub fn block_anchors(chain: Arc<dyn Chain>) -> Arc<BlockAnchors> {
    BlockAnchors::new(Arc::new(ChainBlocks(chain)))
}

/// A node's chain API as its configuration names it: the field that sets
/// it, `testnet`/`mainnet`/a URL, and the API key's environment variable.
pub type ChainApi<'a> = (&'static str, &'a str, Option<&'a str>);

/// [`from_apis`] for a node that may have no chain API (`None`: no
/// anchors); an error names the field.
pub fn for_node(
    api: Option<ChainApi<'_>>,
    agree: &[String],
) -> Result<Option<Arc<BlockAnchors>>, (&'static str, crate::InputError)> {
    api.map(|(field, url, key)| from_apis(url, key, agree).map_err(|e| (field, e)))
        .transpose()
}

/// A cache of the blocks of the TON HTTP API at `ton_api` (`testnet`,
/// `mainnet` or a URL), with the API key in `api_key_env` if given.
pub fn from_api(
    ton_api: &str,
    api_key_env: Option<&str>,
) -> Result<Arc<BlockAnchors>, crate::InputError> {
    from_apis(ton_api, api_key_env, &[])
}

/// [`from_api`], believing a block only when every endpoint in `agree`
/// (`attestation.ton_api_agree`: other parties' TON HTTP APIs) reports it
/// alike ([`cocoon_attestation::AgreeingBlocks`]).
pub fn from_apis(
    ton_api: &str,
    api_key_env: Option<&str>,
    agree: &[String],
) -> Result<Arc<BlockAnchors>, crate::InputError> {
    let mut sources: Vec<Arc<dyn BlockSource>> =
        crate::ton_http::endpoints(ton_api, api_key_env, agree)?
            .into_iter()
            .map(|chain| Arc::new(ChainBlocks(chain)) as Arc<dyn BlockSource>)
            .collect();
    if sources.len() == 1 {
        return Ok(BlockAnchors::new(sources.remove(0)));
    }
    Ok(BlockAnchors::new(cocoon_attestation::AgreeingBlocks::new(
        sources,
    )))
}
