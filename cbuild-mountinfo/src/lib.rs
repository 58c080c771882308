//! The mount table, `/proc/PID/mountinfo`, as bytes.
//!
//! Five of the tools read it (which hierarchies are mounted where, whether a path is a mount point, which
//! overlay uses a layer), and each once had its own parser, with its own mistakes: a table read as UTF-8
//! failed whole for one mount anywhere on the host whose name was not, and half the unescapers knew only
//! `\040`. This crate is not a tool and knows nothing of them; tools still never depend on each other.
//!
//! The kernel writes a field's space, tab, newline and backslash as `\ooo` octal and every other byte as
//! it is, so a line splits on spaces before a field is unescaped, and a path comes out as the bytes it
//! is. Super options stay escaped: a filesystem may escape more in them (overlay escapes `,` and `:` in
//! a layer's path), so a reader splits them on commas first and unescapes each option after.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of the table: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_id: u64,
    pub parent_id: u64,
    /// `major:minor` of the filesystem, as the kernel writes it.
    pub dev: String,
    /// The directory of the filesystem mounted here (`/` for a whole filesystem, deeper for a bind).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: OsString,
    /// Still escaped (see the crate doc).
    pub super_options: Vec<u8>,
}

/// Every line of a mountinfo text that has the fields of one (a line cut short is skipped).
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

/// `/proc/self/mountinfo`, parsed.
pub fn read_self() -> std::io::Result<Vec<Mount>> {
    read(Path::new("/proc/self/mountinfo"))
}

/// A mountinfo file (`/proc/PID/mountinfo` shows that process's mount namespace), parsed.
pub fn read(path: &Path) -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read(path)?))
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // The optional fields (zero or more) end at a lone "-"; every field before it is escaped, so none is one.
    let sep = f.iter().position(|x| *x == b"-")?;
    if sep < 6 || f.len() < sep + 4 {
        return None;
    }
    let path = |x: &[u8]| PathBuf::from(OsString::from_vec(unescape(x)));
    let text = |x: &[u8]| String::from_utf8_lossy(&unescape(x)).into_owned();
    Some(Mount {
        mount_id: std::str::from_utf8(f[0]).ok()?.parse().ok()?,
        parent_id: std::str::from_utf8(f[1]).ok()?.parse().ok()?,
        dev: text(f[2]),
        root: path(f[3]),
        mount_point: path(f[4]),
        fs_type: text(f[sep + 1]),
        source: OsString::from_vec(unescape(f[sep + 2])),
        super_options: f[sep + 3].to_vec(),
    })
}

/// A field (or one option) with its `\ooo` escapes replaced by the bytes they stand for; a backslash
/// that starts no escape is kept.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        match field.get(i..i + 4) {
            Some([b'\\', a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Bytes (a path) as one line of text for a person, in mountinfo's own notation: a control character,
/// a backslash and a byte that is not part of UTF-8 become `\ooo`; everything else, UTF-8 included, is
/// kept. [`unescape`] gives the bytes back, so two different paths never read the same.
pub fn escape(bytes: &[u8]) -> String {
    let mut o = String::with_capacity(bytes.len());
    let octal = |o: &mut String, b: u8| o.push_str(&format!("\\{b:03o}"));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf).bytes().for_each(|b| octal(&mut o, b));
            } else {
                o.push(c);
            }
        }
        chunk.invalid().iter().for_each(|&b| octal(&mut o, b));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_a_line_one_line_and_tells_bytes_apart() {
        // (cbuild-overlay's line escaper, before it became this one.)
        assert_eq!(escape("/a\nb\\c".as_bytes()), "/a\\012b\\134c");
        assert_eq!(escape("/ok é".as_bytes()), "/ok é");
        assert_eq!(escape(b"/a\xff\xc3\n\xc3\xa9"), "/a\\377\\303\\012é");
    }

    #[test]
    fn escape_is_undone_by_unescape() {
        let path = b"/a b\tc\nd\\e\xff\xc3\xa9\x7f";
        assert_eq!(escape(path), "/a b\\011c\\012d\\134e\\377\u{e9}\\177");
        assert_eq!(unescape(escape(path).as_bytes()), path);
    }

    #[test]
    fn unescapes_every_octal_escape_and_keeps_stray_backslashes() {
        assert_eq!(unescape(br"/a\040b\011c\012d\134e"), b"/a b\tc\nd\\e");
        assert_eq!(unescape(br"\054\377"), b",\xff");
        assert_eq!(unescape(br"trailing\04"), br"trailing\04");
        assert_eq!(unescape(b"/x/\xff\\01"), b"/x/\xff\\01");
        assert_eq!(unescape(br"\400 \8"), br"\400 \8");
        assert_eq!(unescape(br"\101\0\\"), br"A\0\\", "only a backslash and three octal digits is an escape");
    }

    #[test]
    fn parses_lines_with_and_without_optional_fields() {
        let text = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
            46 27 0:39 / /tmp/m\\040x\\011y\xff rw,relatime shared:5 master:1 - overlay ovl rw,lowerdir=a\\054b:c\n\
            47 46 0:40 /sub /tmp/b rw - cgroup cgroup rw,cpu,cpuacct\n\
            cut short\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].mount_id, m[0].parent_id, m[0].dev.as_str()), (36, 35, "98:0"));
        assert_eq!((m[0].root.as_path(), m[0].mount_point.as_path()), (Path::new("/mnt1"), Path::new("/mnt2")));
        assert_eq!((m[0].fs_type.as_str(), m[0].source.as_os_str()), ("ext3", std::ffi::OsStr::new("/dev/root")));
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(m[1].mount_point.as_os_str().as_bytes(), b"/tmp/m x\ty\xff");
        assert_eq!(m[1].super_options, b"rw,lowerdir=a\\054b:c");
        assert_eq!((m[2].root.as_path(), m[2].fs_type.as_str()), (Path::new("/sub"), "cgroup"));
    }
}
