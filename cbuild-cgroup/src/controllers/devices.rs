//! devices: which device nodes the cgroup's processes may create (mknod), read and write. Without a
//! policy any node a process can create (CAP_MKNOD, in Docker's default set) opens whatever device it
//! names — a raw disk, /dev/kmsg, /dev/mem. `--devices docker` denies everything but Docker's default
//! list, and `--device-cgroup-rule` allows more (Docker's flag).
//!
//! v1: the devices controller's list: `devices.deny` "a", then one `devices.allow` line per rule.
//! v2 has no file for it: a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup decides (as runc
//! and crun do). It is generated here from the same rules: a few instructions per rule, first match
//! allows, nothing matched denies.

use super::Dir;
use crate::error::{Error, Result};
use crate::fsutil;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What a rule lets through, as the kernel's BPF_DEVCG_ACC_* bits (v1 spells them `m`, `r`, `w`).
const MKNOD: u8 = 1;
const READ: u8 = 2;
const WRITE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Char,
    Block,
}

/// One allow rule: `TYPE MAJOR:MINOR ACCESS` (`c 1:3 rwm`, `b *:* m`, `a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

/// Docker's default list (moby's and runc's): create any node, but open only these.
pub const DOCKER: [&str; 11] = [
    "c *:* m",     // mknod of any character device
    "b *:* m",     // and of any block device; opening them is another matter
    "c 1:3 rwm",   // /dev/null
    "c 1:5 rwm",   // /dev/zero
    "c 1:7 rwm",   // /dev/full
    "c 1:8 rwm",   // /dev/random
    "c 1:9 rwm",   // /dev/urandom
    "c 5:0 rwm",   // /dev/tty
    "c 5:1 rwm",   // /dev/console
    "c 5:2 rwm",   // /dev/ptmx
    "c 136:* rwm", // /dev/pts/*
];

impl Rule {
    pub fn parse(s: &str) -> std::result::Result<Rule, String> {
        let mut it = s.split_whitespace();
        let kind = match it.next() {
            Some("a") => Kind::All,
            Some("c") => Kind::Char,
            Some("b") => Kind::Block,
            _ => return Err("the type must be a, c or b (as in `c 1:3 rwm`)".into()),
        };
        let (major, minor, access) = match (it.next(), it.next(), it.next()) {
            (None, None, None) if kind == Kind::All => (None, None, MKNOD | READ | WRITE),
            (Some(mm), Some(acc), None) => {
                let (ma, mi) = mm.split_once(':').ok_or("MAJOR:MINOR expected, numbers or *")?;
                let num = |v: &str| -> std::result::Result<Option<u32>, String> {
                    match v {
                        "*" => Ok(None),
                        _ => v.parse::<u32>().map(Some).map_err(|_| format!("{v} is not a number or *")),
                    }
                };
                (num(ma)?, num(mi)?, parse_access(acc)?)
            }
            _ => return Err("expected TYPE MAJOR:MINOR ACCESS".into()),
        };
        if kind == Kind::All && (major.is_some() || minor.is_some()) {
            return Err("type a (all) takes no major or minor".into());
        }
        // The kernel's dev_t: 12 bits of major, 20 of minor. Larger numbers name no device.
        if major.is_some_and(|m| m > 0xfff) || minor.is_some_and(|m| m > 0xf_ffff) {
            return Err("major above 4095 or minor above 1048575: no such device number".into());
        }
        Ok(Rule { kind, major, minor, access })
    }
}

/// `rwm` or a non-empty part of it, in any order, as the access bits.
pub fn parse_access(acc: &str) -> std::result::Result<u8, String> {
    let mut a = 0;
    for ch in acc.chars() {
        a |= match ch {
            'm' => MKNOD,
            'r' => READ,
            'w' => WRITE,
            _ => return Err(format!("access {acc:?}: only r, w and m")),
        };
    }
    if a == 0 {
        return Err("empty access".into());
    }
    Ok(a)
}

impl std::fmt::Display for Rule {
    /// As typed: `c 1:3 rwm`, `a *:* m`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        let kind = match self.kind {
            Kind::All => 'a',
            Kind::Char => 'c',
            Kind::Block => 'b',
        };
        write!(f, "{kind} {}:{} {}", n(self.major), n(self.minor), access_letters(self.access))
    }
}

