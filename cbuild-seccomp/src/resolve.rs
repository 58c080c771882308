//! From a profile to the rules one filter gets: validation, `includes`/`excludes` against a capability
//! set, an architecture and a kernel version (as moby's `setupSeccomp` does), and the rule-shaping runc
//! does (several conditions on one argument become separate rules; a rule whose action equals the default
//! is dropped; names libseccomp does not know are dropped with a warning).

use crate::arch::Arch;
use crate::caps::CapSet;
use crate::profile::{Arg, Profile, Syscall};
use crate::{Error, Result};
use libseccomp::ScmpSyscall;
use serde::Serialize;
use std::fmt;

/// EPERM: the errno of an ERRNO or TRACE action that names none, as runc does.
pub const EPERM: u16 = 1;
/// The kernel turns larger errno values into MAX_ERRNO; refuse them rather than surprise.
pub const MAX_ERRNO: u32 = 4095;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    Trace(u16),
    Allow,
    Log,
}

impl Action {
    /// `SCMP_ACT_*` plus `errnoRet`. `errnoRet` is accepted only where the kernel has a place for it.
    pub fn parse(name: &str, errno_ret: Option<u32>, object: &str) -> Result<Action> {
        let errno = |e: Option<u32>| -> Result<u16> {
            match e {
                None => Ok(EPERM),
                Some(n) if n <= MAX_ERRNO => Ok(n as u16),
                Some(n) => Err(Error::new("resolve", object, format!("errnoRet {n} is above {MAX_ERRNO}"))),
            }
        };
        let action = match name {
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_ERRNO" => return Ok(Action::Errno(errno(errno_ret)?)),
            "SCMP_ACT_TRACE" => return Ok(Action::Trace(errno(errno_ret)?)),
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_NOTIFY" => {
                return Err(Error::new("resolve", object, "SCMP_ACT_NOTIFY is not supported")
                    .hint("a notify filter needs a supervisor holding the listener fd, which a BPF file cannot carry"))
            }
            other => return Err(Error::new("resolve", object, format!("unknown action {other:?}"))),
        };
        if errno_ret.is_some() {
            return Err(Error::new(
                "resolve",
                object,
                format!("errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}"),
            ));
        }
        Ok(action)
    }

    pub fn scmp(self) -> &'static str {
        match self {
            Action::KillProcess => "SCMP_ACT_KILL_PROCESS",
            Action::KillThread => "SCMP_ACT_KILL_THREAD",
            Action::Trap => "SCMP_ACT_TRAP",
            Action::Errno(_) => "SCMP_ACT_ERRNO",
            Action::Trace(_) => "SCMP_ACT_TRACE",
            Action::Allow => "SCMP_ACT_ALLOW",
            Action::Log => "SCMP_ACT_LOG",
        }
    }

    pub fn errno(self) -> Option<u16> {
        match self {
            Action::Errno(e) | Action::Trace(e) => Some(e),
            _ => None,
        }
    }

    /// The `SECCOMP_RET_*` value the kernel sees.
    pub fn ret(self) -> u32 {
        match self {
            Action::KillProcess => 0x8000_0000,
            Action::KillThread => 0x0000_0000,
            Action::Trap => 0x0003_0000,
            Action::Errno(e) => 0x0005_0000 | e as u32,
            Action::Trace(e) => 0x7ff0_0000 | e as u32,
            Action::Log => 0x7ffc_0000,
            Action::Allow => 0x7fff_0000,
        }
    }

    pub fn to_libseccomp(self) -> libseccomp::ScmpAction {
        use libseccomp::ScmpAction as A;
        match self {
            Action::KillProcess => A::KillProcess,
            Action::KillThread => A::KillThread,
            Action::Trap => A::Trap,
            Action::Errno(e) => A::Errno(e as i32),
            Action::Trace(e) => A::Trace(e),
            Action::Allow => A::Allow,
            Action::Log => A::Log,
        }
    }

    /// Actions that let the call run: the ENOSYS patch is pointless under them.
    pub fn permits(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = &self.scmp()["SCMP_ACT_".len()..];
        match self.errno() {
            Some(e) => write!(f, "{short}({e}{})", errno_name(e).map(|n| format!(" {n}")).unwrap_or_default()),
            None => f.write_str(short),
        }
    }
}

/// Symbolic name of the errno values profiles use most.
pub fn errno_name(e: u16) -> Option<&'static str> {
    Some(match e as i32 {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EFAULT => "EFAULT",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "SCMP_CMP_NE" => Op::Ne,
            "SCMP_CMP_LT" => Op::Lt,
            "SCMP_CMP_LE" => Op::Le,
            "SCMP_CMP_EQ" => Op::Eq,
            "SCMP_CMP_GE" => Op::Ge,
            "SCMP_CMP_GT" => Op::Gt,
            "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
            _ => return None,
        })
    }
}

