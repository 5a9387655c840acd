//! [`Node`]: one `cocoon` process of a [`super::ProcessNet`], run from its
//! config file with its output in a log file beside it; started, killed
//! (SIGKILL) and started again, its peak memory read from /proc.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// One `cocoon` process and the config file it runs from.
pub struct Node {
    /// `proxy-0`, `worker-3`, `client`.
    pub name: String,
    role: &'static str,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    binary: PathBuf,
    /// Its plain-HTTP status endpoint (`/readyz`, `/stats`, `/metrics`), or
    /// the client node's API.
    pub http: String,
}

impl Node {
    /// `role` (`proxy`, `worker`, `client`) run from `config`; not started.
    pub fn new(
        name: String,
        role: &'static str,
        config: PathBuf,
        binary: PathBuf,
        http: String,
    ) -> Self {
        Self {
            log: config.with_extension("log"),
            name,
            role,
            config,
            child: None,
            binary,
            http,
        }
    }

    /// The config file it runs from.
    pub fn config(&self) -> &std::path::Path {
        &self.config
    }

    /// Start (again) from its config file; output goes to its log file.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("{}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .args([self.role, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            // The error a node exits with, not a backtrace, ends its log.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no clean shutdown, as a crash or a power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How it ended, if it has (it is then no longer running).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Peak resident memory of the process so far (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