/// `rwm` order, as the kernel prints access.
fn access_letters(access: u8) -> String {
    [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')].iter().filter(|(bit, _)| access & bit != 0).map(|(_, c)| *c).collect()
}

impl Rule {
    /// Every device, every access: `a *:* rwm`.
    fn is_everything(&self) -> bool {
        self.kind == Kind::All && self.major.is_none() && self.minor.is_none() && self.access == MKNOD | READ | WRITE
    }

    /// The same devices as rules of one type each (an `a` rule becomes a `c` and a `b` one).
    fn per_type(&self) -> Vec<Rule> {
        match self.kind {
            Kind::All => [Kind::Char, Kind::Block].into_iter().map(|kind| Rule { kind, ..self.clone() }).collect(),
            _ => vec![self.clone()],
        }
    }

    /// Whether every device `other` names is one this rule names (access aside). Both of one type.
    fn covers(&self, other: &Rule) -> bool {
        self.kind == other.kind
            && self.major.is_none_or(|m| other.major == Some(m))
            && self.minor.is_none_or(|m| other.minor == Some(m))
    }

    /// Whether some device and some access are named by both. Both of one type.
    fn overlaps(&self, other: &Rule) -> bool {
        let meet = |a: Option<u32>, b: Option<u32>| a.is_none() || b.is_none() || a == b;
        self.kind == other.kind
            && meet(self.major, other.major)
            && meet(self.minor, other.minor)
            && self.access & other.access != 0
    }
}

/// One entry of an ordered allow/deny list (OCI `linux.resources.devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub allow: bool,
    pub rule: Rule,
}

/// An ordered allow/deny list (later entries override earlier ones) as the policy this module applies:
/// deny everything but the returned allow rules. Docker, runc and podman write a deny-all entry first
/// and then allows, which maps one to one. Beyond that shape:
///
/// - a deny-all entry (`a`, any major and minor, `rwm`) clears what came before; an allow-all one makes
///   everything allowed, and allows after it change nothing;
/// - a deny takes its access away from every earlier allow naming only devices the deny names (`c *:* w`
///   narrows `c 1:3 rwm` to `rm`), exactly what the ordered list means.
///
/// Refused, with the index of the entry and why: entries before the first deny-all or allow-all (what
/// they mean depends on the policy already in place), a deny after allow-all (a default-allow list with
/// holes), and a deny that takes part of a wider earlier allow (`c 1:3 w` after `c 1:* rw`). The last
/// two need a list of denied devices, which neither this policy nor, for holes in wildcards, the v1
/// kernel list can hold: refusing beats enforcing something other than what the config says.
/// An empty list is None: it leaves the policy as it is (as in runc).
pub fn reduce(entries: &[Entry]) -> std::result::Result<Option<Vec<Rule>>, (usize, String)> {
    enum Mode {
        Unset,
        AllowAll,
        Deny(Vec<Rule>),
    }
    let mut mode = Mode::Unset;
    for (i, e) in entries.iter().enumerate() {
        if e.rule.is_everything() {
            mode = if e.allow { Mode::AllowAll } else { Mode::Deny(Vec::new()) };
            continue;
        }
        match &mut mode {
            Mode::Unset => {
                return Err((
                    i,
                    format!(
                        "{} {} before any deny-all entry: the list must start with {{\"allow\": false, \"access\": \"rwm\"}} (as Docker's does) or an allow-all one",
                        if e.allow { "allow" } else { "deny" },
                        e.rule
                    ),
                ))
            }
            Mode::AllowAll if e.allow => {}
            Mode::AllowAll => {
                return Err((i, format!("deny {} after an allow-all entry: only allow lists (deny-all first) are supported", e.rule)))
            }
            Mode::Deny(rules) if e.allow => rules.extend(e.rule.per_type()),
            Mode::Deny(rules) => {
                for deny in e.rule.per_type() {
                    for r in rules.iter_mut() {
                        if deny.covers(r) {
                            r.access &= !deny.access;
                        } else if deny.overlaps(r) {
                            return Err((
                                i,
                                format!("deny {} takes part of the wider allow {r} before it, which a device allow list cannot express", e.rule),
                            ));
                        }
                    }
                    rules.retain(|r| r.access != 0);
                }
            }
        }
    }
    Ok(match mode {
        Mode::Unset => None,
        Mode::AllowAll => Some(all()),
        Mode::Deny(rules) => Some(rules),
    })
}

pub fn docker() -> Vec<Rule> {
    DOCKER.iter().map(|r| Rule::parse(r).expect("Docker's list parses")).collect()
}