/// One argument comparison. For MASKED_EQ the mask is `value` and the compared datum is `value_two`
/// (`(arg & value) == (value_two & value)`, libseccomp masking the datum too), as runc and crun read Docker's profiles: Docker's `clone` rule is
/// `{value: CLONE_NEW* mask, valueTwo: 0}`, "no namespace flag set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
    pub value_two: u64,
}

impl Cond {
    /// What the comparison means for a 64-bit argument value (libseccomp compares all 64 bits).
    pub fn matches(&self, arg: u64) -> bool {
        match self.op {
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::Le => arg <= self.value,
            Op::Eq => arg == self.value,
            Op::Ge => arg >= self.value,
            Op::Gt => arg > self.value,
            // libseccomp masks the datum as well: bits of valueTwo outside the mask are ignored.
            Op::MaskedEq => arg & self.value == self.value_two & self.value,
        }
    }

    pub fn to_libseccomp(self) -> libseccomp::ScmpArgCompare {
        use libseccomp::ScmpCompareOp as C;
        let (op, datum) = match self.op {
            Op::Ne => (C::NotEqual, self.value),
            Op::Lt => (C::Less, self.value),
            Op::Le => (C::LessOrEqual, self.value),
            Op::Eq => (C::Equal, self.value),
            Op::Ge => (C::GreaterEqual, self.value),
            Op::Gt => (C::Greater, self.value),
            Op::MaskedEq => (C::MaskedEqual(self.value), self.value_two),
        };
        libseccomp::ScmpArgCompare::new(self.index as u32, op, datum)
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.index;
        match self.op {
            Op::MaskedEq => write!(f, "arg{i} & {:#x} == {:#x}", self.value, self.value_two),
            op => {
                let sym = match op {
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Eq => "==",
                    Op::Ge => ">=",
                    _ => ">",
                };
                write!(f, "arg{i} {sym} {:#x}", self.value)
            }
        }
    }
}

/// One libseccomp rule: a syscall, an action and the comparisons that must all hold (AND). Several rules
/// for the same syscall and action are alternatives (OR).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub conds: Vec<Cond>,
}

/// A rule that was resolved but does not reach the filter, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Skipped {
    pub syscall: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flag {
    #[serde(rename = "SECCOMP_FILTER_FLAG_TSYNC")]
    Tsync,
    #[serde(rename = "SECCOMP_FILTER_FLAG_LOG")]
    Log,
    #[serde(rename = "SECCOMP_FILTER_FLAG_SPEC_ALLOW")]
    SpecAllow,
}

impl Flag {
    pub fn parse(s: &str) -> Option<Flag> {
        let short = s.strip_prefix("SECCOMP_FILTER_FLAG_").unwrap_or(s);
        Some(match short.to_ascii_uppercase().as_str() {
            "TSYNC" => Flag::Tsync,
            "LOG" => Flag::Log,
            "SPEC_ALLOW" => Flag::SpecAllow,
            _ => return None,
        })
    }

    /// The `seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)` bit.
    pub fn bit(self) -> u32 {
        match self {
            Flag::Tsync => 1,
            Flag::Log => 2,
            Flag::SpecAllow => 4,
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Flag::Tsync => "TSYNC",
            Flag::Log => "LOG",
            Flag::SpecAllow => "SPEC_ALLOW",
        }
    }
}

/// What a profile is resolved against.
#[derive(Debug, Clone)]
pub struct Target {
    pub arch: Arch,
    pub caps: CapSet,
    pub kernel: (u32, u32, u32),
}

impl Target {
    pub fn host(caps: CapSet) -> Target {
        Target { arch: Arch::host(), caps, kernel: running_kernel() }
    }
}

/// The running kernel's version from uname (e.g. `6.1.0-13-amd64` → 6.1.0).
pub fn running_kernel() -> (u32, u32, u32) {
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    parse_kernel(&release).unwrap_or((0, 0, 0))
}

/// `5.10`, `4.8.0-rc1`, `6.1.0-13-amd64` → (major, minor, patch).
pub fn parse_kernel(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let patch = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((major, minor, patch))
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub default_action: Action,
    /// The target architecture first, then the rest of its `archMap` entry or `architectures`.
    pub arches: Vec<Arch>,
    pub flags: Vec<Flag>,
    pub rules: Vec<Rule>,
    pub skipped: Vec<Skipped>,
    /// Every syscall name the profile's applicable entries mention (for the ENOSYS patch's "known" set).
    pub mentioned: Vec<String>,
    /// Names libseccomp does not know (skipped; the caller warns).
    pub unknown: Vec<String>,
    pub target: Target,
}

