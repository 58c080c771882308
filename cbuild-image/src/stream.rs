//! Reading a layer blob in one pass: a decoder thread reads the file, hashes the compressed bytes,
//! decompresses, hashes the uncompressed stream (the diff_id) and hands chunks to the extracting thread,
//! so SHA-256, inflate and file creation run on two cores at once. Nothing is trusted until the digests
//! compare equal at the end; a mismatch makes the caller throw the extracted result away.

use crate::digest::{Digest, HashReader, LIMIT_MSG};
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const CHUNK: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type; None for a type that is not a layer we can read.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The OCI media type for a layer with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Recognise a stream by its magic bytes (docker-archive layers carry no media type).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Compression, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (gzip, zstd, none)")),
        }
    }
}

/// Wrap `r` in the decompressor for `c`.
pub fn decoder<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(CHUNK, r))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(CHUNK, r))?),
    })
}

/// What the decoder thread measured: the blob's digest and size, and the uncompressed stream's.
#[derive(Debug, Clone)]
pub struct Measured {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub uncompressed: u64,
}

/// The uncompressed stream of a layer blob being decoded on another thread.
pub struct LayerStream<'p> {
    rx: Option<Receiver<Vec<u8>>>,
    /// Used chunks go back to the decoder: 256 KiB allocations are mmap'd by malloc, and a fresh one per
    /// chunk would cost a page fault per 4 KiB of layer.
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    handle: Option<JoinHandle<Result<Measured>>>,
    progress: Option<&'p Progress>,
    blob: String,
}

impl<'p> LayerStream<'p> {
    /// Start decoding `path` (named `blob` in messages). `limit` bounds the uncompressed size.
    pub fn open(path: &Path, blob: &str, c: Compression, limit: u64, progress: Option<&'p Progress>) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let (tx, rx) = sync_channel::<Vec<u8>>(16);
        let (back, free) = sync_channel::<Vec<u8>>(20);
        let name = blob.to_string();
        let handle = std::thread::Builder::new()
            .name("decode".into())
            .spawn(move || -> Result<Measured> {
                let mut comp = HashReader::new(f);
                let step = |e: io::Error| decode_error(&name, limit, e);
                let (diff_id, uncompressed) = {
                    let mut un = HashReader::with_limit(decoder(&mut comp, c).map_err(step)?, limit);
                    loop {
                        let mut buf = free.try_recv().unwrap_or_default();
                        buf.resize(CHUNK, 0);
                        let mut n = 0;
                        while n < CHUNK {
                            match un.read(&mut buf[n..]) {
                                Ok(0) => break,
                                Ok(k) => n += k,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) => return Err(step(e)),
                            }
                        }
                        if n == 0 {
                            break;
                        }
                        buf.truncate(n);
                        if tx.send(buf).is_err() {
                            return Err(Error::new("decode", &name, "cancelled"));
                        }
                    }
                    un.finish()
                };
                // Trailing bytes after the compressed stream still belong to the blob's digest.
                io::copy(&mut comp, &mut io::sink()).map_err(step)?;
                let (digest, size) = comp.finish();
                Ok(Measured { digest, size, diff_id, uncompressed })
            })
            .map_err(|e| Error::new("decode", blob, e))?;
        Ok(LayerStream {
            rx: Some(rx),
            back,
            cur: Vec::new(),
            pos: 0,
            handle: Some(handle),
            progress,
            blob: blob.to_string(),
        })
    }

    /// Read what is left, stop the decoder and return its measurements (or the decoder's own error,
    /// which explains a failure better than the reader's "unexpected end").
    pub fn finish(mut self) -> Result<Measured> {
        let mut sink = [0u8; 8192];
        loop {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.join()
    }

    /// Stop early (after an extraction error): the decoder sees the closed channel and ends. Returns its
    /// error if it had one, which is the better explanation for the failure.
    pub fn abort(mut self) -> Option<Error> {
        self.rx = None;
        match self.join() {
            Err(e) if e.reason != "cancelled" => Some(e),
            _ => None,
        }
    }

    fn join(&mut self) -> Result<Measured> {
        self.rx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(Error::new("decode", &self.blob, "decoder thread failed")),
        }
    }
}

fn decode_error(blob: &str, limit: u64, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::FileTooLarge && e.to_string() == LIMIT_MSG {
        Error::new("decode", blob, format!("uncompressed layer larger than the limit of {limit} bytes"))
            .hint("raise it with --max-layer-size if the image is trusted")
    } else {
        Error::new("decode", blob, e)
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(chunk) => {
                    if let Some(p) = self.progress {
                        p.add(chunk.len() as u64);
                    }
                    let used = std::mem::replace(&mut self.cur, chunk);
                    if used.capacity() > 0 {
                        let _ = self.back.try_send(used);
                    }
                    self.pos = 0;
                }
                // The decoder ended: cleanly (the caller sees EOF) or with an error (seen in finish()).
                Err(_) => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
