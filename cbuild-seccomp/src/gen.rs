//! Our classic-BPF generator: resolved rules → the program, without libseccomp's generator.
//!
//! libseccomp 2.5's generator costs ~9 ms of CPU for Docker's profile (it resolves jumps by walking its
//! block list, quadratic in the program's length); this one emits the program in one backward pass in
//! well under a millisecond. It decides every call as libseccomp's program does (the differential tests
//! in this file and in tests/tests/seccomp.rs run both over every syscall number with arguments at every
//! comparison's boundaries); the layout:
//!
//! ```text
//!        ld  [4]                          ; seccomp_data.arch
//!        jeq AUDIT_ARCH_X86_64, 0, x86    ; one block per AUDIT_ARCH, the target architecture first
//!        ld  [0]                          ; seccomp_data.nr
//!        (x86_64 without x32 in the filter: nr >= 0x40000000 and nr != -1 → bad-arch)
//!        jge 136, R, L                    ; binary search tree over ranges of numbers with one verdict
//!   L:   jge 131, ret_allow, …            ; a leaf is a range: a jump to its `ret`, or for a call with
//!        <the syscall's rule blocks>      ;   conditional rules its code: arguments, 64-bit as hi and lo
//!   x86: jeq AUDIT_ARCH_I386, 0, bad      ; A still holds the arch: no reload
//!        ...
//!   bad: ret KILL_THREAD                  ; an ABI not in the filter (libseccomp's bad-arch default)
//! ```
//!
//! Semantics, per architecture and syscall number (the same as libseccomp 2.5.4's):
//! - a syscall's number comes from libseccomp's resolver for that architecture (x32 numbers carry bit 30);
//!   a name that is not a syscall there (libseccomp's negative pseudo-numbers) adds nothing for it;
//! - an unconditional rule wins over every conditional rule of the same call (libseccomp drops the
//!   conditional ones, so runc behaves the same);
//! - conditional rules: a rule matches when all of its conditions hold (AND); several rules are
//!   alternatives (OR). If rules with *different* actions match the same call, the most restrictive
//!   action wins, in the kernel's order for stacked filters (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO >
//!   TRACE > LOG > ALLOW), and among equally restrictive ones (ERRNO(1) and ERRNO(13)) the rule listed
//!   first. libseccomp's answer in that case depends on the order of its internal tree (which tests the
//!   higher argument first), so it is the one place where the two may differ; the tests check that
//!   every difference is such a call;
//! - 64-bit ABIs compare all 64 bits (high word, then low word); 32-bit ABIs (x86, x32, arm, MIPS o32
//!   and n32, …, as libseccomp defines them) compare the low word with the value truncated to 32 bits;
//! - MASKED_EQ is `(arg & value) == (valueTwo & value)` (runc's reading of Docker's profiles: the mask
//!   is `value`; libseccomp masks the datum too);
//! - ABIs with the socketcall(2)/ipc(2) multiplexers (x86, MIPS o32, PowerPC, s390): a rule for one of
//!   the multiplexed calls (socket, connect, shmget, …) also applies to `socketcall(SYS_X, …)` or
//!   `ipc(X, …)`, without its argument conditions (those arguments sit behind a pointer), as libseccomp
//!   adds them.
//!
//! Conditional jumps reach at most 255 instructions ahead; the program is emitted from its end, so every
//! jump's target is already placed, and a target out of reach gets a `ret` copy (for a verdict) or a `ja`
//! (32-bit offset) right after the jump.

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{jump, stmt, Insn};
use crate::resolve::{Action, Cond, Op, Resolved};
use crate::{Error, Result};
use libseccomp::ScmpSyscall;
use std::collections::{BTreeMap, HashMap};

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;

/// The action for a call from an ABI the filter does not cover: libseccomp's default, KILL_THREAD.
pub const BAD_ARCH: Action = Action::KillThread;

/// socketcall(2)'s SYS_* call numbers (linux/net.h).
const SOCKETCALL: &[(&str, u64)] = &[
    ("socket", 1),
    ("bind", 2),
    ("connect", 3),
    ("listen", 4),
    ("accept", 5),
    ("getsockname", 6),
    ("getpeername", 7),
    ("socketpair", 8),
    ("send", 9),
    ("recv", 10),
    ("sendto", 11),
    ("recvfrom", 12),
    ("shutdown", 13),
    ("setsockopt", 14),
    ("getsockopt", 15),
    ("sendmsg", 16),
    ("recvmsg", 17),
    ("accept4", 18),
    ("recvmmsg", 19),
    ("sendmmsg", 20),
];

/// ipc(2)'s call numbers (linux/ipc.h).
const IPC: &[(&str, u64)] = &[
    ("semop", 1),
    ("semget", 2),
    ("semctl", 3),
    ("semtimedop", 4),
    ("msgsnd", 11),
    ("msgrcv", 12),
    ("msgget", 13),
    ("msgctl", 14),
    ("shmat", 21),
    ("shmdt", 22),
    ("shmget", 23),
    ("shmctl", 24),
];

/// Where the multiplexed calls also have their own numbers (Linux 4.3+ for sockets, 5.1+ for SysV IPC),
/// libseccomp's resolver still returns its negative pseudo-number for the name (socket → -101) and adds
/// the rule for the direct number too. These are those numbers (the kernels' syscall tables; the unit test
/// `direct_numbers_are_libseccomps` checks them against libseccomp's number → name resolver). PowerPC
/// 32-bit and s390 are big-endian, which this generator does not support.
const DIRECT: &[(&str, &[(&str, u32)])] = &[
    (
        "x86",
        &[
            ("recvmmsg", 337),
            ("sendmmsg", 345),
            ("socket", 359),
            ("socketpair", 360),
            ("bind", 361),
            ("connect", 362),
            ("listen", 363),
            ("accept4", 364),
            ("getsockopt", 365),
            ("setsockopt", 366),
            ("getsockname", 367),
            ("getpeername", 368),
            ("sendto", 369),
            ("sendmsg", 370),
            ("recvfrom", 371),
            ("recvmsg", 372),
            ("shutdown", 373),
            ("semget", 393),
            ("semctl", 394),
            ("shmget", 395),
            ("shmctl", 396),
            ("shmat", 397),
            ("shmdt", 398),
            ("msgget", 399),
            ("msgsnd", 400),
            ("msgrcv", 401),
            ("msgctl", 402),
        ],
    ),
    ("mipsel", MIPS_O32),
    ("mips", MIPS_O32),
    ("ppc64le", PPC64),
    ("ppc64", PPC64),
];