impl Resolved {
    pub fn flag_bits(&self) -> u32 {
        self.flags.iter().fold(0, |b, f| b | f.bit())
    }
}

fn arch_named(s: &str, object: &str) -> Result<Arch> {
    Arch::parse(s).ok_or_else(|| Error::new("resolve", object, format!("unknown architecture {s:?}")))
}

fn rule_object(i: usize, s: &Syscall) -> String {
    let first = s.name.clone().or_else(|| s.names.as_ref().and_then(|n| n.first().cloned()));
    match first {
        Some(n) => format!("syscalls[{i}] {n}"),
        None => format!("syscalls[{i}]"),
    }
}

fn conds(args: &[Arg], object: &str) -> Result<Vec<Cond>> {
    args.iter()
        .map(|a| {
            if a.index > 5 {
                return Err(Error::new("resolve", object, format!("argument index {} is above 5", a.index)));
            }
            let op = Op::parse(&a.op)
                .ok_or_else(|| Error::new("resolve", object, format!("unknown operator {:?}", a.op)))?;
            Ok(Cond { index: a.index as u8, op, value: a.value, value_two: a.value_two })
        })
        .collect()
}

/// Does `name` exist for any of the filter's architectures, as far as the linked libseccomp knows?
pub fn known_to_libseccomp(name: &str, arches: &[Arch]) -> bool {
    arches.iter().any(|a| ScmpSyscall::from_name_by_arch(name, a.token).is_ok())
}

pub fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default()
}

