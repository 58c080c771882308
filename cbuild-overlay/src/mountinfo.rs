//! /proc/self/mountinfo, and the overlay options in it.
//!
//! The kernel escapes space, tab, newline and backslash (and, in super options, comma and `=`) as `\ooo`
//! octal, so fields split on spaces and options on commas before unescaping. Overlay shows its lower
//! layers in one of two shapes:
//! - `lowerdir=a:b::c` when mounted with mount(2) or the legacy `lowerdir` key: the string the caller
//!   gave, `:` between layers, `\:` for a literal colon, `::` before data-only layers, relative paths
//!   relative to the caller's cwd at mount time, which is gone (cbuild's mount(2) path shows fd numbers
//!   and records the real list in its aux dir, see `mount`);
//! - `lowerdir+=a,lowerdir+=b,datadir+=c` when mounted with the new API's per-layer keys (kernel ≥ 6.8).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One line of mountinfo: the toolkit's one parser (cbuild-mountinfo), bytes throughout.
pub use cbuild_mountinfo::{parse, unescape as unescape_bytes, Mount as MountEntry};

/// Read and parse /proc/self/mountinfo.
pub fn read() -> Result<Vec<MountEntry>> {
    crate::error::verbose::step("mountinfo", "/proc/self/mountinfo");
    let text = std::fs::read("/proc/self/mountinfo").map_err(|e| Error::os("mountinfo", "/proc/self/mountinfo", e))?;
    Ok(parse(&text))
}

/// What an overlay mount's super options say about its layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayOptions {
    /// Lower layers, top first, as the kernel shows them (maybe relative, see the module doc).
    pub lower: Vec<PathBuf>,
    /// Data-only lower layers (after `::`, or `datadir+`).
    pub data: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// True when the layers came as `lowerdir+` (the new API), false for one `lowerdir=` string.
    pub per_layer_keys: bool,
    pub userxattr: bool,
    /// Every other option, as shown (`redirect_dir=on`, `index=on`, `volatile`, ...).
    pub other: Vec<String>,
}

impl OverlayOptions {
    /// Paths are bytes, as the kernel shows them: a layer named `l\xff` stays that, not `l\u{fffd}`.
    pub fn parse(super_options: &[u8]) -> OverlayOptions {
        let path = |b: Vec<u8>| PathBuf::from(OsString::from_vec(b));
        let mut o = OverlayOptions::default();
        for raw in super_options.split(|&b| b == b',') {
            let (key, value) = match raw.iter().position(|&b| b == b'=') {
                Some(i) => (unescape_bytes(&raw[..i]), Some(unescape_bytes(&raw[i + 1..]))),
                None => (unescape_bytes(raw), None),
            };
            match (key.as_slice(), value) {
                (b"lowerdir", Some(v)) => {
                    let (lower, data) = split_lowerdir(&v);
                    o.lower = lower;
                    o.data = data;
                }
                (b"lowerdir+", Some(v)) => {
                    o.per_layer_keys = true;
                    o.lower.push(path(v));
                }
                (b"datadir+", Some(v)) => {
                    o.per_layer_keys = true;
                    o.data.push(path(v));
                }
                // Shown as given, and overlay unescapes these two (`\x` is `x`) whichever API gave them.
                (b"upperdir", Some(v)) => o.upper = Some(path(ovl_unescape(&v))),
                (b"workdir", Some(v)) => o.work = Some(path(ovl_unescape(&v))),
                (b"userxattr", None) => o.userxattr = true,
                (b"rw" | b"ro", None) => {}
                _ => o.other.push(String::from_utf8_lossy(&unescape_bytes(raw)).into_owned()),
            }
        }
        o
    }
}

/// Overlay's own unescape of upperdir/workdir: a backslash quotes the next character.
fn ovl_unescape(v: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(v.len());
    let mut bytes = v.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => o.extend(bytes.next()),
            b => o.push(b),
        }
    }
    o
}

