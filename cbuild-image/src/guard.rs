//! A guard on the raw tar stream, ahead of the tar reader. The tar crate buffers PAX records (`x`) and
//! GNU long names (`L`, `K`) in memory whole, so a small gzip layer declaring a 50 GB record would
//! exhaust memory long before `--max-layer-size` could stop it. This reader follows the 512-byte header
//! chain as bytes pass through and refuses such a record before the reader allocates for it.
//!
//! It must find every header the tar reader finds, or a record it misses goes unchecked. So it parses
//! each header with the tar crate's own `Header` (same checksum rule, same number syntax, base-256
//! sizes), applies a PAX `size` record to the next entry as the reader does, and steps over GNU sparse
//! extension blocks. Where it still loses the chain (a header whose checksum fails) it fails closed: the
//! tar reader would refuse that header too.

use std::io::{self, Read};

/// Largest PAX or long-name record accepted (real ones are a few hundred bytes; xattrs are ≤ 64 KiB).
pub const MAX_META: u64 = 1 << 20;

pub struct TarGuard<R> {
    inner: R,
    pos: u64,
    /// Where the next 512-byte header (or GNU sparse extension block) starts.
    next_header: u64,
    header: Vec<u8>,
    /// The next block is a GNU sparse extension block, not a header; then `data` bytes of the entry.
    sparse_ext: Option<u64>,
    /// A PAX record being collected (its `size` key changes where the next entry's data ends).
    pax_buf: Option<Vec<u8>>,
    pax_end: u64,
    /// The PAX records waiting for the entry they describe.
    pending_pax: Option<Vec<u8>>,
    /// The tar reader stops at the first zero block; so does the guard.
    ended: bool,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            pos: 0,
            next_header: 0,
            header: Vec::with_capacity(512),
            sparse_ext: None,
            pax_buf: None,
            pax_end: 0,
            pending_pax: None,
            ended: false,
        }
    }

    fn inspect(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut i = 0usize;
        while !self.ended && i < buf.len() {
            let at = self.pos + i as u64;
            if at < self.next_header {
                let skip = (self.next_header - at).min((buf.len() - i) as u64) as usize;
                if let Some(p) = &mut self.pax_buf {
                    let want = (self.pax_end.saturating_sub(at) as usize).min(skip);
                    p.extend_from_slice(&buf[i..i + want]);
                }
                i += skip;
                continue;
            }
            if let Some(p) = self.pax_buf.take() {
                self.pending_pax = Some(p);
            }
            let take = (512 - self.header.len()).min(buf.len() - i);
            self.header.extend_from_slice(&buf[i..i + take]);
            i += take;
            if self.header.len() < 512 {
                break;
            }
            let h = std::mem::take(&mut self.header);
            self.block(&h)?;
        }
        Ok(())
    }

    /// One complete 512-byte block where a header (or sparse extension block) is due.
    fn block(&mut self, h: &[u8]) -> io::Result<()> {
        let start = self.next_header;
        if let Some(data) = self.sparse_ext {
            // GNU sparse extension block: `isextended` at byte 504 says whether another follows.
            if h[504] == 0 {
                self.sparse_ext = None;
                self.next_header = start + 512 + data.div_ceil(512) * 512;
            } else {
                self.next_header = start + 512;
            }
            return Ok(());
        }
        if h.iter().all(|b| *b == 0) {
            self.ended = true; // end of archive, as the tar reader sees it
            return Ok(());
        }
        let hdr = tar::Header::from_byte_slice(h);
        let sum: u64 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u64 }).sum();
        if hdr.cksum().ok().map(u64::from) != Some(sum) {
            return Err(invalid("archive header checksum mismatch".into()));
        }
        let kind = h[156];
        let is_ext = matches!(kind, b'x' | b'g' | b'L' | b'K');
        let mut size = hdr.entry_size().map_err(|e| invalid(format!("bad header size: {e}")))?;
        if !is_ext {
            if let Some(p) = self.pending_pax.take() {
                if let Some(s) = pax_size(&p) {
                    size = s;
                }
            }
        }
        if is_ext && size > MAX_META {
            return Err(invalid(format!(
                "tar metadata record ({}) of {size} bytes exceeds the {MAX_META}-byte limit",
                kind as char
            )));
        }
        let recognized = hdr.as_gnu().is_some() || hdr.as_ustar().is_some();
        let data_start = start + 512;
        let end = data_start
            .checked_add(size.div_ceil(512) * 512)
            .ok_or_else(|| invalid("tar entry size overflows".into()))?;
        match kind {
            b'x' if recognized => {
                if self.pending_pax.is_some() {
                    return Err(invalid("two PAX records for one entry".into()));
                }
                self.pax_buf = Some(Vec::with_capacity(size as usize));
                self.pax_end = data_start + size;
            }
            b'L' | b'K' if recognized => {} // the PAX records still wait for their entry
            _ => self.pending_pax = None,
        }
        if kind == b'S' && hdr.as_gnu().is_some_and(|g| g.is_extended()) {
            self.sparse_ext = Some(size);
            self.next_header = data_start;
        } else {
            self.next_header = end;
        }
        if size == 0 && self.pax_buf.is_some() {
            self.pending_pax = self.pax_buf.take();
        }
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The `size` record of PAX data, read as the tar crate reads it.
fn pax_size(p: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(p) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
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

    #[test]
    fn follows_gnu_sparse_extension_blocks() {
        let mut h = tar::Header::new_gnu();
        h.set_path("s").unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(512);
        h.as_gnu_mut().unwrap().set_is_extended(true);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        let mut ext = vec![1u8; 512]; // junk sparse map, `isextended` set: one more block follows
        ext[504] = 1;
        v.extend(&ext);
        ext[504] = 0;
        v.extend(&ext);
        v.extend(vec![0xAAu8; 512]); // the stored data
        v.extend(header(b'x', MAX_META + 1));
        let e = TarGuard::new(&v[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }

    #[test]
    fn a_header_it_cannot_read_fails_closed() {
        let mut v = header(b'0', 0);
        v[0] ^= 1; // checksum no longer matches: the tar reader refuses it too
        let e = TarGuard::new(&v[..]).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }
}