const MIPS_O32: &[(&str, u32)] = &[
    ("accept", 4168),
    ("bind", 4169),
    ("connect", 4170),
    ("getpeername", 4171),
    ("getsockname", 4172),
    ("getsockopt", 4173),
    ("listen", 4174),
    ("recv", 4175),
    ("recvfrom", 4176),
    ("recvmsg", 4177),
    ("send", 4178),
    ("sendmsg", 4179),
    ("sendto", 4180),
    ("setsockopt", 4181),
    ("shutdown", 4182),
    ("socket", 4183),
    ("socketpair", 4184),
    ("accept4", 4334),
    ("recvmmsg", 4335),
    ("sendmmsg", 4343),
    ("semget", 4393),
    ("semctl", 4394),
    ("shmget", 4395),
    ("shmctl", 4396),
    ("shmat", 4397),
    ("shmdt", 4398),
    ("msgget", 4399),
    ("msgsnd", 4400),
    ("msgrcv", 4401),
    ("msgctl", 4402),
];

const PPC64: &[(&str, u32)] = &[
    ("socket", 326),
    ("bind", 327),
    ("connect", 328),
    ("listen", 329),
    ("accept", 330),
    ("getsockname", 331),
    ("getpeername", 332),
    ("socketpair", 333),
    ("send", 334),
    ("sendto", 335),
    ("recv", 336),
    ("recvfrom", 337),
    ("shutdown", 338),
    ("setsockopt", 339),
    ("getsockopt", 340),
    ("sendmsg", 341),
    ("recvmsg", 342),
    ("recvmmsg", 343),
    ("accept4", 344),
    ("sendmmsg", 349),
    ("semtimedop", 392),
    ("semget", 393),
    ("semctl", 394),
    ("shmget", 395),
    ("shmctl", 396),
    ("shmat", 397),
    ("shmdt", 398),
    ("msgget", 399),
    ("msgsnd", 400),
    ("msgrcv", 401),
    ("msgctl", 402),
];

/// The kernel's precedence of actions when several filters answer (kernel/seccomp.c): lower is stronger.
fn severity(a: Action) -> u8 {
    match a {
        Action::KillProcess => 0,
        Action::KillThread => 1,
        Action::Trap => 2,
        Action::Errno(_) => 3,
        Action::Trace(_) => 4,
        Action::Log => 5,
        Action::Allow => 6,
    }
}

/// One rule as one architecture's program tests it.
#[derive(Debug, Clone)]
struct ArchRule {
    action: Action,
    conds: Vec<Cond>,
}

/// Everything the filter says about one syscall number of one architecture.
#[derive(Debug, Clone, Default)]
struct Call {
    /// The first unconditional rule's action: it decides the call whatever the other rules say.
    unconditional: Option<Action>,
    /// Conditional rules, in profile order.
    rules: Vec<ArchRule>,
}

/// The syscall number of `name` on `arch` as `seccomp_data.nr` carries it, if it is a syscall there.
pub fn syscall_nr(name: &str, arch: Arch) -> Option<u32> {
    let nr = ScmpSyscall::from_name_by_arch(name, arch.token).ok()?.as_raw_syscall();
    if nr < 0 {
        // A multiplexed call's pseudo-number: its direct number, where it has one.
        let table = DIRECT.iter().find(|(a, _)| *a == arch.name)?.1;
        return table.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr);
    }
    Some(if arch.name == "x32" { nr as u32 | X32_SYSCALL_BIT } else { nr as u32 })
}

/// A call of socketcall(2) or ipc(2) on `arch` (number `nr`): the multiplexer's name and the call its
/// first argument names (`socketcall(1, …)` is socket), whose rules [`calls`] adds at the multiplexer's
/// number, their argument conditions dropped.
pub fn demultiplex(arch: Arch, nr: u32, arg0: u64) -> Option<(&'static str, &'static str)> {
    [("socketcall", SOCKETCALL), ("ipc", IPC)].into_iter().find_map(|(mux, table)| {
        (syscall_nr(mux, arch)? == nr).then_some(())?;
        // As the program compares: the low word on a 32-bit ABI, all of it on a 64-bit one that has the
        // multiplexers too (ppc64le, s390x).
        let arg0 = if arch.bits32 { arg0 & 0xffff_ffff } else { arg0 };
        let call = table.iter().find(|(_, x)| *x == arg0)?.0;
        Some((mux, call))
    })
}

/// The multiplexer that also carries `call` on `arch` (socket → socketcall), its number and the value of
/// its first argument that names `call`: the other way round from [`demultiplex`].
pub fn multiplexer(arch: Arch, call: &str) -> Option<(&'static str, u32, u64)> {
    [("socketcall", SOCKETCALL), ("ipc", IPC)].into_iter().find_map(|(mux, table)| {
        let sub = table.iter().find(|(n, _)| *n == call)?.1;
        Some((mux, syscall_nr(mux, arch)?, sub))
    })
}

fn truncate(c: &Cond, arch: Arch) -> Cond {
    if arch.bits32 {
        Cond { value: c.value & 0xffff_ffff, value_two: c.value_two & 0xffff_ffff, ..*c }
    } else {
        *c
    }
}

/// Whether `c` holds for `args` as the program for `arch` tests it: on 32-bit ABIs only the low word of
/// the argument, against the condition's values truncated to 32 bits.
pub fn holds(c: &Cond, arch: Arch, args: &[u64; 6]) -> bool {
    let arg = args[c.index as usize];
    truncate(c, arch).matches(if arch.bits32 { arg & 0xffff_ffff } else { arg })
}

/// The calls of `arch` that rules name, by number.
fn calls(r: &Resolved, arch: Arch, out: &mut BTreeMap<u32, Call>) {
    let mut add = |nr: u32, action: Action, conds: Vec<Cond>| {
        let call = out.entry(nr).or_default();
        if conds.is_empty() {
            call.unconditional.get_or_insert(action);
        } else {
            call.rules.push(ArchRule { action, conds });
        }
    };
    let socketcall = syscall_nr("socketcall", arch);
    let ipc = syscall_nr("ipc", arch);
    // One resolver lookup per distinct name: Docker's profile names each call once, but runc-style rule
    // splitting and conditional entries repeat some.
    let mut numbers: HashMap<&str, Option<u32>> = HashMap::new();
    for rule in &r.rules {
        let nr = *numbers.entry(rule.name.as_str()).or_insert_with(|| syscall_nr(&rule.name, arch));
        if let Some(nr) = nr {
            add(nr, rule.action, rule.conds.iter().map(|c| truncate(c, arch)).collect());
        }
        let muxed = [(socketcall, SOCKETCALL), (ipc, IPC)];
        for (mux_nr, table) in muxed {
            let Some(mux_nr) = mux_nr else { continue };
            if let Some((_, call)) = table.iter().find(|(n, _)| *n == rule.name) {
                add(mux_nr, rule.action, vec![Cond { index: 0, op: Op::Eq, value: *call, value_two: 0 }]);
            }
        }
    }
}