/// `--devices all`: no restriction, said explicitly (so a `set` can lift a policy).
pub fn all() -> Vec<Rule> {
    vec![Rule { kind: Kind::All, major: None, minor: None, access: MKNOD | READ | WRITE }]
}

/// What [`apply`] replaced, so a later failing step of the same call can put it back.
pub enum Undo {
    V1 { list: PathBuf, old: V1List },
    V2(bpf::Swap),
}

impl Undo {
    /// Put the previous policy back, with the same never-more-than-either order as [`apply`].
    pub fn restore(self) -> Result<()> {
        match self {
            Undo::V1 { list, old } => v1_swap(&list, &old),
            Undo::V2(swap) => swap.undo(),
        }
    }
}

/// Replace the cgroup's device policy with "deny all but `rules`". If a step fails, what was in force
/// is put back before the error returns; on success the returned [`Undo`] can put it back later.
pub fn apply(d: Dir, rules: &[Rule]) -> Result<Undo> {
    if d.v2 {
        return bpf::replace(d.path, &bpf::program(rules)).map(Undo::V2);
    }
    let list = d.file("devices.list");
    let old = V1List::read(&list)?;
    if let Err(e) = v1_write(&list, &v1_steps(&old, &V1List::of(rules))) {
        if let Err(undo) = v1_swap(&list, &old) {
            crate::log::warn(format!("undo: {undo}"));
        }
        return Err(e);
    }
    Ok(Undo::V1 { list, old })
}

/// A v1 exception's key: type (`c`, `b`), major, minor (None: `*`). The kernel keeps one entry per key
/// (an allow for a key it has ORs the access in; a deny takes access away from that key only).
type Key = (char, Option<u32>, Option<u32>);

/// A v1 devices list as the kernel holds it: everything allowed, or nothing but these exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1List {
    AllowAll,
    Deny(BTreeMap<Key, u8>),
}

impl V1List {
    /// The list that allows exactly `rules`.
    fn of(rules: &[Rule]) -> V1List {
        if rules.iter().any(Rule::is_everything) {
            return V1List::AllowAll;
        }
        let mut m = BTreeMap::new();
        for r in rules.iter().flat_map(Rule::per_type) {
            let t = if r.kind == Kind::Block { 'b' } else { 'c' };
            *m.entry((t, r.major, r.minor)).or_insert(0) |= r.access;
        }
        V1List::Deny(m)
    }

    /// `devices.list`: `a *:* rwm` when everything is allowed, else one `TYPE MAJ:MIN ACCESS` per exception.
    /// The kernel also prints `a *:* rwm` for an allow-all list that has deny exceptions (written by hand:
    /// cbuild never makes one), and does not show them; such a list reads as allow-all, so a restore to it
    /// drops the exceptions, and a swap from allow-all to allow-all keeps them.
    fn read(path: &Path) -> Result<V1List> {
        let text = fsutil::read(path)?;
        let bad = |l: &str| Error::bad("read", path.display(), format!("unexpected line {l:?}"));
        let mut m = BTreeMap::new();
        for l in text.lines() {
            let r = Rule::parse(l).map_err(|_| bad(l))?;
            if r.kind == Kind::All {
                return Ok(V1List::AllowAll);
            }
            let t = if r.kind == Kind::Block { 'b' } else { 'c' };
            *m.entry((t, r.major, r.minor)).or_insert(0) |= r.access;
        }
        Ok(V1List::Deny(m))
    }
}

fn v1_line((t, major, minor): &Key, access: u8) -> String {
    let n = |v: &Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
    format!("{t} {}:{} {}", n(major), n(minor), access_letters(access))
}

