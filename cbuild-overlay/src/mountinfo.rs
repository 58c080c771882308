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

/// One line of mountinfo (the fields cbuild uses).
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Parse the whole mountinfo text. It is bytes, not UTF-8: the kernel escapes only space, tab, newline and
/// backslash, so any mount point on the host with a non-UTF-8 name (made by anyone) appears raw.
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Optional fields end at the lone "-" separator.
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(MountEntry {
        mount_id: std::str::from_utf8(fields[0]).ok()?.parse().ok()?,
        parent_id: std::str::from_utf8(fields[1]).ok()?.parse().ok()?,
        mount_point: PathBuf::from(OsString::from_vec(unescape_bytes(fields[4]))),
        fs_type: text(&unescape_bytes(fields[sep + 1])),
        source: text(&unescape_bytes(fields[sep + 2])),
        super_options: text(fields[sep + 3]),
    })
}

/// Read and parse /proc/self/mountinfo.
pub fn read() -> Result<Vec<MountEntry>> {
    crate::error::verbose::step("mountinfo", "/proc/self/mountinfo");
    let text = std::fs::read("/proc/self/mountinfo").map_err(|e| Error::os("mountinfo", "/proc/self/mountinfo", e))?;
    Ok(parse(&text))
}

/// Undo the kernel's `\ooo` escapes.
pub fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s.as_bytes())).into_owned()
}

fn unescape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What an overlay mount's super options say about its layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverlayOptions {
    /// Lower layers, top first, as the kernel shows them (maybe relative, see the module doc).
    pub lower: Vec<String>,
    /// Data-only lower layers (after `::`, or `datadir+`).
    pub data: Vec<String>,
    pub upper: Option<String>,
    pub work: Option<String>,
    /// True when the layers came as `lowerdir+` (the new API), false for one `lowerdir=` string.
    pub per_layer_keys: bool,
    pub userxattr: bool,
    /// Every other option, as shown (`redirect_dir=on`, `index=on`, `volatile`, ...).
    pub other: Vec<String>,
}

impl OverlayOptions {
    pub fn parse(super_options: &str) -> OverlayOptions {
        let mut o = OverlayOptions::default();
        for raw in super_options.split(',') {
            let (key, value) = match raw.split_once('=') {
                Some((k, v)) => (unescape(k), Some(unescape(v))),
                None => (unescape(raw), None),
            };
            match (key.as_str(), value) {
                ("lowerdir", Some(v)) => {
                    let (lower, data) = split_lowerdir(&v);
                    o.lower = lower;
                    o.data = data;
                }
                ("lowerdir+", Some(v)) => {
                    o.per_layer_keys = true;
                    o.lower.push(v);
                }
                ("datadir+", Some(v)) => {
                    o.per_layer_keys = true;
                    o.data.push(v);
                }
                // Shown as given, and overlay unescapes these two (`\x` is `x`) whichever API gave them.
                ("upperdir", Some(v)) => o.upper = Some(ovl_unescape(&v)),
                ("workdir", Some(v)) => o.work = Some(ovl_unescape(&v)),
                ("userxattr", None) => o.userxattr = true,
                ("rw" | "ro", None) => {}
                _ => o.other.push(unescape(raw)),
            }
        }
        o
    }
}

/// Overlay's own unescape of upperdir/workdir: a backslash quotes the next character.
fn ovl_unescape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => o.extend(chars.next()),
            c => o.push(c),
        }
    }
    o
}

/// Split a legacy `lowerdir=` value: `:` separates layers, `\` escapes the next character, and an empty
/// element (`::`) starts the data-only layers.
pub fn split_lowerdir(v: &str) -> (Vec<String>, Vec<String>) {
    let mut layers: Vec<Vec<String>> = vec![vec![]];
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    let mut prev_sep = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                prev_sep = false;
            }
            ':' => {
                if prev_sep && cur.is_empty() {
                    layers.push(vec![]);
                } else {
                    layers.last_mut().unwrap().push(std::mem::take(&mut cur));
                }
                prev_sep = true;
            }
            _ => {
                cur.push(c);
                prev_sep = false;
            }
        }
    }
    if !cur.is_empty() {
        layers.last_mut().unwrap().push(cur);
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

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b\011c\012d\134e"), "/a b\tc\nd\\e");
        assert_eq!(unescape(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape(r"\054"), ",");
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
        assert_eq!(o.lower, vec!["a", "c d", "b"]);
        assert_eq!(o.upper.as_deref(), Some("u"));
        assert_eq!(o.work.as_deref(), Some("w"));
        assert!(!o.per_layer_keys);
        assert_eq!(o.other, vec!["uuid=on"]);
    }

    #[test]
    fn parses_non_utf8_mount_points() {
        let l = b"50 27 0:40 / /tmp/m\xff\\040x rw - overlay cbuild-overlay ro,lowerdir+=/a\n51 27 0:41 / /ok rw - tmpfs t rw\n";
        let v = parse(l);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].mount_point.as_os_str().as_encoded_bytes(), b"/tmp/m\xff x");
        assert_eq!(v[1].mount_point, PathBuf::from("/ok"));
    }

    #[test]
    fn parses_per_layer_keys() {
        let o = OverlayOptions::parse("rw,lowerdir+=/l/1,lowerdir+=/l/a\\054b,datadir+=/d,upperdir=/u,userxattr");
        assert_eq!(o.lower, vec!["/l/1", "/l/a,b"]);
        assert_eq!(o.data, vec!["/d"]);
        assert!(o.per_layer_keys && o.userxattr);
        let o = OverlayOptions::parse(r"rw,lowerdir=/l,upperdir=/u\134\134x\134:y\134\054z,workdir=/w\134\134");
        assert_eq!(o.upper.as_deref(), Some(r"/u\x:y,z"));
        assert_eq!(o.work.as_deref(), Some(r"/w\"));
    }

    #[test]
    fn splits_legacy_lowerdir() {
        assert_eq!(split_lowerdir("a:b"), (vec!["a".into(), "b".into()], vec![]));
        assert_eq!(split_lowerdir(r"a\:x:b::d1:d2"), (vec!["a:x".into(), "b".into()], vec!["d1".into(), "d2".into()]));
        assert_eq!(split_lowerdir("0"), (vec!["0".into()], vec![]));
    }
}