/// Where a jump goes: an instruction already emitted (its index in the reversed program), or "return K"
/// (whichever copy of that `ret` is in reach, or a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    At(usize),
    Ret(u32),
}

/// Emits the program backwards: `rev[i]` is instruction `len - 1 - i`, so every target exists before
/// the jump to it, and a jump from reversed index `h` to `t` has offset `h - t - 1`.
struct Emitter {
    rev: Vec<Insn>,
    /// The most recently emitted (nearest to the head) copy of each `ret K`.
    rets: HashMap<u32, usize>,
}

impl Emitter {
    fn head(&self) -> usize {
        self.rev.len()
    }

    fn push(&mut self, i: Insn) -> usize {
        if i.code == RET_K {
            self.rets.insert(i.k, self.rev.len());
        }
        self.rev.push(i);
        self.rev.len() - 1
    }

    fn ret(&mut self, k: u32) -> usize {
        self.push(stmt(RET_K, k))
    }

    /// The instruction `to` names, if one is already placed (the nearest copy of a `ret`).
    fn placed(&self, to: To) -> Option<usize> {
        match to {
            To::At(l) => Some(l),
            To::Ret(k) => self.rets.get(&k).copied(),
        }
    }

    /// Make `to` reachable from the next instruction with an 8-bit offset: a `ret` copy, or a `ja`.
    fn near(&mut self, to: To) -> usize {
        match to {
            To::Ret(k) => self.ret(k),
            To::At(l) if self.rev[l].code == RET_K => self.ret(self.rev[l].k),
            To::At(l) => {
                let off = (self.head() - l - 1) as u32;
                self.push(stmt(JA, off))
            }
        }
    }

    /// A conditional jump; places `ret` copies or `ja` trampolines after it when a target is out of reach.
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) -> To {
        let far = |e: &Self, at: Option<usize>| at.is_none_or(|t| e.head() - t - 1 > 255);
        let (mut t, mut f) = (self.placed(jt), self.placed(jf));
        loop {
            if far(self, t) {
                t = Some(self.near(jt));
            } else if far(self, f) {
                f = Some(self.near(jf));
            } else {
                break;
            }
        }
        let h = self.head();
        let (t, f) = (t.unwrap_or_default(), f.unwrap_or_default());
        To::At(self.push(jump(code, k, (h - t - 1) as u8, (h - f - 1) as u8)))
    }

    /// A straight-line instruction followed by `next` (a `ja` or `ret` is placed between if needed).
    fn stmt(&mut self, insn: Insn, next: To) -> To {
        if self.placed(next) != Some(self.head().wrapping_sub(1)) || self.head() == 0 {
            self.near(next);
        }
        To::At(self.push(insn))
    }

    /// `ld` of a 32-bit word, then a conditional jump on it.
    fn test(&mut self, word: u32, code: u16, k: u32, jt: To, jf: To) -> To {
        let j = self.jump(code, k, jt, jf);
        self.stmt(stmt(LD_W_ABS, word), j)
    }

    /// `(word & mask) == (value & mask)`: libseccomp masks the datum too, so bits of `valueTwo` outside
    /// the mask do not make the comparison impossible; with no bits in the mask it always holds.
    fn masked(&mut self, word: u32, mask: u32, value: u32, jt: To, jf: To) -> To {
        if mask == 0 {
            return jt;
        }
        let j = self.jump(JEQ_K, value & mask, jt, jf);
        let j = if mask == u32::MAX { j } else { self.stmt(stmt(ALU_AND_K, mask), j) };
        self.stmt(stmt(LD_W_ABS, word), j)
    }

    /// One comparison: true → `t`, false → `f`.
    fn cond(&mut self, c: &Cond, arch: Arch, t: To, f: To) -> To {
        let (lo, hi) = arg_words(c.index, arch);
        let (vh, vl) = ((c.value >> 32) as u32, c.value as u32);
        if arch.bits32 {
            return match c.op {
                Op::Eq => self.test(lo, JEQ_K, vl, t, f),
                Op::Ne => self.test(lo, JEQ_K, vl, f, t),
                Op::Gt => self.test(lo, JGT_K, vl, t, f),
                Op::Ge => self.test(lo, JGE_K, vl, t, f),
                Op::Lt => self.test(lo, JGE_K, vl, f, t),
                Op::Le => self.test(lo, JGT_K, vl, f, t),
                Op::MaskedEq => self.masked(lo, vl, c.value_two as u32, t, f),
            };
        }
        match c.op {
            Op::Eq => {
                let l = self.test(lo, JEQ_K, vl, t, f);
                self.test(hi, JEQ_K, vh, l, f)
            }
            Op::Ne => {
                let l = self.test(lo, JEQ_K, vl, f, t);
                self.test(hi, JEQ_K, vh, l, t)
            }
            // arg > v ⇔ hi > vh || (hi == vh && lo > vl); ≥ likewise; < and ≤ are their negations.
            Op::Gt => self.greater(hi, lo, vh, vl, JGT_K, t, f),
            Op::Ge => self.greater(hi, lo, vh, vl, JGE_K, t, f),
            Op::Le => self.greater(hi, lo, vh, vl, JGT_K, f, t),
            Op::Lt => self.greater(hi, lo, vh, vl, JGE_K, f, t),
            Op::MaskedEq => {
                let (mh, ml) = ((c.value >> 32) as u32, c.value as u32);
                let (dh, dl) = ((c.value_two >> 32) as u32, c.value_two as u32);
                let l = self.masked(lo, ml, dl, t, f);
                self.masked(hi, mh, dh, l, f)
            }
        }
    }

    /// `hi > vh → t; hi == vh → (lo CMP vl ? t : f); else f` with CMP jgt or jge.
    #[allow(clippy::too_many_arguments)]
    fn greater(&mut self, hi: u32, lo: u32, vh: u32, vl: u32, cmp: u16, t: To, f: To) -> To {
        let l = self.test(lo, cmp, vl, t, f);
        let eq = match vh {
            // hi > u32::MAX never holds.
            u32::MAX => self.jump(JEQ_K, vh, l, f),
            // hi is never < 0: not above 0 means equal to 0.
            0 => self.jump(JGT_K, 0, t, l),
            _ => {
                let e = self.jump(JEQ_K, vh, l, f);
                self.jump(JGT_K, vh, t, e)
            }
        };
        self.stmt(stmt(LD_W_ABS, hi), eq)
    }

    /// A rule: all conditions (AND) → `ret action`, else `fail`.
    fn rule(&mut self, r: &ArchRule, arch: Arch, fail: To) -> To {
        let mut next = To::Ret(r.action.ret());
        for c in r.conds.iter().rev() {
            next = self.cond(c, arch, next, fail);
        }
        next
    }

    /// Rules with the same action that are each one `arg N == value` (Docker's personality and socket
    /// allow-lists): one load of the argument, then one `jeq` per value (per distinct high word).
    fn eq_group(&mut self, index: u8, values: &[u64], action: Action, arch: Arch, fail: To) -> To {
        let (lo, hi) = arg_words(index, arch);
        let act = To::Ret(action.ret());
        // Values in the order given, each once (a set beside the list: a hostile profile may give tens of
        // thousands, and a linear search per value made this quadratic).
        let mut by_hi: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for v in values {
            let v = if arch.bits32 { *v & 0xffff_ffff } else { *v };
            if seen.insert(v) {
                by_hi.entry((v >> 32) as u32).or_default().push(v as u32);
            }
        }
        let mut next = fail;
        for (h, lows) in by_hi.iter().rev() {
            let mut chain = next;
            for l in lows.iter().rev() {
                chain = self.jump(JEQ_K, *l, act, chain);
            }
            let lo_entry = self.stmt(stmt(LD_W_ABS, lo), chain);
            next = if arch.bits32 { lo_entry } else { self.test(hi, JEQ_K, *h, lo_entry, next) };
        }
        next
    }

    /// The code for one syscall: its rules, strongest action first, then the default.
    fn call(&mut self, c: &Call, arch: Arch, default: Action) -> To {
        if let Some(a) = c.unconditional {
            return To::Ret(a.ret());
        }
        let mut rules: Vec<&ArchRule> = c.rules.iter().collect();
        rules.sort_by_key(|r| severity(r.action)); // stable: profile order among equals
        let single_eq = |r: &ArchRule| (r.conds.len() == 1 && r.conds[0].op == Op::Eq).then_some(r.conds[0].index);
        // Blocks of consecutive rules; a run of single `==` rules on one argument with one action is one.
        let mut blocks: Vec<&[&ArchRule]> = Vec::new();
        let mut i = 0;
        while i < rules.len() {
            let mut j = i + 1;
            if let Some(idx) = single_eq(rules[i]) {
                while j < rules.len() && rules[j].action == rules[i].action && single_eq(rules[j]) == Some(idx) {
                    j += 1;
                }
            }
            blocks.push(&rules[i..j]);
            i = j;
        }
        let mut next = To::Ret(default.ret());
        for b in blocks.iter().rev() {
            next = if b.len() == 1 {
                self.rule(b[0], arch, next)
            } else {
                let values: Vec<u64> = b.iter().map(|r| r.conds[0].value).collect();
                self.eq_group(b[0].conds[0].index, &values, b[0].action, arch, next)
            };
        }
        next
    }

    /// The search for the syscall number (in A) among `calls`; numbers not in `calls` → `miss`. With
    /// `optimize`, a binary search over *ranges*: the number space cut where the verdict changes, so a run
    /// of consecutive calls with one unconditional action (most of Docker's allow-list) is one range, and
    /// a leaf is a range, reached without a final compare. Without, the numbers are compared one after
    /// the other (`--no-optimize`, for comparison).
    fn tree(&mut self, calls: &[(u32, Arch, &Call)], optimize: bool, default: Action, miss: To) -> To {
        if optimize {
            return self.range_tree(&ranges(calls), default, miss);
        }
        let entries: Vec<To> = calls.iter().rev().map(|(_, a, c)| self.call(c, *a, default)).collect();
        let mut next = miss;
        for ((nr, _, _), entry) in calls.iter().rev().zip(entries) {
            next = self.jump(JEQ_K, *nr, entry, next);
        }
        next
    }
}

