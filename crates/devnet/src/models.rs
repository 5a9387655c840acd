//! `cocoon model pull|list`, and the devnet's choice of model: SmolLM2 from the
//! local store, pulled on first run, or — only when no model can be had — a
//! generated random model whose output is noise, said loudly.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cocoon_inference::store::{
    ModelSource, ModelStore, StoredModel, SMOLLM2_NAME, SMOLLM2_SHA256, SMOLLM2_SOURCE,
};
use cocoon_inference::tiny_model::{write_model, ModelShape};
use indicatif::{ProgressBar, ProgressStyle};

/// The devnet's model name on the network.
pub const DEVNET_MODEL: &str = "SmolLM2-135M-Instruct";

/// A progress callback that draws one bar per stage on stderr.
pub struct Bars {
    bar: Option<(String, ProgressBar)>,
}

impl Bars {
    pub fn new() -> Self {
        Self { bar: None }
    }

    pub fn update(&mut self, stage: &str, done: u64, total: u64) {
        let fresh = !matches!(&self.bar, Some((s, _)) if s == stage);
        if fresh {
            if let Some((_, old)) = self.bar.take() {
                old.finish();
            }
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(stage.to_string());
            self.bar = Some((stage.to_string(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            if total > 0 {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish();
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

fn store_at(dir: Option<PathBuf>) -> ModelStore {
    ModelStore::open(dir.unwrap_or_else(ModelStore::default_root))
}

/// `cocoon model pull`.
pub fn pull(
    spec: &str,
    file: Option<&str>,
    sha256: Option<&str>,
    store: Option<PathBuf>,
) -> anyhow::Result<StoredModel> {
    let source = ModelSource::parse(spec, file, sha256).map_err(anyhow::Error::msg)?;
    let store = store_at(store);
    eprintln!("pulling {source} into {}", store.root().display());
    let mut bars = Bars::new();
    let model = store
        .pull(&source, &mut |s, d, t| bars.update(s, d, t))
        .map_err(anyhow::Error::msg);
    bars.finish();
    let model = model?;
    println!(
        "{}  {}  {} MiB  sha256 {}",
        model.name,
        model.path.display(),
        model.bytes >> 20,
        model.sha256
    );
    Ok(model)
}

/// `cocoon model list`.
pub fn list(store: Option<PathBuf>) {
    let store = store_at(store);
    let models = store.list();
    if models.is_empty() {
        println!(
            "no models in {} (try: cocoon model pull {SMOLLM2_SOURCE})",
            store.root().display()
        );
        return;
    }
    println!("models in {}:", store.root().display());
    for m in models {
        println!(
            "  {:<40} {:>8} MiB  sha256 {}  from {}",
            m.name,
            m.bytes >> 20,
            m.sha256,
            m.source
        );
    }
}

/// The GGUF file the devnet serves, and whether it is a real model.
pub struct DevnetWeights {
    pub path: PathBuf,
    pub real: bool,
}

/// SmolLM2 from the store, pulled (with progress) when missing; if that fails,
/// a generated random model, with a loud explanation.
pub fn devnet_weights(store_dir: Option<PathBuf>) -> anyhow::Result<DevnetWeights> {
    let store = store_at(store_dir);
    if let Some(model) = store.get(SMOLLM2_NAME) {
        return Ok(DevnetWeights {
            path: model.path,
            real: true,
        });
    }
    eprintln!(
        "First run: fetching SmolLM2-135M-Instruct (98 MB, Apache-2.0) from {SMOLLM2_SOURCE} into {}",
        store.root().display()
    );
    let source = ModelSource::parse(SMOLLM2_SOURCE, None, None).map_err(anyhow::Error::msg)?;
    let mut bars = Bars::new();
    let pulled = store.ensure(SMOLLM2_NAME, &source, &mut |s, d, t| bars.update(s, d, t));
    bars.finish();
    match pulled {
        Ok(model) if model.sha256 == SMOLLM2_SHA256 => Ok(DevnetWeights {
            path: model.path,
            real: true,
        }),
        Ok(model) => anyhow::bail!(
            "{} has SHA-256 {}, not the published {SMOLLM2_SHA256}; remove it and pull again",
            model.path.display(),
            model.sha256
        ),
        Err(e) => {
            eprintln!();
            eprintln!("WARNING: could not fetch a real model: {e}");
            eprintln!("WARNING: serving a GENERATED RANDOM model instead: its output is NOISE.");
            eprintln!("         Get a real one with `cocoon model pull {SMOLLM2_SOURCE}`");
            eprintln!(
                "         (or pass --gguf FILE, or --engine-url URL for a vLLM/llama.cpp server)."
            );
            eprintln!();
            let path = generated_fallback(store.root())?;
            Ok(DevnetWeights { path, real: false })
        }
    }
}

fn generated_fallback(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("generated");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("cocoon-generated-random.gguf");
    if !path.exists() {
        write_model(&path, ModelShape::TINY, 1)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}
