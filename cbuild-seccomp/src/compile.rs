//! Resolved rules → the raw program (our generator, src/gen.rs, or libseccomp's), plus the ENOSYS prologue.

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{self, Insn, Known};
use crate::cache;
use crate::resolve::{Action, Resolved};
use crate::{step, Error, Result};
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use std::io::{Read, Seek};
use std::os::fd::FromRawFd;

/// Which code builds the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generator {
    /// Ours ([`crate::gen`]): the same decisions, in a fraction of a millisecond.
    #[default]
    Native,
    /// libseccomp 2.5's generator (one context per architecture, chained): the reference the tests
    /// compare ours with, kept behind `compile --generator libseccomp`.
    Libseccomp,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A binary tree over syscall numbers (libseccomp: SCMP_FLTATR_CTL_OPTIMIZE = 2): a syscall is found
    /// in O(log n) comparisons instead of walking a list of every rule.
    pub optimize: bool,
    /// Prepend the ENOSYS prologue (see [`bpf::enosys_prologue`]).
    pub enosys: bool,
    /// Look the program up in, and store it into, the cache under `<data>/seccomp` ([`cache`]).
    pub cache: bool,
    pub generator: Generator,
}

impl Default for Options {
    fn default() -> Self {
        Options { optimize: true, enosys: true, cache: false, generator: Generator::Native }
    }
}

pub struct Compiled {
    /// What the kernel loads: the prologue (if any) followed by the generated program.
    pub prog: Vec<Insn>,
    /// Length of the prologue in `prog`.
    pub prologue: usize,
    /// Per-architecture highest syscall number the profile names; above it, ENOSYS.
    pub known: Vec<(Arch, Known)>,
}

fn libseccomp_err(object: impl Into<String>, e: libseccomp::error::SeccompError) -> Error {
    Error::new("compile", object, e)
}

/// The libseccomp filter for `r` over all of its architectures in one context: what `show --pfc` prints.
pub fn filter(r: &Resolved, opts: Options) -> Result<ScmpFilterContext> {
    filter_for(r, &r.arches, opts, None)
}

/// The libseccomp filter for `r` restricted to `arches`; `badarch` replaces the bad-arch action.
fn filter_for(r: &Resolved, arches: &[Arch], opts: Options, badarch: Option<ScmpAction>) -> Result<ScmpFilterContext> {
    step("compile", &format!("{} rules for {}", r.rules.len(), arch_list(arches)));
    let mut ctx = ScmpFilterContext::new(r.default_action.to_libseccomp()).map_err(|e| libseccomp_err("filter", e))?;
    // We load the program ourselves (or cbuild-ns does), so libseccomp must not touch no_new_privs.
    ctx.set_ctl_nnp(false).map_err(|e| libseccomp_err("no_new_privs", e))?;
    if opts.optimize {
        ctx.set_ctl_optimize(2).map_err(|e| libseccomp_err("optimize", e))?;
    }
    if let Some(a) = badarch {
        ctx.set_act_badarch(a).map_err(|e| libseccomp_err("badarch", e))?;
    }
    let host = Arch::host();
    for a in arches {
        if a.token != host.token || !ctx.is_arch_present(a.token).unwrap_or(false) {
            ctx.add_arch(a.token).map_err(|e| {
                libseccomp_err(a.name, e).hint(format!(
                    "libseccomp {} may not support this architecture",
                    crate::resolve::libseccomp_version()
                ))
            })?;
        }
    }
    if !arches.iter().any(|a| a.token == host.token) {
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
        // The numbers the filter itself uses (gen::syscall_nr): a multiplexed call's direct number too
        // (x86's socket is 359, libseccomp's number for it a negative placeholder), or the prologue would
        // answer ENOSYS to a call the profile names.
        let max = r
            .mentioned
            .iter()
            .filter_map(|n| crate::gen::syscall_nr(n, *a))
            .filter(|&nr| nr >= base && nr < limit)
            .max();
        if let Some(max) = max {
            out.push((*a, Known { audit: a.audit, base, limit, max }));
        }
    }
    out
}

/// Bad-arch action of every per-architecture program but the last one in the chain: SECCOMP_RET_TRACE with
/// data 0xffff. No profile can produce it (resolve refuses errnoRet above 4095), so each `ret` of it in a
/// program means exactly "not this architecture's call" and becomes a jump to the next program.
const CHAIN_ACTION: ScmpAction = ScmpAction::Trace(0xffff);
const CHAIN_RET: u32 = 0x7ff0_ffff;
const JA: u16 = 0x05;
const RET_K: u16 = 0x06;

