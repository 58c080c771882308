//! cbuild-net: the container network plumber. Bridges, veth pairs, IPAM leases, NAT and published
//! ports, each in its own module; `main.rs` is only the command line.
//!
//! Every verb works against one "host" network namespace: the one this process runs in, or the one
//! named by `--host-netns` (so a lab, a test or a benchmark can build a whole topology inside
//! namespaces it made, never touching the machine's own network).

pub mod attach;
pub mod bridge;
pub mod conntrack;
pub mod error;
pub mod inventory;
pub mod ipam;
pub mod netns;
pub mod nft;
pub mod nl;
pub mod paths;
pub mod signals;

use std::fmt::Display;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

pub use error::{Error, Result};

/// What every verb needs: where state lives, the host namespace, a runtime, and `-v`.
pub struct Ctx {
    pub state: PathBuf,
    pub verbose: bool,
    /// The namespace playing the host; `None` means the one this process runs in.
    pub host: Option<netns::NsFile>,
    /// Inode of the host namespace, to refuse connecting the host to itself.
    pub host_inode: u64,
    /// A path that names the host namespace for later invocations (recorded in `net.json`): the
    /// `--host-netns` file made absolute, `/proc/1/ns/net` when the host is the root namespace, else
    /// empty (this process's own namespace, which no path outlives).
    pub host_path: String,
    /// This process's own network namespace, to come back to after a [`netns::visit`].
    pub home: netns::NsFile,
    pub rt: tokio::runtime::Runtime,
}

impl Ctx {
    pub fn new(host: Option<&str>, verbose: bool) -> Result<Ctx> {
        let state = paths::state_dir();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::io("runtime", "tokio", e))?;
        let host = match host {
            Some(h) if !h.is_empty() => Some(netns::open_spec(&state, h)?),
            _ => None,
        };
        let home = netns::current()?;
        let host = host.filter(|h| h.inode != home.inode);
        let host_inode = host.as_ref().map_or(home.inode, |h| h.inode);
        let host_path = match &host {
            Some(h) => std::fs::canonicalize(&h.path).map_or_else(|_| h.path.clone(), |p| p.display().to_string()),
            // A stat, not an open: only the inode is compared.
            None => match std::fs::metadata("/proc/1/ns/net") {
                Ok(root) if std::os::unix::fs::MetadataExt::ino(&root) == home.inode => "/proc/1/ns/net".to_string(),
                _ => String::new(),
            },
        };
        Ok(Ctx { state, verbose, host, host_inode, host_path, home, rt })
    }

    /// `-v`: one line per step, in the shape of the error lines.
    pub fn step(&self, step: &str, object: impl Display) {
        if self.verbose {
            eprintln!("cbuild-net: step: {step}: {object}");
        }
    }

    pub fn host_fd(&self) -> Option<BorrowedFd<'_>> {
        netns::borrow(&self.host)
    }

    /// A netlink socket in the host namespace.
    pub fn host_nl(&self) -> Result<nl::Nl> {
        self.nl_in(self.host_fd())
    }

    /// A netlink socket in `ns` (`None`: this process's own namespace).
    pub fn nl_in(&self, ns: Option<BorrowedFd<'_>>) -> Result<nl::Nl> {
        nl::Nl::open(self.rt.handle(), ns, self.home.fd.as_fd())
    }

    /// A batching netlink socket in `ns` (see [`nl::Batch`]).
    pub fn batch_in(&self, ns: Option<BorrowedFd<'_>>) -> Result<nl::Batch> {
        nl::Batch::open(self.rt.handle(), ns, self.home.fd.as_fd())
    }

    pub fn nft(&self) -> nft::Nft<'_> {
        nft::Nft::new(self.host_fd(), &self.state)
    }

    /// Report an undo step that failed; it never changes the exit code.
    pub fn undo_failed(&self, e: &Error) {
        eprintln!("cbuild-net: undo: {e}");
    }
}