/// Resolve `p` for `t`. Every entry is validated, also the ones `includes`/`excludes` leave out, so a
/// profile is rejected or accepted the same way on every machine.
pub fn resolve(p: &Profile, t: &Target) -> Result<Resolved> {
    let default_action = Action::parse(&p.default_action, p.default_errno_ret, "defaultAction")?;

    let mut arches = vec![t.arch];
    let mut push = |a: Arch| {
        if !arches.contains(&a) {
            arches.push(a)
        }
    };
    if p.architectures.as_ref().is_some_and(|v| !v.is_empty()) && p.arch_map.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Error::new("resolve", "architectures", "a profile may have architectures or archMap, not both"));
    }
    for name in p.architectures.iter().flatten() {
        push(arch_named(name, "architectures")?);
    }
    for entry in p.arch_map.iter().flatten() {
        let main = arch_named(&entry.architecture, "archMap")?;
        let subs =
            entry.sub_architectures.iter().flatten().map(|s| arch_named(s, "archMap")).collect::<Result<Vec<_>>>()?;
        if main == t.arch {
            subs.into_iter().for_each(&mut push);
        }
    }

    let flags = p
        .flags
        .iter()
        .flatten()
        .map(|f| Flag::parse(f).ok_or_else(|| Error::new("resolve", "flags", format!("unknown flag {f:?}"))))
        .collect::<Result<Vec<_>>>()?;
    if p.listener_path.is_some() {
        return Err(Error::new("resolve", "listenerPath", "seccomp notify is not supported"));
    }

    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    let mut mentioned = Vec::new();
    let mut unknown = Vec::new();
    let mut unknown_seen = std::collections::HashSet::new();
    let mut first_action: std::collections::HashMap<(String, Vec<Cond>), (Action, usize)> = Default::default();
    for (i, s) in p.syscalls.iter().flatten().enumerate() {
        let object = rule_object(i, s);
        let names: Vec<String> = match (&s.name, &s.names) {
            (Some(_), Some(n)) if !n.is_empty() => {
                return Err(Error::new("resolve", object, "has both name and names"))
            }
            (Some(n), _) => vec![n.clone()],
            (None, Some(n)) => n.clone(),
            (None, None) => vec![],
        };
        if names.is_empty() || names.iter().any(|n| n.is_empty()) {
            return Err(Error::new("resolve", object, "empty names list"));
        }
        let action = Action::parse(&s.action, s.errno_ret, &object)?;
        let conds = conds(s.args.as_deref().unwrap_or_default(), &object)?;
        for f in [&s.includes, &s.excludes].into_iter().flatten() {
            for a in f.arches.iter().flatten() {
                arch_named(a, &object)?;
            }
            if let Some(k) = &f.min_kernel {
                parse_kernel(k).ok_or_else(|| Error::new("resolve", &object, format!("invalid minKernel {k:?}")))?;
            }
        }
        if !applies(s, t) {
            continue;
        }
        mentioned.extend(names.iter().cloned());
        for name in names {
            if action == default_action {
                skipped.push(Skipped { syscall: name, reason: format!("action {action} is the default") });
                continue;
            }
            if !known_to_libseccomp(&name, &arches) {
                // A set beside the list: `contains` on the list made a profile of 100 000 unknown names
                // take 95 s (quadratic).
                if unknown_seen.insert(name.clone()) {
                    unknown.push(name.clone());
                }
                skipped
                    .push(Skipped { syscall: name, reason: format!("unknown to libseccomp {}", libseccomp_version()) });
                continue;
            }
            // runc: if two comparisons test the same argument, libseccomp would AND them into a rule
            // that can never match (arg == 0 && arg == 8); the profile means OR, so each becomes a rule.
            let same_arg = conds.iter().enumerate().any(|(i, c)| conds[..i].iter().any(|d| d.index == c.index));
            let shaped: Vec<Vec<Cond>> =
                if same_arg { conds.iter().map(|c| vec![*c]).collect() } else { vec![conds.clone()] };
            for conds in shaped {
                // The same call with the same conditions and two actions: libseccomp refuses it when there
                // are conditions ("Failure regarding the existence of argument") and silently keeps the
                // first when there are none, so the outcome would hang on the order of entries. Say so.
                let mut sorted = conds.clone();
                sorted.sort();
                match first_action.get(&(name.clone(), sorted.clone())) {
                    Some((a, j)) if *a != action => {
                        let on = if conds.is_empty() {
                            String::new()
                        } else {
                            format!(" if {}", conds.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" && "))
                        };
                        return Err(Error::new(
                            "resolve",
                            &object,
                            format!("{name}{on}: {action} conflicts with {a} of syscalls[{j}]"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        first_action.insert((name.clone(), sorted), (action, i));
                    }
                }
                rules.push(Rule { name: name.clone(), action, conds });
            }
        }
    }
    Ok(Resolved { default_action, arches, flags, rules, skipped, mentioned, unknown, target: t.clone() })
}

/// moby's rule selection: every `includes` must hold, no `excludes` may.
fn applies(s: &Syscall, t: &Target) -> bool {
    let native = t.arch.native;
    let arch_in = |list: &Option<Vec<String>>| {
        list.iter().flatten().any(|a| Arch::parse(a).is_some_and(|x| x.native == native) || a == native)
    };
    if let Some(ex) = &s.excludes {
        if ex.arches.as_ref().is_some_and(|v| !v.is_empty()) && arch_in(&ex.arches) {
            return false;
        }
        if ex.caps.iter().flatten().any(|c| t.caps.contains(c)) {
            return false;
        }
        if ex.min_kernel.as_deref().and_then(parse_kernel).is_some_and(|k| t.kernel >= k) {
            return false;
        }
    }
    if let Some(inc) = &s.includes {
        if inc.arches.as_ref().is_some_and(|v| !v.is_empty()) && !arch_in(&inc.arches) {
            return false;
        }
        if !inc.caps.iter().flatten().all(|c| t.caps.contains(c)) {
            return false;
        }
        if inc.min_kernel.as_deref().and_then(parse_kernel).is_some_and(|k| t.kernel < k) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse;

    fn target() -> Target {
        Target { arch: Arch::parse("x86_64").unwrap(), caps: crate::caps::docker_default(), kernel: (6, 1, 0) }
    }

    fn res(json: &str) -> Result<Resolved> {
        resolve(&parse(json, "t", false).unwrap().0, &target())
    }

    #[test]
    fn same_argument_means_or() {
        let r =
            res(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#)
            .unwrap();
        assert_eq!(r.rules.len(), 2);
        let r = res(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#)
        .unwrap();
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].conds.len(), 2);
    }

    #[test]
    fn masked_eq_reads_mask_from_value() {
        let c = Cond { index: 0, op: Op::MaskedEq, value: 0x7E02_0000, value_two: 0 };
        assert!(c.matches(0x11)); // SIGCHLD fork
        assert!(!c.matches(0x1000_0000 | 0x11)); // CLONE_NEWUSER
    }

    #[test]
    fn bad_inputs() {
        let cases = [
            (r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "unknown action"),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["x"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
                "errnoRet",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
                "empty names",
            ),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_VAX"]}"#, "unknown architecture"),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
                "above 5",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_XX"}]}]}"#,
                "unknown operator",
            ),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_NOPE"]}"#, "unknown flag"),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "NOTIFY",
            ),
        ];
        for (json, want) in cases {
            let e = res(json).unwrap_err();
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn default_action_rules_are_skipped() {
        let r =
            res(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}"#)
                .unwrap();
        assert!(r.rules.is_empty());
        assert_eq!(r.skipped[0].syscall, "getpid");
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.1.0-13-amd64"), Some((6, 1, 0)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8, 0)));
        assert_eq!(parse_kernel("x"), None);
    }
}