/// The writes (file, line) that take a v1 list from `old` to `new` such that at no moment it allows
/// more than `old` or more than `new`: first what `new` lacks is taken away (the list only shrinks,
/// inside `old`), then what `new` has is added (it only grows, inside `new`). The kernel cannot swap a
/// list at once, so this is the best there is. An entry both lists have keeps the access both give
/// throughout, so a running container keeps /dev/null (`c 1:3 rwm`) across a `set` that changes
/// something else; only from or to allow-all is everything denied for a moment.
fn v1_steps(old: &V1List, new: &V1List) -> Vec<(&'static str, String)> {
    use V1List::*;
    let mut steps = Vec::new();
    match (old, new) {
        (AllowAll, AllowAll) => {}
        // One write: from everything to everything.
        (Deny(_), AllowAll) => steps.push(("devices.allow", "a".to_string())),
        (AllowAll, Deny(new)) => {
            steps.push(("devices.deny", "a".to_string()));
            steps.extend(new.iter().map(|(k, &a)| ("devices.allow", v1_line(k, a))));
        }
        (Deny(old), Deny(new)) => {
            for (k, &a) in old {
                let lose = a & !new.get(k).copied().unwrap_or(0);
                if lose != 0 {
                    steps.push(("devices.deny", v1_line(k, lose)));
                }
            }
            for (k, &a) in new {
                if a & !old.get(k).copied().unwrap_or(0) != 0 {
                    steps.push(("devices.allow", v1_line(k, a)));
                }
            }
        }
    }
    steps
}

fn v1_write(list: &Path, steps: &[(&str, String)]) -> Result<()> {
    // One open per run of lines to the same file (the kernel parses each write on its own): Docker's
    // list is eleven `devices.allow` lines on every container start.
    let mut open: Option<(&str, std::path::PathBuf, std::fs::File)> = None;
    for (file, line) in steps {
        if open.as_ref().is_none_or(|(f, _, _)| f != file) {
            let path = list.with_file_name(file);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::sys("write", path.display(), e))?;
            open = Some((file, path, f));
        }
        let (_, path, f) = open.as_ref().expect("opened above");
        fsutil::write_file(f, path, line)?;
    }
    Ok(())
}

/// Take the list, wherever it is now, to `want`.
fn v1_swap(list: &Path, want: &V1List) -> Result<()> {
    v1_write(list, &v1_steps(&V1List::read(list)?, want))
}

/// The eBPF side: the program, and attaching it in place of any other.
#[cfg(target_endian = "big")]
compile_error!("the BPF instruction encoding below is little-endian");
pub mod bpf {
    use super::*;

