//! What the network's root contract publishes as trusted: the worker and
//! proxy images and the models (weights hash → name), at a version. A node
//! that follows the root contract (`[attestation] root`) checks peers
//! against these lists on top of its local [`crate::Policy`]: the chain
//! decides what the network trusts, and a local policy can only narrow it.
//! Reading the contract is the chain crate's job (a [`ListsSource`]); this
//! module holds the latest lists, follows the source, says when they
//! change, and decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::freshness::BoxFuture;

use crate::policy::{PeerRole, Refusal};

/// What every peer's attested configuration must follow, as the root
/// contract publishes it (`get_rules`). A node's local policy can only add
/// to these (see [`crate::Policy::check_configuration_under`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigurationRules {
    /// Peers must present their configuration document.
    pub require_configuration: bool,
    /// An `openai-http` engine may only reach an address inside its own
    /// measured VM (loopback).
    pub upstream_loopback_only: bool,
    /// The engine kinds workers may run (empty: any).
    pub worker_engines: BTreeSet<String>,
}

/// The root contract's trust lists at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedLists {
    /// The root contract's configuration version (bumped by every change).
    pub version: u32,
    /// Image hashes (hex, see `Measurements::image_hash`) that may run workers.
    pub worker_images: BTreeSet<String>,
    /// Image hashes that may run proxies.
    pub proxy_images: BTreeSet<String>,
    /// Weights SHA-256 (hex) → the model's name.
    pub models: BTreeMap<String, String>,
    /// The rules every peer's configuration must follow.
    pub rules: ConfigurationRules,
}

/// Where the lists are read (the chain crate reads the root contract
/// through TON endpoints that must agree).
pub trait ListsSource: Send + Sync + std::fmt::Debug {
    fn read(&self) -> BoxFuture<'_, Result<PublishedLists, String>>;
}

/// The latest lists a node read from its root contract; empty until the
/// first read, when every check refuses (a node does not trust before it
/// knows what the network trusts).
#[derive(Debug)]
pub struct Published {
    root: String,
    lists: tokio::sync::watch::Sender<Option<Arc<PublishedLists>>>,
    source: std::sync::OnceLock<(Arc<dyn ListsSource>, Duration)>,
    following: std::sync::atomic::AtomicBool,
}

