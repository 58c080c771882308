//! A guard on the raw tar stream, ahead of the tar reader. The tar crate buffers PAX records (`x`, `g`)
//! and GNU long names (`L`, `K`) in memory whole, so a small gzip layer declaring a 50 GB record would
//! exhaust memory long before `--max-layer-size` could stop it. This reader follows the 512-byte header
//! chain as bytes pass through and refuses such a record before the reader allocates for it.

use std::io::{self, Read};

/// Largest PAX or long-name record accepted (real ones are a few hundred bytes; xattrs are ≤ 64 KiB).
pub const MAX_META: u64 = 1 << 20;

pub struct TarGuard<R> {
    inner: R,
    pos: u64,
    next_header: u64,
    header: Vec<u8>,
    /// Set when the stream stops looking like a plain tar we can follow (bad checksum, old GNU sparse
    /// extension blocks): from then on the tar reader's own checks decide.
    off: bool,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard { inner, pos: 0, next_header: 0, header: Vec::with_capacity(512), off: false }
    }

    fn inspect(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut i = 0usize;
        while !self.off && i < buf.len() {
            let at = self.pos + i as u64;
            if at < self.next_header {
                let skip = (self.next_header - at).min((buf.len() - i) as u64) as usize;
                i += skip;
                continue;
            }
            let take = (512 - self.header.len()).min(buf.len() - i);
            self.header.extend_from_slice(&buf[i..i + take]);
            i += take;
            if self.header.len() < 512 {
                break;
            }
            let h = std::mem::take(&mut self.header);
            let start = self.next_header;
            self.next_header = start + 512;
            if h.iter().all(|b| *b == 0) {
                continue; // end-of-archive blocks
            }
            if !checksum_ok(&h) {
                self.off = true;
                break;
            }
            let size = parse_size(&h[124..136]).unwrap_or(0);
            let kind = h[156];
            if matches!(kind, b'x' | b'g' | b'L' | b'K') && size > MAX_META {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar metadata record ({}) of {size} bytes exceeds the {MAX_META}-byte limit", kind as char),
                ));
            }
            if kind == b'S' {
                self.off = true; // old GNU sparse: extension blocks we do not follow
                break;
            }
            self.next_header = start + 512 + size.div_ceil(512) * 512;
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(want) = parse_octal(&h[148..156]) else { return false };
    let sum: u64 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u64 }).sum();
    sum == want
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s: Vec<u8> = f.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

/// A header size: octal, or GNU base-256 (high bit of the first byte set).
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    parse_octal(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path("x").unwrap();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn passes_normal_tar_and_refuses_huge_pax() {
        let mut v = header(b'0', 600);
        v.extend(vec![7u8; 1024]); // 600 bytes of data, padded
        v.extend(header(b'x', MAX_META + 1));
        let mut out = Vec::new();
        let e = TarGuard::new(&v[..]).read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        let mut ok = header(b'0', 600);
        ok.extend(vec![7u8; 1024]);
        ok.extend(header(b'x', 100));
        ok.extend(vec![0u8; 512 + 1024]);
        assert!(TarGuard::new(&ok[..]).read_to_end(&mut out).is_ok());
    }
}