    /// One eBPF instruction (struct bpf_insn).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Insn {
        pub code: u8,
        pub regs: u8, // dst in the low nibble, src in the high one
        pub off: i16,
        pub imm: i32,
    }

    const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
    const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
    const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
    const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

    fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: dst | (src << 4), off, imm }
    }

    /// r0 = allow? for struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } in r1, where
    /// access_type is (access << 16) | type (type: 1 block, 2 char).
    pub fn program(rules: &[Rule]) -> Vec<Insn> {
        let mut p = vec![
            i(LDX_W, 2, 1, 0, 0),      // r2 = access_type
            i(MOV_X, 3, 2, 0, 0),      // r3 = r2
            i(AND_K, 3, 0, 0, 0xffff), // r3 = type
            i(RSH_K, 2, 0, 0, 16),     // r2 = access
            i(LDX_W, 4, 1, 4, 0),      // r4 = major
            i(LDX_W, 5, 1, 8, 0),      // r5 = minor
        ];
        for r in rules {
            let mut block = Vec::new();
            // Each test jumps past the block when it fails: offsets are patched once its length is known.
            match r.kind {
                Kind::All => {}
                Kind::Block => block.push(i(JNE_K, 3, 0, 0, 1)),
                Kind::Char => block.push(i(JNE_K, 3, 0, 0, 2)),
            }
            if let Some(m) = r.major {
                block.push(i(JNE_K, 4, 0, 0, m as i32));
            }
            if let Some(m) = r.minor {
                block.push(i(JNE_K, 5, 0, 0, m as i32));
            }
            // Every access asked for must be one the rule gives.
            block.push(i(MOV_X, 0, 2, 0, 0));
            block.push(i(AND_K, 0, 0, 0, !(r.access as i32)));
            block.push(i(JNE_K, 0, 0, 0, 0));
            block.push(i(MOV_K, 0, 0, 0, 1));
            block.push(i(EXIT, 0, 0, 0, 0));
            let len = block.len();
            for (at, ins) in block.iter_mut().enumerate() {
                if ins.code == JNE_K {
                    ins.off = (len - at - 1) as i16;
                }
            }
            p.extend(block);
        }
        p.push(i(MOV_K, 0, 0, 0, 0));
        p.push(i(EXIT, 0, 0, 0, 0));
        p
    }

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_DETACH: libc::c_long = 9;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;

    /// union bpf_attr, as bytes (zeroed: unused fields must be zero).
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Attr {
            Attr([0; 128])
        }
        fn u32_at(&mut self, off: usize, v: u32) -> &mut Attr {
            self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64_at(&mut self, off: usize, v: u64) -> &mut Attr {
            self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn read_u32(&self, off: usize) -> u32 {
            u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
        }
        fn call(&mut self, cmd: libc::c_long) -> std::io::Result<libc::c_long> {
            // SAFETY: bpf(2) reads (and for some commands writes) at most sizeof(self) bytes of self.
            let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), std::mem::size_of::<Attr>()) };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        }
    }

    fn sys(step: &'static str, what: &std::path::Path, e: std::io::Error) -> Error {
        Error::sys(step, what.display(), e)
    }

    /// [`sys`], with `hint` when the kernel said `errno`.
    fn sys_hint(step: &'static str, what: &std::path::Path, e: std::io::Error, errno: i32, hint: &str) -> Error {
        let known = e.raw_os_error() == Some(errno);
        let err = sys(step, what, e);
        if known {
            err.with_hint(hint)
        } else {
            err
        }
    }

    /// A replaced policy: the cgroup, the programs that were attached (held open, so they survive being
    /// detached) and the one attached in their place.
    pub struct Swap {
        dir: std::path::PathBuf,
        cg: std::fs::File,
        old: Vec<OwnedFd>,
        new: OwnedFd,
    }

    impl Swap {
        /// Attach the old programs again, then detach the new one: as in [`replace`], the cgroup runs
        /// the old and the new program together in between (both must allow), never neither.
        pub fn undo(self) -> Result<()> {
            let mut first_err = None;
            for fd in &self.old {
                match attach(&self.cg, fd) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                        first_err.get_or_insert(sys("bpf-attach", &self.dir, e));
                    }
                    _ => {}
                }
            }
            // Keep the new program if an old one did not go back: it is not a moment without a policy.
            if let Some(e) = first_err {
                return Err(e);
            }
            detach(&self.cg, &self.new).map_err(|e| sys("bpf-detach", &self.dir, e))
        }
    }

    fn attach(cg: &std::fs::File, prog: &OwnedFd) -> std::io::Result<libc::c_long> {
        let mut a = Attr::new();
        a.u32_at(0, cg.as_raw_fd() as u32)
            .u32_at(4, prog.as_raw_fd() as u32)
            .u32_at(8, BPF_CGROUP_DEVICE)
            .u32_at(12, BPF_F_ALLOW_MULTI);
        a.call(BPF_PROG_ATTACH)
    }

    /// ENOENT (not attached: another `set` detached it meanwhile) is success.
    fn detach(cg: &std::fs::File, prog: &OwnedFd) -> std::io::Result<()> {
        let mut d = Attr::new();
        d.u32_at(0, cg.as_raw_fd() as u32).u32_at(4, prog.as_raw_fd() as u32).u32_at(8, BPF_CGROUP_DEVICE);
        match d.call(BPF_PROG_DETACH) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Load `prog`, attach it to the cgroup at `dir`, then detach every device program that was there
    /// before (attached first, so the cgroup is never without one: in between both run, and a device
    /// is allowed only if both allow it). Nothing changes unless the attach succeeds; if a detach
    /// fails, the programs already detached are attached again and the new one detached, so the error
    /// leaves the old policy in force.
    pub fn replace(dir: &std::path::Path, prog: &[Insn]) -> Result<Swap> {
        let raw: Vec<u64> = prog
            .iter()
            .map(|x| {
                u64::from(x.code)
                    | u64::from(x.regs) << 8
                    | u64::from(x.off as u16) << 16
                    | u64::from(x.imm as u32) << 32
            })
            .collect();
        let license = c"Apache-2.0";
        let mut a = Attr::new();
        a.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE)
            .u32_at(4, raw.len() as u32)
            .u64_at(8, raw.as_ptr() as u64)
            .u64_at(16, license.as_ptr() as u64);
        // Without it the device policy cannot be enforced on v2: refuse rather than run open.
        let fd = a.call(BPF_PROG_LOAD).map_err(|e| {
            sys_hint("bpf-load", dir, e, libc::EPERM, "a cgroup v2 device policy is a BPF program: bpf(2) needs CAP_BPF or CAP_SYS_ADMIN and no seccomp filter refusing it (as inside a Docker container); --devices all (or no --devices) skips it")
        })?;
        // SAFETY: a new fd the kernel just returned, owned from here on.
        let new = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let cg = std::fs::File::open(dir).map_err(|e| sys("open", dir, e))?;
        // The old programs, held open before anything changes: detached, they live on for `undo`.
        let mut old = Vec::new();
        for id in query(&cg).map_err(|e| sys("bpf-query", dir, e))? {
            let mut g = Attr::new();
            g.u32_at(0, id);
            match g.call(BPF_PROG_GET_FD_BY_ID) {
                // SAFETY: as above.
                Ok(fd) => old.push(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
                // Gone meanwhile (detached by another replace): nothing to detach or put back.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                // Anything else would leave it attached, ANDed with the new one: a widened policy
                // would not take effect. Nothing has changed yet.
                Err(e) => return Err(sys("bpf-get-fd", dir, e)),
            }
        }
        attach(&cg, &new).map_err(|e| {
            sys_hint(
                "bpf-attach",
                dir,
                e,
                libc::E2BIG,
                "the kernel allows 64 programs per cgroup and attach point; the old policy stays",
            )
        })?;
        let swap = Swap { dir: dir.to_path_buf(), cg, old, new };
        for (n, fd) in swap.old.iter().enumerate() {
            if let Err(e) = detach(&swap.cg, fd) {
                let err = sys("bpf-detach", dir, e);
                let back = Swap { old: swap.old.into_iter().take(n).collect(), ..swap };
                if let Err(u) = back.undo() {
                    crate::log::warn(format!("undo: {u}"));
                }
                return Err(err);
            }
        }
        Ok(swap)
    }

    /// The ids of the device programs attached to the cgroup itself.
    fn query(cg: &std::fs::File) -> std::io::Result<Vec<u32>> {
        let mut ids = [0u32; 64];
        let mut a = Attr::new();
        a.u32_at(0, cg.as_raw_fd() as u32)
            .u32_at(4, BPF_CGROUP_DEVICE)
            .u64_at(16, ids.as_mut_ptr() as u64)
            .u32_at(24, ids.len() as u32);
        a.call(BPF_PROG_QUERY)?;
        let n = (a.read_u32(24) as usize).min(ids.len());
        Ok(ids[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_as_v1_lines() {
        // The lines written to a fresh (allow-all) v1 cgroup, after `devices.deny a`.
        let lines = |rules: &[&str]| -> Vec<String> {
            let rules: Vec<Rule> = rules.iter().map(|r| Rule::parse(r).unwrap()).collect();
            v1_steps(&V1List::AllowAll, &V1List::of(&rules)).into_iter().skip(1).map(|(_, l)| l).collect()
        };
        assert_eq!(lines(&["c 1:3 rwm"]), ["c 1:3 rwm"]);
        assert_eq!(lines(&["b *:* m"]), ["b *:* m"]);
        assert_eq!(lines(&["c 136:* wr"]), ["c 136:* rw"]);
        // The kernel keeps one entry per key: two rules for one key are one line.
        assert_eq!(lines(&["c 1:3 r", "c 1:3 w"]), ["c 1:3 rw"]);
        // v1 would read `a ... m` as allow-all: spelled out per type instead.
        assert_eq!(lines(&["a *:* m"]), ["b *:* m", "c *:* m"]);
        assert_eq!(V1List::of(&all()), V1List::AllowAll);
        assert_eq!(Rule::parse("c 136:* wr").unwrap().to_string(), "c 136:* rw");
        for bad in [
            "",
            "x 1:3 r",
            "c 1:3",
            "c 1-3 r",
            "c a:3 r",
            "c 1:3 rx",
            "a 1:2 r",
            "c 1:3 r extra",
            "c 4096:0 r",
            "b 8:1048576 r",
            "c 1:3 ",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(docker().len(), DOCKER.len());
    }

    /// The v1 kernel's list semantics for the writes `v1_steps` makes (security/device_cgroup.c): `a`
    /// resets to allow-all or deny-all; in deny-all mode an allow ORs access into its key's entry and a
    /// deny takes access from that key's entry only.
    fn kernel(list: &mut V1List, file: &str, line: &str) {
        if line == "a" {
            *list = if file == "devices.allow" { V1List::AllowAll } else { V1List::Deny(BTreeMap::new()) };
            return;
        }
        let r = Rule::parse(line).unwrap();
        let key = (if r.kind == Kind::Block { 'b' } else { 'c' }, r.major, r.minor);
        let V1List::Deny(m) = list else { panic!("{file} {line} written to an allow-all list") };
        if file == "devices.allow" {
            *m.entry(key).or_insert(0) |= r.access;
        } else if let Some(a) = m.get_mut(&key) {
            *a &= !r.access;
            if *a == 0 {
                m.remove(&key);
            }
        }
    }

    /// What a v1 list allows: one exception must name the device and every access asked for.
    fn v1_allows(list: &V1List, t: char, access: u8, major: u32, minor: u32) -> bool {
        match list {
            V1List::AllowAll => true,
            V1List::Deny(m) => m.iter().any(|((kt, ma, mi), &a)| {
                *kt == t && ma.is_none_or(|x| x == major) && mi.is_none_or(|x| x == minor) && access & !a == 0
            }),
        }
    }

    #[test]
    fn v1_swaps_never_allow_more_than_either_list() {
        let grid: Vec<(char, u8, u32, u32)> = ['c', 'b']
            .into_iter()
            .flat_map(|t| (1..8).flat_map(move |a| [(1, 3), (1, 5), (5, 3), (8, 0)].map(|(x, y)| (t, a, x, y))))
            .collect();
        let set = |l: &V1List| -> Vec<bool> { grid.iter().map(|&(t, a, x, y)| v1_allows(l, t, a, x, y)).collect() };
        let subset = |a: &[bool], b: &[bool]| a.iter().zip(b).all(|(x, y)| !x || *y);
        let texts = ["c 1:3 rwm", "c 1:3 rw", "c 1:* r", "c *:* m", "b *:* m", "b 8:0 rw", "c 5:3 w", "a *:* rwm"];
        let mut seed = 0x9e37_79b9_u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let mut list = || -> V1List {
            let rules: Vec<Rule> = (0..next(5)).map(|_| Rule::parse(texts[next(texts.len())]).unwrap()).collect();
            V1List::of(&rules)
        };
        for _ in 0..2000 {
            let (old, new) = (list(), list());
            let (old_set, new_set) = (set(&old), set(&new));
            let common = match (&old, &new) {
                (V1List::Deny(o), V1List::Deny(n)) => V1List::Deny(
                    o.iter().filter_map(|(k, &a)| Some((*k, a & n.get(k)?))).filter(|(_, a)| *a != 0).collect(),
                ),
                _ => V1List::Deny(BTreeMap::new()),
            };
            let mut state = old.clone();
            for (file, line) in v1_steps(&old, &new) {
                kernel(&mut state, file, &line);
                let now = set(&state);
                assert!(
                    subset(&now, &old_set) || subset(&now, &new_set),
                    "{old:?} → {new:?}: after {file} {line} the list is {state:?}"
                );
                assert!(subset(&set(&common), &now), "{old:?} → {new:?}: {file} {line} took away what both keep");
            }
            assert_eq!(state, new, "{old:?} → {new:?}");
        }
    }

    /// Run the generated program the way the kernel would, on a tiny interpreter of the few
    /// instructions it uses, against the rules' meaning.
    fn run(p: &[bpf::Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let mut r = [0u64; 11];
        let ctx = [(access << 16) | kind, major, minor];
        let mut pc = 0usize;
        loop {
            let x = p[pc];
            let (dst, src) = ((x.regs & 0xf) as usize, (x.regs >> 4) as usize);
            pc += 1;
            match x.code {
                0x61 => r[dst] = u64::from(ctx[(x.off / 4) as usize]),
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = x.imm as i64 as u64,
                0x57 => r[dst] &= x.imm as i64 as u64,
                0x77 => r[dst] >>= x.imm,
                0x55 => {
                    if r[dst] != x.imm as i64 as u64 {
                        pc += x.off as usize;
                    }
                }
                0x95 => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn allowed(rules: &[Rule], kind: u32, access: u32, major: u32, minor: u32) -> bool {
        let k = if kind == 1 { Kind::Block } else { Kind::Char };
        rules.iter().any(|r| {
            (r.kind == Kind::All || r.kind == k)
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
                && (access as u8) & !r.access == 0
        })
    }

    /// What an ordered allow/deny list means for one request (the kernel's rule for a list: one entry
    /// must grant every access asked for): the last allow-all or deny-all entry sets the default, an
    /// allow after it grants, unless a later deny names that device and some of the access.
    fn ordered(entries: &[Entry], kind: u32, access: u32, major: u32, minor: u32) -> bool {
        let k = if kind == 1 { Kind::Block } else { Kind::Char };
        let names = |r: &Rule| {
            (r.kind == Kind::All || r.kind == k)
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
        };
        let start = entries.iter().rposition(|e| e.rule.is_everything()).expect("starts with a reset");
        if entries[start].allow {
            return true;
        }
        let access = access as u8;
        (start + 1..entries.len()).any(|i| {
            let e = &entries[i];
            e.allow
                && names(&e.rule)
                && access & !e.rule.access == 0
                && !entries[i + 1..].iter().any(|d| !d.allow && names(&d.rule) && d.rule.access & access != 0)
        })
    }

    #[test]
    fn an_ordered_list_reduces_to_the_allow_list_it_means() {
        let deny_all = Entry { allow: false, rule: all()[0].clone() };
        let e = |allow: bool, r: &str| Entry { allow, rule: Rule::parse(r).unwrap() };
        // Docker's shape maps one to one.
        let docker_shape: Vec<Entry> = std::iter::once(deny_all.clone())
            .chain(docker().into_iter().map(|rule| Entry { allow: true, rule }))
            .collect();
        assert_eq!(reduce(&docker_shape), Ok(Some(docker())));
        assert_eq!(reduce(&[]), Ok(None));
        assert_eq!(reduce(&[e(true, "a")]), Ok(Some(all())));
        // A deny narrows the allows it covers; one that would punch a hole in a wider allow is refused.
        assert_eq!(
            reduce(&[deny_all.clone(), e(true, "c 1:3 rwm"), e(false, "c *:* w")]),
            Ok(Some(vec![Rule::parse("c 1:3 rm").unwrap()]))
        );
        assert!(reduce(&[deny_all.clone(), e(true, "c 1:* rw"), e(false, "c 1:3 w")]).is_err_and(|(i, _)| i == 2));
        assert!(reduce(&[e(true, "c 1:3 r")]).is_err_and(|(i, _)| i == 0));
        assert!(reduce(&[e(true, "a"), e(false, "c 1:3 r")]).is_err_and(|(i, _)| i == 1));

        // Many small lists over a few devices: every list accepted, run as a program, means what the
        // ordered list means; every refused one contains a deny overlapping a wider allow or no reset.
        let kinds = ["a", "c", "b"];
        let nums = ["*", "1", "5"];
        let mins = ["*", "3", "7"];
        let mut seed = 0x2545_f491_u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut list =
                vec![if next(8) == 0 { Entry { allow: true, rule: all()[0].clone() } } else { deny_all.clone() }];
            for _ in 0..next(6) {
                let acc: String = ["r", "w", "m", "rw", "rm", "wm", "rwm"][next(7)].into();
                let kind = kinds[next(3)];
                let text = if kind == "a" && next(2) == 0 {
                    format!("a *:* {acc}")
                } else {
                    format!("{} {}:{} {acc}", if kind == "a" { "c" } else { kind }, nums[next(3)], mins[next(3)])
                };
                list.push(Entry { allow: next(3) != 0, rule: Rule::parse(&text).unwrap() });
            }
            let Ok(Some(rules)) = reduce(&list) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let p = bpf::program(&rules);
            for kind in [1, 2] {
                for access in 1..8 {
                    for (major, minor) in [(1, 3), (1, 7), (5, 3), (5, 9), (8, 7)] {
                        assert_eq!(
                            run(&p, kind, access, major, minor) == 1,
                            ordered(&list, kind, access, major, minor),
                            "{list:?} → {rules:?}: kind {kind} access {access} {major}:{minor}"
                        );
                    }
                }
            }
        }
        assert!(accepted > 1000 && refused > 100, "accepted {accepted}, refused {refused}");
    }

    #[test]
    fn the_program_allows_exactly_what_the_rules_do() {
        let mut sets = vec![docker(), vec![], all(), vec![Rule::parse("a *:* m").unwrap()]];
        sets.push(vec![Rule::parse("c 10:200 rw").unwrap(), Rule::parse("b 8:* r").unwrap()]);
        for rules in &sets {
            let p = bpf::program(rules);
            for kind in [1, 2] {
                for access in 1..8 {
                    for (major, minor) in [(1, 3), (1, 11), (5, 2), (136, 7), (8, 0), (8, 16), (10, 200), (0, 0)] {
                        assert_eq!(
                            run(&p, kind, access, major, minor) == 1,
                            allowed(rules, kind, access, major, minor),
                            "{rules:?} kind {kind} access {access} {major}:{minor}"
                        );
                    }
                }
            }
        }
    }
}