/// Split a legacy `lowerdir=` value: `:` separates layers, `\` escapes the next character, and an empty
/// element (`::`) starts the data-only layers. Bytes: a layer's name need not be UTF-8.
pub fn split_lowerdir(v: &[u8]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut layers: Vec<Vec<PathBuf>> = vec![vec![]];
    let mut cur = Vec::new();
    let mut bytes = v.iter().copied();
    let mut prev_sep = false;
    let path = |b: Vec<u8>| PathBuf::from(OsString::from_vec(b));
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                cur.extend(bytes.next());
                prev_sep = false;
            }
            b':' => {
                if prev_sep && cur.is_empty() {
                    layers.push(vec![]);
                } else {
                    layers.last_mut().unwrap().push(path(std::mem::take(&mut cur)));
                }
                prev_sep = true;
            }
            _ => {
                cur.push(b);
                prev_sep = false;
            }
        }
    }
    if !cur.is_empty() {
        layers.last_mut().unwrap().push(path(cur));
    }
    let mut it = layers.into_iter();
    let lower = it.next().unwrap_or_default();
    let data = it.flatten().collect();
    (lower, data)
}

/// The overlay mounted at `target` (the topmost one if several are stacked there).
pub fn overlay_at(entries: &[MountEntry], target: &Path) -> Option<MountEntry> {
    // Later lines are mounted on top of earlier ones at the same point.
    let top = entries.iter().rev().find(|e| e.mount_point == target)?;
    (top.fs_type == "overlay").then(|| top.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn parses_a_line_with_optional_fields() {
        let l = "46 27 0:39 / /tmp/ovx/m\\040x rw,relatime shared:5 master:1 - overlay cbuild-overlay rw,lowerdir=a:c\\040d:b,upperdir=u,workdir=w,uuid=on";
        let e = &parse(l.as_bytes())[0];
        assert_eq!(e.mount_id, 46);
        assert_eq!(e.mount_point, PathBuf::from("/tmp/ovx/m x"));
        assert_eq!(e.fs_type, "overlay");
        assert_eq!(e.source, "cbuild-overlay");
        let o = OverlayOptions::parse(&e.super_options);
        assert_eq!(o.lower, paths(&["a", "c d", "b"]));
        assert_eq!(o.upper.as_deref(), Some(Path::new("u")));
        assert_eq!(o.work.as_deref(), Some(Path::new("w")));
        assert!(!o.per_layer_keys);
        assert_eq!(o.other, vec!["uuid=on"]);
    }

    #[test]
    fn parses_non_utf8_mount_points_sources_and_layers() {
        let l = b"50 27 0:40 / /tmp/m\xff\\040x rw - overlay /s\xfe ro,lowerdir+=/a\xfd,upperdir=/u\xfc,workdir=/w\n51 27 0:41 / /ok rw - tmpfs t rw\n";
        let v = parse(l);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].mount_point.as_os_str().as_bytes(), b"/tmp/m\xff x");
        assert_eq!(v[0].source.as_bytes(), b"/s\xfe");
        let o = OverlayOptions::parse(&v[0].super_options);
        assert_eq!(o.lower[0].as_os_str().as_bytes(), b"/a\xfd");
        assert_eq!(o.upper.unwrap().as_os_str().as_bytes(), b"/u\xfc");
        assert_eq!(v[1].mount_point, PathBuf::from("/ok"));
        let (lower, _) = split_lowerdir(b"/l\xff\\:x:/m");
        assert_eq!(lower[0].as_os_str().as_bytes(), b"/l\xff:x");
    }

    #[test]
    fn parses_per_layer_keys() {
        let o = OverlayOptions::parse(b"rw,lowerdir+=/l/1,lowerdir+=/l/a\\054b,datadir+=/d,upperdir=/u,userxattr");
        assert_eq!(o.lower, paths(&["/l/1", "/l/a,b"]));
        assert_eq!(o.data, paths(&["/d"]));
        assert!(o.per_layer_keys && o.userxattr);
        let o = OverlayOptions::parse(br"rw,lowerdir=/l,upperdir=/u\134\134x\134:y\134\054z,workdir=/w\134\134");
        assert_eq!(o.upper.as_deref(), Some(Path::new(r"/u\x:y,z")));
        assert_eq!(o.work.as_deref(), Some(Path::new(r"/w\")));
    }

    #[test]
    fn splits_legacy_lowerdir() {
        assert_eq!(split_lowerdir(b"a:b"), (paths(&["a", "b"]), vec![]));
        assert_eq!(split_lowerdir(br"a\:x:b::d1:d2"), (paths(&["a:x", "b"]), paths(&["d1", "d2"])));
        assert_eq!(split_lowerdir(b"0"), (paths(&["0"]), vec![]));
    }
}