impl Published {
    /// Lists to be read from the root contract at `root` (its address, for
    /// messages) and given with [`Published::update`].
    pub fn new(root: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            lists: tokio::sync::watch::Sender::new(None),
            source: std::sync::OnceLock::new(),
            following: Default::default(),
        }
    }

    /// Read the lists from `source`, again every `every` once
    /// [`Published::follow`]ed (set once: a later source is ignored).
    pub fn read_from(&self, source: Arc<dyn ListsSource>, every: Duration) {
        let _ = self.source.set((source, every));
    }

    /// Read the lists from the source now; true when they changed. Lists
    /// given by [`Published::update`] need no source.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some((source, _)) = self.source.get() else {
            return match self.current() {
                Some(_) => Ok(false),
                None => Err("this node has no TON API to read it through (attestation.ton_api, or the role's own chain API)".into()),
            };
        };
        let lists = source.read().await?;
        let version = lists.version;
        let changed = self.update(lists);
        if changed {
            tracing::info!(root = %self.root, version, "read the images and models the root contract trusts");
        }
        Ok(changed)
    }

    /// Read the lists again every interval while these lists are in use; a
    /// failed read keeps those held. Once: a second call does nothing.
    pub fn follow(self: &Arc<Self>) {
        let Some((_, every)) = self.source.get() else {
            return;
        };
        if self
            .following
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let (every, held) = (*every, Arc::downgrade(self));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(published) = held.upgrade() else {
                    return;
                };
                if let Err(e) = published.refresh().await {
                    tracing::warn!(root = %published.root, error = %e, "cannot read the root contract's lists; keeping those held");
                }
            }
        });
    }

    /// Already read lists (tests, and a node that read them before it started).
    pub fn with(root: impl Into<String>, lists: PublishedLists) -> Self {
        let published = Self::new(root);
        published.update(lists);
        published
    }

    /// The root contract these lists come from.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Take newly read lists; true when they differ from those held (the
    /// change is announced to [`Published::changes`]' receivers).
    pub fn update(&self, lists: PublishedLists) -> bool {
        self.lists.send_if_modified(|held| {
            if held.as_deref() == Some(&lists) {
                return false;
            }
            *held = Some(Arc::new(lists));
            true
        })
    }

    /// The lists held now, if any were read.
    pub fn current(&self) -> Option<Arc<PublishedLists>> {
        self.lists.borrow().clone()
    }

    /// A receiver woken whenever the lists change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Option<Arc<PublishedLists>>> {
        self.lists.subscribe()
    }

    /// Whether the root contract publishes images for `role` (it does for
    /// workers and proxies; key managers are trusted by local policy only).
    pub fn governs(role: PeerRole) -> bool {
        matches!(role, PeerRole::Worker | PeerRole::Proxy)
    }

    fn held(&self) -> Result<Arc<PublishedLists>, Refusal> {
        self.current().ok_or_else(|| Refusal::NotPublished {
            what: "anything yet: the root contract's lists are still being read".into(),
            root: self.root.clone(),
            version: None,
        })
    }

    /// Whether the root contract publishes `image_hash` for `role`.
    pub fn check_image(&self, role: PeerRole, image_hash: &str) -> Result<(), Refusal> {
        if !Self::governs(role) {
            return Ok(());
        }
        let lists = self.held()?;
        let images = match role {
            PeerRole::Proxy => &lists.proxy_images,
            _ => &lists.worker_images,
        };
        if images.contains(image_hash) {
            return Ok(());
        }
        Err(Refusal::NotPublished {
            what: format!("{role} image {image_hash}"),
            root: self.root.clone(),
            version: Some(lists.version),
        })
    }

    /// Whether the root contract publishes weights `sha256` under `name`.
    pub fn check_model(&self, name: &str, sha256: Option<&str>) -> Result<(), Refusal> {
        let lists = self.held()?;
        let listed = sha256
            .map(str::to_ascii_lowercase)
            .and_then(|h| lists.models.get(&h));
        if listed.is_some_and(|n| n == name) {
            return Ok(());
        }
        Err(Refusal::NotPublished {
            what: format!(
                "model '{name}' with weights {}",
                sha256.unwrap_or("unknown")
            ),
            root: self.root.clone(),
            version: Some(lists.version),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(version: u32) -> PublishedLists {
        PublishedLists {
            version,
            worker_images: ["aa".into()].into(),
            proxy_images: ["bb".into()].into(),
            models: [("cc".into(), "smol".into())].into(),
            rules: Default::default(),
        }
    }

    #[test]
    fn nothing_is_trusted_before_the_lists_are_read() {
        let published = Published::new("0:root");
        let refused = published.check_image(PeerRole::Worker, "aa").unwrap_err();
        assert!(
            refused.to_string().contains("still being read"),
            "{refused}"
        );
        assert!(published.check_model("smol", Some("cc")).is_err());
    }

    #[test]
    fn images_and_models_are_checked_per_role_and_name() {
        let published = Published::with("0:root", lists(3));
        published.check_image(PeerRole::Worker, "aa").unwrap();
        published.check_image(PeerRole::Proxy, "bb").unwrap();
        let refused = published.check_image(PeerRole::Proxy, "aa").unwrap_err();
        assert!(
            refused.to_string().contains("proxy image aa")
                && refused.to_string().contains("version 3"),
            "{refused}"
        );
        published.check_model("smol", Some("CC")).unwrap();
        // The same weights under another name, or unknown weights: refused.
        assert!(published.check_model("gpt-5", Some("cc")).is_err());
        assert!(published.check_model("smol", None).is_err());
        // Key managers are not the root contract's to list.
        published.check_image(PeerRole::KeyManager, "zz").unwrap();
    }

    #[test]
    fn a_withdrawal_is_announced_once() {
        let published = Published::with("0:root", lists(3));
        let mut changes = published.changes();
        changes.mark_unchanged();
        assert!(!published.update(lists(3)));
        assert!(!changes.has_changed().unwrap());
        let mut withdrawn = lists(4);
        withdrawn.worker_images.clear();
        assert!(published.update(withdrawn));
        assert!(changes.has_changed().unwrap());
        assert!(published.check_image(PeerRole::Worker, "aa").is_err());
    }
}
