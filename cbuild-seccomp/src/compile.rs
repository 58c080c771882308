//! Resolved rules → libseccomp → the raw program, plus the ENOSYS prologue.

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{self, Insn, Known};
use crate::resolve::{Action, Resolved};
use crate::{step, Error, Result};
use libseccomp::{ScmpFilterContext, ScmpSyscall};
use std::io::{Read, Seek};
use std::os::fd::FromRawFd;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// libseccomp's binary-tree optimizer (SCMP_FLTATR_CTL_OPTIMIZE = 2): a syscall is found in
    /// O(log n) comparisons instead of walking a list of every rule.
    pub optimize: bool,
    /// Prepend the ENOSYS prologue (see [`bpf::enosys_prologue`]).
    pub enosys: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { optimize: true, enosys: true }
    }
}

pub struct Compiled {
    /// What the kernel loads: the prologue (if any) followed by libseccomp's program.
    pub prog: Vec<Insn>,
    /// Length of the prologue in `prog`.
    pub prologue: usize,
    /// Per-architecture highest syscall number the profile names; above it, ENOSYS.
    pub known: Vec<(Arch, Known)>,
    pub ctx: ScmpFilterContext,
}

fn libseccomp_err(object: impl Into<String>, e: libseccomp::error::SeccompError) -> Error {
    Error::new("compile", object, e)
}

/// The libseccomp filter for `r`.
pub fn filter(r: &Resolved, opts: Options) -> Result<ScmpFilterContext> {
    step("compile", &format!("{} rules for {}", r.rules.len(), arch_list(&r.arches)));
    let mut ctx = ScmpFilterContext::new(r.default_action.to_libseccomp()).map_err(|e| libseccomp_err("filter", e))?;
    // We load the program ourselves (or cbuild-ns does), so libseccomp must not touch no_new_privs.
    ctx.set_ctl_nnp(false).map_err(|e| libseccomp_err("no_new_privs", e))?;
    if opts.optimize {
        ctx.set_ctl_optimize(2).map_err(|e| libseccomp_err("optimize", e))?;
    }
    let host = Arch::host();
    for a in &r.arches {
        if a.token != host.token || !ctx.is_arch_present(a.token).unwrap_or(false) {
            ctx.add_arch(a.token).map_err(|e| {
                libseccomp_err(a.name, e).hint(format!(
                    "libseccomp {} may not support this architecture",
                    crate::resolve::libseccomp_version()
                ))
            })?;
        }
    }
    if !r.arches.iter().any(|a| a.token == host.token) {
        ctx.remove_arch(host.token).map_err(|e| libseccomp_err(host.name, e))?;
    }
    for rule in &r.rules {
        let sc = ScmpSyscall::from_name(&rule.name).map_err(|e| libseccomp_err(&rule.name, e))?;
        let conds: Vec<_> = rule.conds.iter().map(|c| c.to_libseccomp()).collect();
        ctx.add_rule_conditional(rule.action.to_libseccomp(), sc, &conds)
            .map_err(|e| libseccomp_err(format!("{} {}", rule.name, rule.action), e))?;
    }
    Ok(ctx)
}

fn arch_list(a: &[Arch]) -> String {
    a.iter().map(|a| a.name).collect::<Vec<_>>().join(",")
}

/// A sealed in-memory file for libseccomp to export into: it writes to an fd, not to a buffer, in 2.5.
fn memfd() -> Result<std::fs::File> {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"cbuild-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::new("export", "memfd", std::io::Error::last_os_error()));
    }
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn export(ctx: &ScmpFilterContext, pfc: bool) -> Result<Vec<u8>> {
    let mut f = memfd()?;
    if pfc { ctx.export_pfc(&f) } else { ctx.export_bpf(&f) }.map_err(|e| Error::new("export", "filter", e))?;
    let mut out = Vec::new();
    f.rewind().and_then(|_| f.read_to_end(&mut out)).map_err(|e| Error::new("export", "memfd", e))?;
    Ok(out)
}

pub fn pfc(ctx: &ScmpFilterContext) -> Result<String> {
    Ok(String::from_utf8_lossy(&export(ctx, true)?).into_owned())
}

/// The highest syscall number each architecture's filter names, from every name the applicable profile
/// entries mention (also those that ended up with the default action: the profile *knows* them).
pub fn known_max(r: &Resolved) -> Vec<(Arch, Known)> {
    let mut out = Vec::new();
    let has_x32 = r.arches.iter().any(|a| a.name == "x32");
    for a in &r.arches {
        // x32 shares x86_64's AUDIT_ARCH and is told apart by bit 30; ARM's private calls live at 0xf0000+.
        let (base, limit) = match a.name {
            "x86_64" if has_x32 => (0, X32_SYSCALL_BIT),
            "x86_64" => (0, X32_SYSCALL_BIT),
            "x32" => (X32_SYSCALL_BIT, u32::MAX),
            "arm" => (0, 0x000f_0000),
            _ => (0, u32::MAX),
        };
        let max = r
            .mentioned
            .iter()
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, a.token).ok())
            .map(|s| s.as_raw_syscall())
            .filter(|&nr| nr >= 0)
            .map(|nr| if a.name == "x32" { nr as u32 | X32_SYSCALL_BIT } else { nr as u32 })
            .filter(|&nr| nr >= base && nr < limit)
            .max();
        if let Some(max) = max {
            out.push((*a, Known { audit: a.audit, base, limit, max }));
        }
    }
    out
}

/// Compile `r` to the program the kernel loads.
pub fn compile(r: &Resolved, opts: Options) -> Result<Compiled> {
    let ctx = filter(r, opts)?;
    step("export", "bpf");
    let main = bpf::from_bytes(&export(&ctx, false)?, "libseccomp program")?;
    // runc patches only filters whose default refuses: under ALLOW/LOG a new call already runs, and a
    // default of ERRNO(ENOSYS) already says the right thing.
    let wants = opts.enosys && !r.default_action.permits() && r.default_action != Action::Errno(libc::ENOSYS as u16);
    let known = if wants { known_max(r) } else { vec![] };
    let mut prog = if known.is_empty() {
        vec![]
    } else {
        let k: Vec<Known> = known.iter().map(|(_, k)| *k).collect();
        bpf::enosys_prologue(&k)
    };
    let prologue = prog.len();
    prog.extend_from_slice(&main);
    if prog.len() > bpf::MAX_INSNS {
        return Err(Error::new(
            "compile",
            "program",
            format!("{} instructions, the kernel takes {}", prog.len(), bpf::MAX_INSNS),
        ));
    }
    Ok(Compiled { prog, prologue, known, ctx })
}