/// libseccomp's program for one architecture, exported.
fn generate(r: &Resolved, arch: Arch, opts: Options, chained: bool) -> Result<Vec<Insn>> {
    let ctx = filter_for(r, &[arch], opts, chained.then_some(CHAIN_ACTION))?;
    step("export", &format!("bpf {}", arch.name));
    bpf::from_bytes_unbounded(&export(&ctx, false)?, "libseccomp program")
}

/// The program for `r` (without the ENOSYS prologue), from the generator `opts` names.
pub fn program(r: &Resolved, opts: Options) -> Result<Vec<Insn>> {
    match opts.generator {
        Generator::Native => {
            step("generate", &format!("{} rules for {}", r.rules.len(), arch_list(&r.arches)));
            crate::gen::program(r, opts.optimize)
        }
        Generator::Libseccomp => libseccomp_program(r, opts),
    }
}

/// libseccomp's program for all of `r`'s architectures: one single-architecture program per architecture,
/// generated in parallel, chained by turning each program's bad-arch return into a jump to the next.
///
/// Why not one libseccomp context for all of them: libseccomp 2.5's BPF generator resolves every jump by
/// walking the block list (quadratic in the program's length), so three architectures in one context cost
/// about twice as much as the three separately, and separately they can use both cores. The chained program
/// decides every (arch, nr, args) exactly as the one-context program does (unit test `chain_equals_single_context`):
/// each architecture's program returns its verdict for its own calls and bad-arch for all others, which the
/// next program then judges, and the last one keeps the profile's real bad-arch action. x32 shares x86_64's
/// AUDIT_ARCH: x86_64's program sends nr ≥ 0x40000000 (except -1) to bad-arch, x32's everything below, so
/// each still sees only its own calls.
pub fn libseccomp_program(r: &Resolved, opts: Options) -> Result<Vec<Insn>> {
    let clash = r.default_action.ret() == CHAIN_RET || r.rules.iter().any(|x| x.action.ret() == CHAIN_RET);
    if r.arches.len() < 2 || clash {
        step("export", "bpf");
        return bpf::from_bytes_unbounded(&export(&filter(r, opts)?, false)?, "libseccomp program");
    }
    // libseccomp probes the kernel (and caches the answers in globals) the first time it is asked about
    // the API level or an action; do that once here, before threads share it.
    let _ = libseccomp::get_api();
    let last = r.arches.len() - 1;
    let progs: Vec<Result<Vec<Insn>>> = std::thread::scope(|s| {
        let handles: Vec<_> = r.arches[1..]
            .iter()
            .enumerate()
            .map(|(i, a)| s.spawn(move || generate(r, *a, opts, i + 1 != last)))
            .collect();
        let first = generate(r, r.arches[0], opts, last != 0);
        std::iter::once(first)
            .chain(handles.into_iter().map(|h| {
                h.join().unwrap_or_else(|_| Err(Error::new("compile", "filter", "a generator thread panicked")))
            }))
            .collect()
    });
    let mut out = Vec::new();
    for (i, p) in progs.into_iter().enumerate() {
        let mut p = p?;
        if i != last {
            let len = p.len();
            for (j, insn) in p.iter_mut().enumerate() {
                if insn.code == RET_K && insn.k == CHAIN_RET {
                    *insn = bpf::stmt(JA, (len - j - 1) as u32);
                }
            }
        }
        out.extend(p);
    }
    Ok(out)
}

