//! Getting a TDX quote from the guest kernel: configfs-tsm
//! (`/sys/kernel/config/tsm/report`). Make an entry directory, write the 64
//! bytes of report data to `inblob`, read the quote from `outblob`, check that
//! `generation` did not move (no other writer raced us) and that `provider` is
//! `tdx_guest`, then remove the entry. Slow on real hardware (up to a second):
//! never on a request's path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The default mount point of configfs-tsm reports.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";

#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error("configfs-tsm at {root}: {source} (is this a TDX guest with configfs mounted?)")]
    Io { root: String, source: io::Error },
    #[error("configfs-tsm provider is {0:?}, not a TDX guest (\"tdx_guest\")")]
    WrongProvider(String),
    #[error("another writer changed the report while we read it (generation {before} -> {after}); retry")]
    Raced { before: String, after: String },
    #[error("configfs-tsm returned an empty quote")]
    Empty,
}

#[cfg(test)]
mod tests;

impl Default for ConfigfsTsm {
    /// The kernel's interface at [`DEFAULT_ROOT`].
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl ConfigfsTsm {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Whether the interface exists on this machine.
    pub fn available(&self) -> bool {
        self.root.is_dir()
    }

    /// A quote over `report_data`. Blocking.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, QuoteError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let entry = self.root.join(format!(
            "cocoon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |source| QuoteError::Io {
            root: self.root.display().to_string(),
            source,
        };
        fs::create_dir(&entry).map_err(io)?;
        let result = read_quote(&entry, report_data);
        remove_entry(&entry);
        result
    }
}

fn read_quote(entry: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, QuoteError> {
    let io = |source| QuoteError::Io {
        root: entry.display().to_string(),
        source,
    };
    fs::write(entry.join("inblob"), report_data).map_err(io)?;
    let before = read_trimmed(&entry.join("generation")).map_err(io)?;
    let quote = read_present(&entry.join("outblob")).map_err(io)?;
    let after = read_trimmed(&entry.join("generation")).map_err(io)?;
    if before != after {
        return Err(QuoteError::Raced { before, after });
    }
    let provider = read_trimmed(&entry.join("provider")).map_err(io)?;
    if provider != "tdx_guest" {
        return Err(QuoteError::WrongProvider(provider));
    }
    if quote.is_empty() {
        return Err(QuoteError::Empty);
    }
    Ok(quote)
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(String::from_utf8_lossy(&read_present(path)?)
        .trim()
        .to_string())
}

/// Read an attribute, waiting up to two seconds for it to appear: the kernel
/// creates them with the entry, but a provider may publish them a moment later.
fn read_present(path: &Path) -> io::Result<Vec<u8>> {
    for _ in 0..200 {
        match fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
    fs::read(path)
}

/// configfs removes an entry's attribute files with the directory; a plain
/// directory (tests) needs its files removed first.
fn remove_entry(entry: &Path) {
    if fs::remove_dir(entry).is_err() {
        let _ = fs::remove_dir_all(entry);
    }
}
