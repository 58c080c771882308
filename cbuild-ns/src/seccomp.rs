//! Loading a compiled seccomp program: the raw `struct sock_filter` array from `cbuild-seccomp compile`
//! (libseccomp's export format). Read before anything else so a bad file fails early; installed as the
//! very last step before execve so the filter does not have to allow the runtime's own set-up.

use crate::error::{Context, Error, Result, Step};
use crate::spec::SeccompSource;
use std::io::Read;
use std::os::fd::FromRawFd;

/// The kernel's BPF_MAXINSNS.
const MAX_INSNS: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// A validated program, ready to install.
pub struct Program {
    insns: Vec<SockFilter>,
    pub flags: u32,
    name: String,
}

pub fn read(src: &SeccompSource, flags: u32) -> Result<Program> {
    let (mut bytes, name) = (
        Vec::new(),
        match src {
            SeccompSource::File(p) => p.display().to_string(),
            SeccompSource::Fd(n) => format!("fd {n}"),
        },
    );
    // One byte past the largest program the kernel takes: enough to tell it is too large, and a source
    // that never ends (`/dev/zero`) cannot make this process grow without bound.
    let limit = (MAX_INSNS * 8) as u64 + 1;
    match src {
        SeccompSource::File(p) => {
            std::fs::File::open(p).and_then(|f| f.take(limit).read_to_end(&mut bytes)).ctx(Step::Seccomp, &name)?;
        }
        SeccompSource::Fd(n) => {
            crate::protocol::check_fd(*n, Step::Seccomp)?;
            // The fd is ours to consume (like bwrap's --seccomp FD); File closes it when done.
            let f = unsafe { std::fs::File::from_raw_fd(*n) };
            f.take(limit).read_to_end(&mut bytes).ctx(Step::Seccomp, &name)?;
        }
    }
    if bytes.len() > MAX_INSNS * 8 {
        return Err(Error::new(
            Step::Seccomp,
            &name,
            format!("more than {MAX_INSNS} instructions ({} bytes), the most the kernel takes", MAX_INSNS * 8),
        ));
    }
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(Error::new(
            Step::Seccomp,
            &name,
            format!("{} bytes is not a BPF program (a non-empty multiple of 8)", bytes.len()),
        )
        .hint("compile one with: cbuild-seccomp compile PROFILE -o FILE"));
    }
    let insns = bytes
        .chunks_exact(8)
        .map(|c| SockFilter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Ok(Program { insns, flags, name })
}

impl Program {
    /// Install the filter for this thread (all threads with TSYNC).
    pub fn install(&self) -> Result<()> {
        crate::log::step(Step::Seccomp, &self.name);
        let prog = SockFprog { len: self.insns.len() as u16, filter: self.insns.as_ptr() };
        let r = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, self.flags, &prog as *const SockFprog)
        };
        if r != 0 {
            let e = nix::errno::Errno::last();
            let err = Error::sys(Step::Seccomp, &self.name, e);
            return Err(match e {
                nix::errno::Errno::EINVAL => err.hint("the kernel's verifier rejected the program or its flags"),
                nix::errno::Errno::EACCES => err.hint("needs --no-new-privs or CAP_SYS_ADMIN"),
                _ => err,
            });
        }
        Ok(())
    }
}

/// `tsync,log,spec_allow` → SECCOMP_FILTER_FLAG_* bits.
pub fn parse_flags(s: &str) -> std::result::Result<u32, String> {
    let mut f = 0;
    for w in s.split(',').filter(|w| !w.is_empty()) {
        f |= match w.to_ascii_lowercase().trim_start_matches("seccomp_filter_flag_") {
            "tsync" => 1,
            "log" => 2,
            "spec_allow" => 4,
            other => return Err(format!("unknown seccomp flag {other:?} (tsync, log, spec_allow)")),
        };
    }
    Ok(f)
}