/// Compile `r` to the program the kernel loads.
pub fn compile(r: &Resolved, opts: Options) -> Result<Compiled> {
    let main = match opts.cache.then(cache::default_dir).flatten() {
        Some(dir) => {
            let key = cache::key(r, opts);
            match cache::get(&dir, &key) {
                Some(p) => p,
                None => {
                    let p = program(r, opts)?;
                    // An oversized program is refused below; caching it would only make every later run
                    // read it, reject it and compile it again.
                    if p.len() <= bpf::MAX_INSNS {
                        cache::put(&dir, &key, &p);
                    }
                    p
                }
            }
        }
        None => program(r, opts)?,
    };
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
        let arches = r.arches.iter().map(|a| a.name).collect::<Vec<_>>().join(",");
        return Err(Error::new(
            "compile",
            "program",
            format!(
                "{} instructions ({} rules for {arches}), above the kernel's limit of {}",
                prog.len(),
                r.rules.len(),
                bpf::MAX_INSNS
            ),
        )
        .hint("fewer argument conditions or architectures; the kernel would refuse it with EINVAL"));
    }
    Ok(Compiled { prog, prologue, known })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::Data;
    use crate::resolve::{resolve, Target};

    /// The chained per-architecture program decides every call exactly as libseccomp's one-context program:
    /// every syscall number of every filter architecture (x32 with bit 30, and -1), with all arguments 0 and
    /// with each argument value any rule compares against, optimized and not, for several capability sets.
    #[test]
    fn chain_equals_single_context() {
        for caps in [crate::caps::docker_default(), crate::caps::parse("ALL").unwrap(), Default::default()] {
            let r = resolve(&crate::builtin::default_profile(), &Target::host(caps)).unwrap();
            assert!(r.arches.len() >= 2, "the built-in profile has sub-architectures on this host");
            let mut argsets = vec![[0u64; 6]];
            for c in r.rules.iter().flat_map(|x| &x.conds) {
                for v in [c.value, c.value_two, c.value | c.value_two, !0] {
                    let mut a = [0u64; 6];
                    a[c.index as usize] = v;
                    argsets.push(a);
                }
            }
            argsets.sort();
            argsets.dedup();
            for optimize in [true, false] {
                let opts = Options { optimize, enosys: false, cache: false, generator: Generator::Libseccomp };
                let chained = program(&r, opts).unwrap();
                let single = bpf::from_bytes(&export(&filter(&r, opts).unwrap(), false).unwrap(), "single").unwrap();
                let mut audits: Vec<u32> = r.arches.iter().map(|a| a.audit).collect();
                audits.push(0x1234_5678); // an architecture in no filter: bad-arch in both
                audits.dedup();
                let nrs = (0..1100u32).chain((0..1100).map(|n| n | X32_SYSCALL_BIT)).chain([u32::MAX, 0x7fff_ffff]);
                let mut calls = 0;
                for audit in audits {
                    for nr in nrs.clone() {
                        for args in &argsets {
                            let d = Data { nr: nr as i32, arch: audit, ip: 0, args: *args };
                            assert_eq!(
                                bpf::run(&chained, &d),
                                bpf::run(&single, &d),
                                "arch {audit:#x} nr {nr:#x} args {args:x?} optimize {optimize}"
                            );
                            calls += 1;
                        }
                    }
                }
                assert!(calls > 10_000);
            }
        }
    }

    /// Programs much longer than a conditional jump's 255-instruction reach still chain (the rewrite uses
    /// `ja`, whose offset is 32 bits): same verdict as one context for every rule's value on every ABI.
    #[test]
    fn long_programs_chain_exactly() {
        let rules: Vec<String> = (1..=300u64)
            .map(|i| {
                format!(
                    r#"{{"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":{},"args":[{{"index":0,"value":{},"op":"SCMP_CMP_EQ"}}]}}"#,
                    1 + i % 100,
                    i * 7 + (i << 33)
                )
            })
            .collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"],"syscalls":[{}]}}"#,
            rules.join(",")
        );
        let p = crate::profile::parse(&json, "t", false).unwrap().0;
        let t =
            Target { arch: crate::arch::Arch::parse("x86_64").unwrap(), caps: Default::default(), kernel: (6, 1, 0) };
        let r = resolve(&p, &t).unwrap();
        let opts = Options { optimize: true, enosys: false, cache: false, generator: Generator::Libseccomp };
        let chained = program(&r, opts).unwrap();
        let single = bpf::from_bytes_unbounded(&export(&filter(&r, opts).unwrap(), false).unwrap(), "s").unwrap();
        assert!(chained.len() > 3 * 256, "{}", chained.len());
        for a in &r.arches {
            for i in 0..=301u64 {
                let sc = ScmpSyscall::from_name_by_arch("personality", a.token).unwrap().as_raw_syscall();
                let nr = if a.name == "x32" { sc as u32 | X32_SYSCALL_BIT } else { sc as u32 };
                let d = Data { nr: nr as i32, arch: a.audit, ip: 0, args: [i * 7 + (i << 33), 0, 0, 0, 0, 0] };
                assert_eq!(bpf::run(&chained, &d), bpf::run(&single, &d), "{} value {i}", a.name);
            }
        }
    }
}
