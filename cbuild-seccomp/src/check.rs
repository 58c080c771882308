//! `check`: what the compiled program does with one system call. The answer comes from running the
//! program (the same bytes `compile` writes) over a `seccomp_data`, so it is what the kernel will do; the
//! profile's rules are consulted only to say *why*.

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{self, Data};
use crate::compile::Compiled;
use crate::resolve::{errno_name, Resolved, Rule};
use crate::{Error, Result};
use libseccomp::ScmpSyscall;
use serde::Serialize;

/// `NAME[,ARG...]` or `NR[,ARG...]`; arguments in decimal or 0x-hex.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: Option<String>,
    pub nr: i32,
    pub args: [u64; 6],
    pub nargs: usize,
}

pub fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse::<u64>().ok().or_else(|| s.parse::<i64>().ok().map(|v| v as u64)),
    }
}

impl Query {
    pub fn parse(spec: &str, abi: Arch) -> Result<Query> {
        let mut parts = spec.split(',');
        let call = parts.next().unwrap_or_default();
        let mut args = [0u64; 6];
        let mut nargs = 0;
        for (i, a) in parts.enumerate() {
            if i >= 6 {
                return Err(Error::new("check", spec, "a system call has at most 6 arguments"));
            }
            args[i] =
                parse_number(a).ok_or_else(|| Error::new("check", spec, format!("argument {a:?} is not a number")))?;
            nargs = i + 1;
        }
        let (name, nr) = match call.parse::<u32>() {
            // x32 numbers carry bit 30 in seccomp_data.nr.
            Ok(nr) => {
                let name = ScmpSyscall::from(nr as i32).get_name_by_arch(abi.token).ok();
                (name, if abi.name == "x32" { (nr | X32_SYSCALL_BIT) as i32 } else { nr as i32 })
            }
            Err(_) => {
                ScmpSyscall::from_name_by_arch(call, abi.token).map_err(|_| {
                    Error::new("check", call, format!("unknown to libseccomp {}", crate::resolve::libseccomp_version()))
                })?;
                // The number the program tests, as the generator finds it: on ABIs with socketcall(2) and
                // ipc(2), a multiplexed call's own direct number (libseccomp names it by a pseudo-number).
                let nr = crate::gen::syscall_nr(call, abi)
                    .ok_or_else(|| Error::new("check", call, format!("not a system call on {}", abi.name)))?;
                (Some(call.to_string()), nr as i32)
            }
        };
        Ok(Query { name, nr, args, nargs })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub syscall: Option<String>,
    pub nr: i32,
    pub arch: &'static str,
    pub args: Vec<u64>,
    /// `SCMP_ACT_*`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<&'static str>,
    pub allowed: bool,
    /// `rule`, `default`, `enosys` (newer than anything the profile names) or `bad_arch`.
    pub by: &'static str,
    /// The matching rule(s) or, for `enosys`, the limit.
    pub why: String,
    /// The raw SECCOMP_RET_* value.
    pub ret: u32,
    /// BPF instructions the kernel executes for this call (prologue included).
    pub instructions_run: usize,
}

/// SECCOMP_RET_* → (SCMP_ACT_*, errno).
pub fn decode(ret: u32) -> (&'static str, Option<u16>) {
    let data = (ret & 0xffff) as u16;
    match ret & 0xffff_0000 {
        0x8000_0000 => ("SCMP_ACT_KILL_PROCESS", None),
        0x0000_0000 => ("SCMP_ACT_KILL_THREAD", None),
        0x0003_0000 => ("SCMP_ACT_TRAP", None),
        0x0005_0000 => ("SCMP_ACT_ERRNO", Some(data)),
        0x7fc0_0000 => ("SCMP_ACT_NOTIFY", None),
        0x7ff0_0000 => ("SCMP_ACT_TRACE", Some(data)),
        0x7ffc_0000 => ("SCMP_ACT_LOG", None),
        0x7fff_0000 => ("SCMP_ACT_ALLOW", None),
        _ => ("unknown", None),
    }
}

/// A SECCOMP_RET_* value as the table's RESULT column shows it: `ALLOW`, `ERRNO(1 EPERM)`.
pub fn verdict(ret: u32) -> String {
    let (action, errno) = decode(ret);
    let short = action.strip_prefix("SCMP_ACT_").unwrap_or(action);
    match errno {
        Some(e) => format!("{short}({e}{})", errno_name(e).map(|n| format!(" {n}")).unwrap_or_default()),
        None => short.to_string(),
    }
}

fn describe(r: &Rule) -> String {
    if r.conds.is_empty() {
        return format!("{} {}", r.name, r.action);
    }
    let c: Vec<String> = r.conds.iter().map(|c| c.to_string()).collect();
    format!("{} {} if {}", r.name, r.action, c.join(" && "))
}

/// Evaluate `q` as a call from ABI `abi` against the compiled program `c` of profile `r`.
pub fn check(r: &Resolved, c: &Compiled, abi: Arch, q: &Query) -> Result<Answer> {
    let data = Data { nr: q.nr, arch: abi.audit, ip: 0, args: q.args };
    let run = |p: &[bpf::Insn]| bpf::run_counted(p, &data).map_err(|e| Error::new("check", "program", e));
    let (ret, steps) = run(&c.prog)?;
    let (main_ret, _) = run(&c.prog[c.prologue..])?;
    let (action, errno) = decode(ret);
    let mut matching: Vec<&Rule> = r
        .rules
        .iter()
        .filter(|rule| q.name.as_deref() == Some(rule.name.as_str()))
        // As the program compares them: on 32-bit ABIs, low words only. All 64 bits used to be compared
        // here, so a value whose high bits differ got the reason of another verdict than the program's.
        .filter(|rule| rule.conds.iter().all(|c| crate::gen::holds(c, abi, &q.args)))
        .collect();
    let low_word = abi.bits32 && matching.iter().any(|x| !x.conds.iter().all(|c| c.matches(q.args[c.index as usize])));
    // socketcall(SYS_SOCKET, …) on x86 (ipc(SHMGET, …) likewise): the program holds socket's rules there
    // too, without their conditions, since the call's own arguments are in memory behind a pointer
    // seccomp cannot read; an unconditional socketcall rule wins over them. Only rules named
    // `socketcall` used to be consulted, so an ALLOW that came from socket's rules read "default: no
    // rule names it", and a profile allowing socketcall outright gave no sign that socket's argument
    // checks (Docker's address families) do not hold for the calls it carries.
    let mut note = String::new();
    if let Some((mux, call)) = crate::gen::demultiplex(abi, q.nr as u32, q.args[0]) {
        let rules: Vec<&Rule> = r.rules.iter().filter(|x| x.name == call).collect();
        let sub = if mux == "socketcall" { format!("SYS_{}", call.to_uppercase()) } else { call.to_uppercase() };
        let behind = format!("passes {call}'s arguments behind a pointer seccomp cannot read");
        if matching.iter().any(|x| x.conds.is_empty()) {
            // Said only where it changes something: a condition, or another verdict than this one.
            if rules.iter().any(|x| !x.conds.is_empty() || x.action.ret() != ret) {
                let listed = rules.iter().map(|x| describe(x)).collect::<Vec<_>>().join("; ");
                let direct = crate::gen::syscall_nr(call, abi).map(|n| format!(" (nr {n})")).unwrap_or_default();
                note = format!(
                    ", whatever {call} call it carries: {call}'s rules ({listed}) hold for direct calls{direct} only, as {mux}({sub}, …) {behind}"
                );
            }
        } else if !rules.is_empty() {
            matching.extend(rules);
            note = format!(" (applied to {mux}({sub}, …) without conditions: it {behind})");
        }
    } else if let Some((mux, mux_nr, sub)) = q.name.as_deref().and_then(|n| crate::gen::multiplexer(abi, n)) {
        // The direct call's argument conditions (Docker's address families for socket) read as if they
        // held the operation, but the same one made through the multiplexer is decided without them.
        let call = q.name.as_deref().unwrap_or_default();
        let conditional = r.rules.iter().any(|x| x.name == call && !x.conds.is_empty());
        if conditional && q.nr as u32 != mux_nr {
            let via = Data { nr: mux_nr as i32, arch: abi.audit, ip: 0, args: [sub, 0, 0, 0, 0, 0] };
            let (via_ret, _) = bpf::run_counted(&c.prog, &via).map_err(|e| Error::new("check", "program", e))?;
            let name = if mux == "socketcall" { format!("SYS_{}", call.to_uppercase()) } else { call.to_uppercase() };
            note =
                format!("; {mux}({name}, …) (nr {mux_nr}) is not bound by {call}'s conditions: {}", verdict(via_ret));
        }
    }
    if low_word {
        note = format!(" ({} compares the low 32 bits of arguments only){note}", abi.name);
    }
    let in_filter = r.arches.iter().any(|a| a.audit == abi.audit);
    let (by, why) = if ret != main_ret {
        let max =
            c.known.iter().find(|(a, k)| a.audit == abi.audit && (q.nr as u32) >= k.base && (q.nr as u32) < k.limit);
        ("enosys", format!("newer than the profile: nr > {}", max.map(|(_, k)| k.max).unwrap_or(0)))
    } else if !in_filter {
        ("bad_arch", format!("{} is not in the filter", abi.name))
    } else if !matching.is_empty() && ret != r.default_action.ret() {
        ("rule", matching.iter().map(|r| describe(r)).collect::<Vec<_>>().join("; ") + &note)
    } else {
        let others: Vec<String> =
            r.rules.iter().filter(|rule| q.name.as_deref() == Some(rule.name.as_str())).map(describe).collect();
        let why = if others.is_empty() {
            "no rule names it".to_string()
        } else {
            format!("no rule matched: {}{note}", others.join("; "))
        };
        ("default", why)
    };
    Ok(Answer {
        syscall: q.name.clone(),
        nr: q.nr,
        arch: abi.name,
        args: q.args[..q.nargs].to_vec(),
        action,
        errno,
        errno_name: errno.and_then(errno_name),
        allowed: matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG"),
        by,
        why,
        ret,
        instructions_run: steps,
    })
}

/// Every system call number of `abi` that libseccomp can name.
pub fn all_queries(abi: Arch) -> Vec<Query> {
    let base = if abi.name == "x32" { X32_SYSCALL_BIT } else { 0 };
    // Numbers of every Linux ABI fit below 0x10000 above their base (MIPS starts at 4000/5000/6000).
    (0..0x2000u32)
        .filter_map(|i| {
            let nr = (base + i) as i32;
            let name = ScmpSyscall::from(nr).get_name_by_arch(abi.token).ok()?;
            Some(Query { name: Some(name), nr, args: [0; 6], nargs: 0 })
        })
        .collect()
}
