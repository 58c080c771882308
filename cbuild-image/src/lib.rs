//! cbuild-image: OCI images — import, verify, unpack, a per-layer store for overlayfs, build, commit,
//! export. See docs/image.md for the verbs and docs/ARCHITECTURE.md for how it meets the other tools.
//!
//! One module per concern: `digest` (sha256, chain IDs, hashing readers), `store` (the OCI layout, locks,
//! staging), `image` (loading and checking manifests/configs), `import`, `stream` (one-pass
//! decompress-and-hash on its own thread), `extract` (safe tar extraction, whiteouts), `ops` (unpack,
//! layers, verify, gc), `build` (deterministic layer tars: build, commit), `export`, `show` (output),
//! `signals` (stop signals held while a temporary or an unpacked tree could be left behind).

pub mod build;
pub mod digest;
pub mod error;
pub mod export;
pub mod extract;
pub mod fsutil;
pub mod guard;
pub mod image;
pub mod import;
pub mod ops;
pub mod progress;
pub mod reference;
pub mod show;
pub mod signals;
pub mod store;
pub mod stream;

pub use error::{Error, Result};

/// How the user asked to be talked to.
#[derive(Clone, Copy, Default)]
pub struct Ctx {
    pub verbose: bool,
    pub json: bool,
}

impl Ctx {
    /// A `-v` step line: `cbuild-image: step: <step>: <object>`.
    pub fn step(&self, step: &str, object: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("cbuild-image: step: {step}: {object}");
        }
    }

    /// Something skipped or odd that does not fail the command.
    pub fn warn(&self, msg: &str) {
        eprintln!("cbuild-image: warning: {msg}");
    }

    /// No progress bar when step lines or JSON are wanted.
    pub fn quiet(&self) -> bool {
        self.verbose || self.json
    }
}

/// `<data>`: `CBUILD_DATA`, else /var/lib/cbuild for root, else `${XDG_DATA_HOME:-~/.local/share}/cbuild`.
pub fn data_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("CBUILD_DATA").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if nix::unistd::geteuid().is_root() {
        return "/var/lib/cbuild".into();
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(x).join("cbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    std::path::PathBuf::from(home).join(".local/share/cbuild")
}