/// What a range of syscall numbers gets: one action whatever the arguments, the default (no rule), or
/// one call's own code (its conditional rules).
#[derive(Debug, Clone, Copy)]
enum Verdict<'a> {
    Action(Action),
    Miss,
    Code(Arch, &'a Call),
}

/// `[start, next range's start)` gets `verdict`; the ranges cover every number from 0 up.
#[derive(Debug)]
struct Range<'a> {
    start: u32,
    verdict: Verdict<'a>,
}

/// The number space cut into ranges of one verdict: consecutive numbers with the same unconditional
/// action share a range, and so do the numbers between calls (the default).
fn ranges<'a>(calls: &[(u32, Arch, &'a Call)]) -> Vec<Range<'a>> {
    let mut out: Vec<Range<'a>> = Vec::new();
    let mut next = 0u64; // the first number not covered yet
    for &(nr, arch, call) in calls {
        if u64::from(nr) > next {
            out.push(Range { start: next as u32, verdict: Verdict::Miss });
        }
        let verdict = match call.unconditional {
            Some(a) => Verdict::Action(a),
            None => Verdict::Code(arch, call),
        };
        match (out.last(), verdict) {
            (Some(Range { verdict: Verdict::Action(prev), .. }), Verdict::Action(a))
                if *prev == a && u64::from(nr) == next => {}
            _ => out.push(Range { start: nr, verdict }),
        }
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        out.push(Range { start: next as u32, verdict: Verdict::Miss });
    }
    out
}

impl Emitter {
    /// Binary search over `ranges` (non-empty, covering all numbers from the first one's start).
    fn range_tree(&mut self, ranges: &[Range], default: Action, miss: To) -> To {
        if let [only] = ranges {
            return match only.verdict {
                Verdict::Action(a) => To::Ret(a.ret()),
                Verdict::Miss => miss,
                Verdict::Code(arch, call) => self.call(call, arch, default),
            };
        }
        let mid = ranges.len() / 2;
        let right = self.range_tree(&ranges[mid..], default, miss);
        let left = self.range_tree(&ranges[..mid], default, miss);
        self.jump(JGE_K, ranges[mid].start, right, left)
    }
}

/// Offsets of argument `index`'s low and high 32-bit words in `seccomp_data` (little-endian ABIs).
fn arg_words(index: u8, _arch: Arch) -> (u32, u32) {
    let base = 16 + 8 * index as u32;
    (base, base + 4)
}

