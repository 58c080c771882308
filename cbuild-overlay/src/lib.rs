//! cbuild-overlay: OverlayFS for containers.
//!
//! - [`mount`]: checked, undoable overlay mounts with any number of layers up to the kernel's limit, by
//!   the new mount API or, on older kernels, mount(2) with short relative layer names;
//! - [`diff`]: what a container changed, read from its upper dir (whiteouts, opaque dirs, copy-ups);
//! - [`inspect`]: the layers of a mounted overlay (from mountinfo), their sizes and their filesystems'
//!   free inodes and space.

pub mod diff;
pub mod discard;
pub mod error;
pub mod fsutil;
pub mod inspect;
pub mod mount;
pub mod mountinfo;
pub mod walk;

pub use error::{Error, Result};