/// The program for `r`: every architecture's block, then the bad-arch return. Without `tree`, each
/// architecture's syscalls are compared one after the other (for comparison, as `--no-optimize`).
pub fn program(r: &Resolved, tree: bool) -> Result<Vec<Insn>> {
    if let Some(a) = r.arches.iter().find(|a| a.big_endian) {
        return Err(Error::new("compile", a.name, "big-endian architectures are not supported")
            .hint("compile on a big-endian host of that architecture is not supported either, yet"));
    }
    // Architectures sharing an AUDIT_ARCH (x86_64 and x32) share one block; the target's block first.
    let mut groups: Vec<(u32, Vec<Arch>)> = Vec::new();
    for a in &r.arches {
        match groups.iter_mut().find(|(audit, _)| *audit == a.audit) {
            Some((_, v)) => v.push(*a),
            None => groups.push((a.audit, vec![*a])),
        }
    }
    let per_arch: Vec<(Arch, BTreeMap<u32, Call>)> = r
        .arches
        .iter()
        .map(|a| {
            let mut m = BTreeMap::new();
            calls(r, *a, &mut m);
            (*a, m)
        })
        .collect();
    let mut e = Emitter { rev: Vec::with_capacity(1024), rets: HashMap::new() };
    let bad = To::At(e.ret(BAD_ARCH.ret()));
    let mut next = bad;
    let mut entry_of_first = bad;
    for (gi, (audit, arches)) in groups.iter().enumerate().rev() {
        let mut calls: Vec<(u32, Arch, &Call)> = per_arch
            .iter()
            .filter(|(a, _)| arches.contains(a))
            .flat_map(|(a, m)| m.iter().map(move |(nr, c)| (*nr, *a, c)))
            .collect();
        calls.sort_by_key(|(nr, _, _)| *nr);
        let default = To::Ret(r.default_action.ret());
        let mut entry = e.tree(&calls, tree, r.default_action, default);
        let has = |n: &str| arches.iter().any(|a| a.name == n);
        if has("x86_64") && !has("x32") {
            // x32 calls (bit 30) are not x86_64's: bad-arch, except nr -1, which a tracer sets to skip a
            // call (seccomp runs again after it): that one goes through the tree and gets the default.
            let minus_one = e.jump(JEQ_K, u32::MAX, entry, bad);
            entry = e.jump(JGE_K, X32_SYSCALL_BIT, minus_one, entry);
        } else if has("x32") && !has("x86_64") {
            entry = e.jump(JGE_K, X32_SYSCALL_BIT, entry, bad);
        }
        let load_nr = e.stmt(stmt(LD_W_ABS, 0), entry);
        next = e.jump(JEQ_K, *audit, load_nr, next);
        if gi == 0 {
            // Later blocks are reached from the previous block's `jeq` with the arch still in A.
            entry_of_first = e.stmt(stmt(LD_W_ABS, 4), next);
        }
    }
    debug_assert_eq!(entry_of_first, To::At(e.head() - 1), "the program starts with the first block");
    e.rev.reverse();
    Ok(e.rev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{self, Data};
    use crate::compile::{Generator, Options};
    use crate::resolve::{resolve, Target};

    fn resolved(json: &str, arch: &str, caps: &str) -> Resolved {
        let p = crate::profile::parse(json, "t", false).unwrap().0;
        let t = Target { arch: Arch::parse(arch).unwrap(), caps: crate::caps::parse(caps).unwrap(), kernel: (6, 1, 0) };
        resolve(&p, &t).unwrap()
    }

    /// Per filter architecture, each rule's syscall number there and its multiplexer call (if any), and
    /// the rules by number.
    /// A rule's direct syscall number and its multiplexer call (number, call), on one architecture.
    type RuleNumbers = Vec<(Option<u32>, Option<(u32, u64)>)>;
    type ByNumber = HashMap<u32, Vec<usize>>;
    struct Numbers(Vec<(Arch, RuleNumbers)>, Vec<ByNumber>);

    impl Numbers {
        fn new(r: &Resolved) -> Numbers {
            let per_arch: Vec<(Arch, RuleNumbers)> = r
                .arches
                .iter()
                .map(|a| {
                    let mux = |name: &str| multiplexer(*a, name).map(|(_, nr, call)| (nr, call));
                    (*a, r.rules.iter().map(|x| (syscall_nr(&x.name, *a), mux(&x.name))).collect())
                })
                .collect();
            let by_nr = per_arch
                .iter()
                .map(|(_, numbers)| {
                    let mut m: HashMap<u32, Vec<usize>> = HashMap::new();
                    for (i, (d, x)) in numbers.iter().enumerate() {
                        for nr in [*d, x.map(|x| x.0)].into_iter().flatten() {
                            m.entry(nr).or_default().push(i);
                        }
                    }
                    m
                })
                .collect();
            Numbers(per_arch, by_nr)
        }
    }

    /// The verdict the profile means, computed from the rules directly (not from the program): the
    /// semantics the module documentation states. Also says whether the call is ambiguous (matched by
    /// conditional rules with different actions and no unconditional rule), where libseccomp may differ.
    fn oracle(r: &Resolved, nums: &Numbers, audit: u32, nr: u32, args: &[u64; 6]) -> (u32, bool) {
        let arches: Vec<(&(Arch, RuleNumbers), &ByNumber)> =
            nums.0.iter().zip(&nums.1).filter(|((a, _), _)| a.audit == audit).collect();
        if arches.is_empty() {
            return (BAD_ARCH.ret(), false);
        }
        let has = |n: &str| arches.iter().any(|((a, _), _)| a.name == n);
        if (has("x86_64") && !has("x32") && nr >= X32_SYSCALL_BIT && nr != u32::MAX)
            || (has("x32") && !has("x86_64") && nr < X32_SYSCALL_BIT)
        {
            return (BAD_ARCH.ret(), false);
        }
        let mut unconditional = None;
        let mut matched: Vec<Action> = vec![];
        for ((a, numbers), by_nr) in arches {
            for &i in by_nr.get(&nr).into_iter().flatten() {
                let (rule, (direct, mux)) = (&r.rules[i], &numbers[i]);
                let arg = |i: u8| if a.bits32 { args[i as usize] & 0xffff_ffff } else { args[i as usize] };
                if *direct == Some(nr) {
                    if rule.conds.is_empty() {
                        unconditional.get_or_insert(rule.action);
                    } else if rule.conds.iter().all(|c| holds(c, *a, args)) {
                        matched.push(rule.action);
                    }
                }
                if let Some((mux_nr, call)) = mux {
                    if *mux_nr == nr && arg(0) == *call {
                        matched.push(rule.action);
                    }
                }
            }
        }
        if let Some(a) = unconditional {
            return (a.ret(), false);
        }
        let ambiguous = matched.iter().any(|a| *a != matched[0]);
        // Strongest first; `min_by_key` keeps the first of equals, i.e. profile order.
        match matched.iter().min_by_key(|a| severity(**a)) {
            Some(a) => (a.ret(), ambiguous),
            None => (r.default_action.ret(), false),
        }
    }

    /// Argument vectors at every comparison's edges: the value, ±1, the other word changed, masks.
    fn argsets(r: &Resolved) -> Vec<[u64; 6]> {
        let mut out = vec![[0u64; 6], [u64::MAX; 6], [1, 2, 3, 4, 5, 6]];
        let mut all = [0u64; 6];
        for c in r.rules.iter().flat_map(|x| &x.conds) {
            let v = c.value;
            let edges = [
                v,
                v.wrapping_sub(1),
                v.wrapping_add(1),
                v ^ (1 << 32),
                v.wrapping_add(1 << 32),
                v.wrapping_sub(1 << 32),
                v & 0xffff_ffff,
                c.value_two,
                c.value_two | !v,
                c.value_two ^ 1,
                c.value_two ^ (1 << 40),
                !0,
                0,
            ];
            for e in edges {
                let mut a = [0u64; 6];
                a[c.index as usize] = e;
                out.push(a);
                // The same edge with the other arguments at values other rules test.
                let mut b = all;
                b[c.index as usize] = e;
                out.push(b);
            }
            all[c.index as usize] = if c.op == Op::MaskedEq { c.value_two } else { v };
        }
        // Every rule satisfied as a whole (AND of its conditions), then each condition broken in turn.
        for rule in &r.rules {
            let mut a = [0u64; 6];
            for c in &rule.conds {
                a[c.index as usize] = match c.op {
                    Op::Eq | Op::Le | Op::Ge => c.value,
                    Op::Ne | Op::Gt => c.value.wrapping_add(1),
                    Op::Lt => c.value.wrapping_sub(1),
                    Op::MaskedEq => c.value_two,
                };
            }
            out.push(a);
            for c in &rule.conds {
                let mut b = a;
                b[c.index as usize] ^= 1;
                out.push(b);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Runs ours, libseccomp's and the oracle over every syscall number of every filter architecture
    /// (x32 numbers with bit 30, -1, numbers past the highest) and a foreign one, with all argument
    /// vectors; returns the calls compared and those where libseccomp differed: (ambiguous, libseccomp
    /// lost a matching alternative).
    fn differential(r: &Resolved) -> (usize, (usize, usize)) {
        let opts = |generator, optimize| Options { optimize, enosys: false, cache: false, generator };
        let ours = crate::compile::program(r, opts(Generator::Native, true)).unwrap();
        let linear = crate::compile::program(r, opts(Generator::Native, false)).unwrap();
        let theirs = crate::compile::program(r, opts(Generator::Libseccomp, true)).unwrap();
        let args = argsets(r);
        let nums = Numbers::new(r);
        let mut audits: Vec<u32> = r.arches.iter().map(|a| a.audit).collect();
        audits.push(0x1234_5678);
        audits.dedup();
        let (mut n, mut differ) = (0, (0, 0));
        for audit in audits {
            let mut nrs: Vec<u32> = vec![u32::MAX, 0x7fff_ffff, X32_SYSCALL_BIT - 1];
            let mut with_conds: Vec<u32> = vec![];
            for (a, numbers) in nums.0.iter().filter(|(a, _)| a.audit == audit) {
                let named: Vec<u32> = numbers.iter().flat_map(|(d, m)| [*d, m.map(|m| m.0)]).flatten().collect();
                // Numbers whose verdict can depend on the arguments get every argument vector.
                let conditional = numbers.iter().zip(&r.rules).filter(|(_, x)| !x.conds.is_empty());
                with_conds.extend(conditional.filter_map(|((d, _), _)| *d));
                with_conds.extend(numbers.iter().filter_map(|(_, m)| m.map(|m| m.0)));
                let base = if a.name == "x32" { X32_SYSCALL_BIT } else { 0 };
                // Every number from the lowest to 40 past the highest of the ABI's table (MIPS o32 starts
                // at 4000), the 40 from its base, and ±2 around outliers such as ARM's private calls.
                let dense: Vec<u32> = named.iter().copied().filter(|n| *n < base + 0x2000).collect();
                let min = dense.iter().min().copied().unwrap_or(base).saturating_sub(40).max(base);
                let max = dense.iter().max().copied().unwrap_or(base) + 40;
                nrs.extend(base..base + 40);
                nrs.extend(min..=max);
                nrs.extend(named.iter().flat_map(|n| n.saturating_sub(2)..=n.saturating_add(2)));
                nrs.extend((0..=(max - base).min(1000)).map(|n| n ^ X32_SYSCALL_BIT));
            }
            nrs.sort();
            nrs.dedup();
            for nr in nrs {
                let sets: &[[u64; 6]] = if with_conds.contains(&nr) { &args } else { &args[..3] };
                for a in sets {
                    let d = Data { nr: nr as i32, arch: audit, ip: 0, args: *a };
                    let (want, ambiguous) = oracle(r, &nums, audit, nr, a);
                    let got = bpf::run(&ours, &d).unwrap();
                    let lib = bpf::run(&theirs, &d).unwrap();
                    assert_eq!(got, want, "ours vs the oracle: arch {audit:#x} nr {nr:#x} args {a:x?}");
                    assert_eq!(bpf::run(&linear, &d).unwrap(), got, "linear: arch {audit:#x} nr {nr:#x}");
                    if lib != got {
                        // Only two kinds of call may differ: ambiguous ones (conditional rules with
                        // different actions match; see the module documentation), and calls where
                        // libseccomp 2.5's tree loses an alternative of several OR'd conditional rules
                        // on one call and answers the default though a rule matches (seccomp/libseccomp
                        // issue 118: what several rules on one syscall mean is not specified there).
                        let alternatives = nums.1.iter().any(|m| {
                            m.get(&nr).is_some_and(|rules| {
                                rules.iter().filter(|&&i| !r.rules[i].conds.is_empty()).count() > 1
                            })
                        });
                        if ambiguous {
                            differ.0 += 1;
                        } else if lib == r.default_action.ret() && alternatives {
                            differ.1 += 1;
                        } else {
                            panic!("ours {got:#x} vs libseccomp {lib:#x}: arch {audit:#x} nr {nr:#x} args {a:x?}");
                        }
                    }
                    n += 1;
                }
            }
        }
        (n, differ)
    }

    fn moby() -> Option<String> {
        std::fs::read_to_string("/work/shared/data/seccomp/moby-default.json")
            .or_else(|_| {
                std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/data/seccomp/moby-default.json"
                ))
            })
            .ok()
    }

    /// Consecutive calls with one unconditional action share a range; gaps are the default's; a call
    /// with conditional rules is a range of its own; the ranges cover every number.
    #[test]
    fn ranges_merge_runs_of_one_action() {
        let arch = Arch::parse("x86_64").unwrap();
        let allow = Call { unconditional: Some(Action::Allow), rules: vec![] };
        let eperm = Call { unconditional: Some(Action::Errno(1)), rules: vec![] };
        let cond = Call {
            unconditional: None,
            rules: vec![ArchRule {
                action: Action::Allow,
                conds: vec![Cond { index: 0, op: Op::Eq, value: 1, value_two: 0 }],
            }],
        };
        let calls = [
            (0, arch, &allow),
            (1, arch, &allow),
            (2, arch, &allow),
            (3, arch, &eperm),
            (5, arch, &allow),
            (6, arch, &allow),
            (7, arch, &cond),
        ];
        let got: Vec<(u32, String)> = ranges(&calls)
            .iter()
            .map(|r| {
                let v = match r.verdict {
                    Verdict::Action(a) => format!("{a:?}"),
                    Verdict::Miss => "miss".into(),
                    Verdict::Code(..) => "code".into(),
                };
                (r.start, v)
            })
            .collect();
        let want = [(0, "Allow"), (3, "Errno(1)"), (4, "miss"), (5, "Allow"), (7, "code"), (8, "miss")];
        assert_eq!(got, want.map(|(n, v)| (n, v.to_string())));
        // The built-in profile (Docker's) for x86_64, x86 and x32: under 400 instructions with ranges (one
        // comparison per number made 1617; libseccomp's program has 1294).
        let builtin = serde_json::to_string(&crate::builtin::default_profile()).unwrap();
        let r = resolved(&builtin, "x86_64", "default");
        let (tree, flat) = (program(&r, true).unwrap().len(), program(&r, false).unwrap().len());
        assert!(tree < 400 && flat > 2 * tree, "range tree {tree} instructions, flat {flat}");
    }

    #[test]
    fn direct_numbers_are_libseccomps() {
        for (name, table) in DIRECT {
            let arch = Arch::parse(name).unwrap();
            for (call, nr) in *table {
                let named = ScmpSyscall::from(*nr as i32).get_name_by_arch(arch.token).unwrap();
                assert_eq!(&named, call, "{name} {nr}");
            }
            for (call, _) in SOCKETCALL.iter().chain(IPC) {
                let nr = ScmpSyscall::from_name_by_arch(call, arch.token).unwrap().as_raw_syscall();
                assert!(nr < 0, "{name} {call}: a multiplexed call");
                // A call missing from the table has no number of its own there.
                if !table.iter().any(|(n, _)| n == call) {
                    assert!((0..0x2000)
                        .all(|n| ScmpSyscall::from(n).get_name_by_arch(arch.token).ok().as_deref() != Some(*call)));
                }
            }
        }
    }

    #[test]
    fn docker_and_builtin_profiles_decide_like_libseccomp() {
        let builtin = serde_json::to_string(&crate::builtin::default_profile()).unwrap();
        let mut profiles = vec![("builtin", builtin)];
        match moby() {
            Some(m) => profiles.push(("moby", m)),
            None => assert!(std::env::var_os("CBUILD_IN_VM").is_some(), "moby-default.json is missing"),
        }
        let mut runs = vec![];
        for caps in ["none", "default", "all"] {
            runs.push((caps, "x86_64"));
        }
        for arch in ["aarch64", "x86", "x32", "riscv64", "ppc64le", "mipsel"] {
            runs.push(("default", arch));
        }
        for (name, json) in &profiles {
            for (caps, arch) in &runs {
                {
                    let r = resolved(json, arch, caps);
                    let (n, differ) = differential(&r);
                    assert!(n > 1000, "{name} {caps} {arch}: {n}");
                    assert_eq!(differ, (0, 0), "{name} {caps} {arch}: the same verdict for every call");
                }
            }
        }
    }

    fn entry(names: &[&str], action: &str, errno: Option<u32>, args: &[(u32, &str, u64, u64)]) -> String {
        let args: Vec<String> = args
            .iter()
            .map(|(i, op, v, v2)| format!(r#"{{"index":{i},"op":"SCMP_CMP_{op}","value":{v},"valueTwo":{v2}}}"#))
            .collect();
        let errno = errno.map(|e| format!(r#","errnoRet":{e}"#)).unwrap_or_default();
        format!(r#"{{"names":{names:?},"action":"SCMP_ACT_{action}"{errno},"args":[{}]}}"#, args.join(","))
    }

    /// Every operator at 32- and 64-bit values, MASKED_EQ's corners, AND over arguments, OR on one
    /// argument, every action with and without errnoRet, syscalls low and high, the socketcall/ipc calls.
    fn synthetic_rules() -> Vec<String> {
        let big = [5u64, 0xffff_ffff, 0x1_0000_0005, 0xffff_ffff_0000_0005, 0x8000_0000_0000_0000];
        let mut v = vec![];
        for (call, op, index) in [
            ("read", "EQ", 0),
            ("write", "NE", 1),
            ("openat", "LT", 2),
            ("lseek", "LE", 2),
            ("mmap", "GT", 4),
            ("munmap", "GE", 1),
        ] {
            for x in big {
                v.push(entry(&[call], "ALLOW", None, &[(index, op, x, 0)]));
            }
        }
        v.push(entry(&["clone"], "ALLOW", None, &[(0, "MASKED_EQ", 0x7E02_0000, 0)]));
        v.push(entry(&["ioctl"], "LOG", None, &[(1, "MASKED_EQ", 0xffff_ffff_0000_ff00, 0x1_0000_5400)]));
        v.push(entry(&["fcntl"], "ALLOW", None, &[(1, "MASKED_EQ", 0, 0)]));
        v.push(entry(&["flock"], "ALLOW", None, &[(1, "MASKED_EQ", 0xff, 0x100)]));
        v.push(entry(&["fsync"], "ALLOW", None, &[(0, "MASKED_EQ", 0xf0f0_0000_0000_00ff, 0x1000_0000_0000_000f)]));
        // AND over three arguments; OR on one argument (two entries, and one entry with two conditions).
        v.push(entry(&["socket"], "ALLOW", None, &[(0, "EQ", 2, 0), (1, "EQ", 1, 0), (2, "GT", 5, 0)]));
        v.push(entry(&["prctl"], "ERRNO", Some(22), &[(0, "EQ", 4, 0), (0, "EQ", 0x1_0000_0004, 0)]));
        v.push(entry(&["setsockopt"], "ALLOW", None, &[(1, "EQ", 1, 0)]));
        v.push(entry(&["setsockopt"], "ALLOW", None, &[(1, "EQ", 6, 0), (2, "LE", 0x20, 0)]));
        // Every action, errnoRet on ERRNO and TRACE.
        v.push(entry(&["kexec_load"], "KILL_PROCESS", None, &[]));
        v.push(entry(&["reboot"], "KILL", None, &[]));
        v.push(entry(&["init_module"], "KILL_THREAD", None, &[]));
        v.push(entry(&["acct"], "TRAP", None, &[]));
        v.push(entry(&["mount"], "ERRNO", Some(13), &[]));
        v.push(entry(&["umount2"], "TRACE", Some(7), &[]));
        v.push(entry(&["getpid", "gettid"], "LOG", None, &[]));
        v.push(entry(&["getppid", "exit_group", "futex_waitv", "set_mempolicy_home_node"], "ALLOW", None, &[]));
        v.push(entry(&["chdir"], "ERRNO", None, &[]));
        // Multiplexed calls (socketcall, ipc on x86, MIPS o32, PowerPC): with and without conditions, and
        // `send`, which has no number of its own on x86.
        v.push(entry(&["connect", "send", "shmget", "semop", "accept4"], "TRAP", None, &[]));
        v.push(entry(&["bind"], "ERRNO", Some(98), &[(0, "EQ", 3, 0)]));
        v
    }

    fn profile(default: &str, arches: &[&str], rules: &[String]) -> String {
        let arches: Vec<String> = arches.iter().map(|a| format!("\"SCMP_ARCH_{a}\"")).collect();
        format!(
            r#"{{"defaultAction":"SCMP_ACT_{default}","architectures":[{}],"syscalls":[{}]}}"#,
            arches.join(","),
            rules.join(",")
        )
    }

    const ARCH_SETS: &[(&str, &[&str])] = &[
        ("x86_64", &["X86_64", "X86", "X32"]),
        ("x86_64", &[]),
        ("x86_64", &["X32"]),
        ("x32", &[]),
        ("x86", &[]),
        ("aarch64", &["ARM"]),
        ("riscv64", &[]),
        ("ppc64le", &[]),
        ("mipsel", &[]),
    ];

    #[test]
    fn synthetic_profiles_decide_like_libseccomp() {
        let rules = synthetic_rules();
        let (mut total, mut lost) = (0, 0);
        for (target, arches) in ARCH_SETS {
            let r = resolved(&profile("ERRNO", arches, &rules), target, "default");
            let (n, differ) = differential(&r);
            assert_eq!(differ.0, 0, "{target} {arches:?}: nothing ambiguous here");
            total += n;
            lost += differ.1;
        }
        // Every default action (rules equal to it drop out), on the host's three ABIs.
        for default in ["KILL_PROCESS", "KILL", "TRAP", "ERRNO", "TRACE", "LOG", "ALLOW"] {
            let r = resolved(&profile(default, &["X86", "X32"], &rules), "x86_64", "default");
            let (n, differ) = differential(&r);
            assert_eq!(differ.0, 0, "default {default}");
            total += n;
            lost += differ.1;
        }
        assert!(total > 200_000, "{total}");
        // libseccomp's known loss: lseek(0, 0, 0x1ffffffff) under `arg2 <= 0x100000005 || arg2 <=
        // 0xffffffff00000005` is allowed by the second rule; libseccomp's program returns the default.
        assert!(lost > 0);
        let r = resolved(&profile("ERRNO", &[], &rules), "x86_64", "default");
        let opts = |generator| Options { enosys: false, generator, ..Options::default() };
        let d = Data { nr: 8, arch: 0xC000_003E, ip: 0, args: [0, 0, 0x1_ffff_ffff, 0, 0, 0] };
        let ours = crate::compile::program(&r, opts(Generator::Native)).unwrap();
        let theirs = crate::compile::program(&r, opts(Generator::Libseccomp)).unwrap();
        assert_eq!(bpf::run(&ours, &d).unwrap(), Action::Allow.ret());
        assert_eq!(bpf::run(&theirs, &d).unwrap(), Action::Errno(1).ret());
    }

    /// Rules that overlap with different actions: an unconditional rule beats conditional ones (as in
    /// libseccomp); between conditional ones the stronger action wins, where libseccomp's answer depends
    /// on its tree order (the differential test allows a difference only there, and finds some).
    #[test]
    fn overlapping_rules_follow_the_documented_precedence() {
        let rules = [
            entry(&["personality"], "ALLOW", None, &[]),
            entry(&["personality"], "KILL_PROCESS", None, &[(0, "EQ", 8, 0)]),
            entry(&["getpid"], "LOG", None, &[(1, "EQ", 2, 0)]),
            entry(&["getpid"], "TRAP", None, &[(0, "EQ", 1, 0)]),
            entry(&["getppid"], "ALLOW", None, &[(0, "GT", 5, 0)]),
            entry(&["getppid"], "ERRNO", Some(5), &[(0, "EQ", 7, 0)]),
            entry(&["gettid"], "ERRNO", Some(5), &[(0, "GE", 1, 0)]),
            entry(&["gettid"], "ERRNO", Some(9), &[(0, "LE", 9, 0)]),
        ];
        let r = resolved(&profile("ERRNO", &["X86", "X32"], &rules), "x86_64", "default");
        let (_, differ) = differential(&r);
        assert!(differ.0 > 0, "libseccomp answers some ambiguous call differently");
        let p = crate::compile::program(&r, Options { enosys: false, ..Options::default() }).unwrap();
        let call = |name: &str, args: [u64; 6]| {
            let nr = syscall_nr(name, Arch::parse("x86_64").unwrap()).unwrap() as i32;
            bpf::run(&p, &Data { nr, arch: 0xC000_003E, ip: 0, args }).unwrap()
        };
        assert_eq!(call("personality", [8, 0, 0, 0, 0, 0]), Action::Allow.ret(), "unconditional wins");
        assert_eq!(call("getpid", [1, 2, 0, 0, 0, 0]), Action::Trap.ret(), "TRAP is stronger than LOG");
        assert_eq!(call("getpid", [0, 2, 0, 0, 0, 0]), Action::Log.ret());
        assert_eq!(call("getppid", [7, 0, 0, 0, 0, 0]), Action::Errno(5).ret());
        assert_eq!(call("getppid", [8, 0, 0, 0, 0, 0]), Action::Allow.ret());
        assert_eq!(call("gettid", [3, 0, 0, 0, 0, 0]), Action::Errno(5).ret(), "equal strength: listed first");
        assert_eq!(call("gettid", [0, 0, 0, 0, 0, 0]), Action::Errno(9).ret());
    }

    /// Far more code than an 8-bit jump spans (300 rules on one call, three ABIs): the long jumps land.
    #[test]
    fn long_programs_keep_their_meaning() {
        let rules: Vec<String> = (1..=300u64)
            .map(|i| entry(&["personality"], "ERRNO", Some(1 + (i % 100) as u32), &[(0, "GT", i * 7 + (i << 33), 0)]))
            .chain(synthetic_rules())
            .collect();
        let r = resolved(&profile("ALLOW", &["X86", "X32"], &rules), "x86_64", "default");
        let p = crate::compile::program(&r, Options::default()).unwrap();
        assert!(p.len() > 2000, "{}", p.len());
        assert!(p.iter().any(|i| i.code == JA), "needs long jumps");
        let (n, _) = differential(&r);
        assert!(n > 10_000);
    }
}
