//! Classic BPF as seccomp runs it: the file format of docs/ARCHITECTURE.md ("Seccomp programs"), an
//! interpreter over `struct seccomp_data` (so `check` answers from the compiled program itself, not from
//! a second reading of the profile), the ENOSYS prologue, and loading with `seccomp(2)`.

use crate::{Error, Result};

/// `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// BPF_MAXINSNS: the kernel refuses longer seccomp programs.
pub const MAX_INSNS: usize = 4096;

// The opcodes seccomp accepts (kernel/seccomp.c seccomp_check_filter), as class | size/op | source.
const LD_W_ABS: u16 = 0x20;
const LD_W_LEN: u16 = 0x80;
const LDX_W_LEN: u16 = 0x81;
const LD_IMM: u16 = 0x00;
const LDX_IMM: u16 = 0x01;
const LD_MEM: u16 = 0x60;
const LDX_MEM: u16 = 0x61;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const RET_K: u16 = 0x06;
const RET_A: u16 = 0x16;
const TAX: u16 = 0x07;
const TXA: u16 = 0x87;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;

pub fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Bytes → instructions, checking what the kernel and cbuild-ns check: a non-zero multiple of 8 bytes,
/// at most 4096 instructions.
pub fn from_bytes(b: &[u8], object: &str) -> Result<Vec<Insn>> {
    if b.is_empty() || !b.len().is_multiple_of(8) {
        return Err(Error::new("read", object, format!("{} bytes is not a non-zero multiple of 8", b.len())));
    }
    if b.len() / 8 > MAX_INSNS {
        return Err(Error::new("read", object, format!("{} instructions, the kernel takes {MAX_INSNS}", b.len() / 8)));
    }
    from_bytes_unbounded(b, object)
}

/// [`from_bytes`] without the length limit: for libseccomp's output, whose length is judged once the whole
/// program (chain and prologue) is assembled, so the error names the program's real size.
pub fn from_bytes_unbounded(b: &[u8], object: &str) -> Result<Vec<Insn>> {
    if b.is_empty() || !b.len().is_multiple_of(8) {
        return Err(Error::new("read", object, format!("{} bytes is not a non-zero multiple of 8", b.len())));
    }
    Ok(b.chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

pub fn to_bytes(prog: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for i in prog {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

/// `struct seccomp_data`: what a filter sees of one system call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl Data {
    /// The 32-bit word at byte offset `off`, in native byte order, as BPF_LD|BPF_W|BPF_ABS reads it.
    fn word(&self, off: u32) -> Option<u32> {
        let u64_word = |v: u64, second: bool| {
            let b = v.to_ne_bytes();
            let h = if second { 4 } else { 0 };
            u32::from_ne_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]])
        };
        Some(match off {
            0 => self.nr as u32,
            4 => self.arch,
            8 | 12 => u64_word(self.ip, off == 12),
            16..=60 if off.is_multiple_of(4) => u64_word(self.args[(off as usize - 16) / 8], off % 8 == 4),
            _ => return None,
        })
    }
}

/// Run `prog` over `d` and return the `SECCOMP_RET_*` value, as the kernel would. Programs libseccomp
/// writes use only a few opcodes; the rest of the seccomp subset is here so a hand-written file is judged
/// the same way.
pub fn run(prog: &[Insn], d: &Data) -> std::result::Result<u32, String> {
    run_counted(prog, d).map(|(ret, _)| ret)
}

/// [`run`], also returning how many instructions were executed: the cost of the call's path through
/// the filter (what the binary tree shortens).
pub fn run_counted(prog: &[Insn], d: &Data) -> std::result::Result<(u32, usize), String> {
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    // Every jump goes forward, so at most prog.len() steps.
    for steps in 1..=prog.len() + 1 {
        let i = *prog.get(pc).ok_or_else(|| format!("pc {pc} runs off the end"))?;
        pc += 1;
        let branch = |c: bool| if c { i.jt as usize } else { i.jf as usize };
        match i.code {
            LD_W_ABS => a = d.word(i.k).ok_or_else(|| format!("load at offset {}", i.k))?,
            LD_W_LEN => a = 64,
            LDX_W_LEN => x = 64,
            LD_IMM => a = i.k,
            LDX_IMM => x = i.k,
            LD_MEM => a = mem[(i.k & 15) as usize],
            LDX_MEM => x = mem[(i.k & 15) as usize],
            ST => mem[(i.k & 15) as usize] = a,
            STX => mem[(i.k & 15) as usize] = x,
            RET_K => return Ok((i.k, steps)),
            RET_A => return Ok((a, steps)),
            TAX => x = a,
            TXA => a = x,
            JA => pc += i.k as usize,
            JEQ_K => pc += branch(a == i.k),
            JGT_K => pc += branch(a > i.k),
            JGE_K => pc += branch(a >= i.k),
            JSET_K => pc += branch(a & i.k != 0),
            0x1d => pc += branch(a == x),
            0x2d => pc += branch(a > x),
            0x3d => pc += branch(a >= x),
            0x4d => pc += branch(a & x != 0),
            // ALU with K (0x04..0xa4) and with X (0x0c..0xac).
            c if c & 0x07 == 0x04 => {
                let v = if c & 0x08 != 0 { x } else { i.k };
                a = match c & 0xf0 {
                    0x00 => a.wrapping_add(v),
                    0x10 => a.wrapping_sub(v),
                    0x20 => a.wrapping_mul(v),
                    0x30 => a.checked_div(v).ok_or("division by zero")?,
                    0x40 => a | v,
                    0x50 => a & v,
                    0x60 => a.checked_shl(v).unwrap_or(0),
                    0x70 => a.checked_shr(v).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(v).ok_or("modulo by zero")?,
                    0xa0 => a ^ v,
                    _ => return Err(format!("opcode {c:#x}")),
                };
            }
            c => return Err(format!("opcode {c:#x} not allowed in seccomp")),
        }
    }
    Err("no return".into())
}

/// One architecture's part of the ENOSYS prologue: calls numbered above `max` (in `[base, limit)`) get
/// ENOSYS; calls outside that range try the next block (x32 shares x86_64's AUDIT_ARCH), then the main
/// program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub audit: u32,
    /// Range of syscall numbers this entry covers (x32 on x86_64: 0x40000000..; arm private calls excluded).
    pub base: u32,
    pub limit: u32,
    pub max: u32,
}

const RET_ERRNO_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

/// Prepend a prologue so that a call newer than everything the profile names fails with ENOSYS instead of
/// the default action. That is what runc's patchbpf does: a default of EPERM on a syscall the profile has
/// never heard of (say, a new `clone3`-like call) tells libc "forbidden", while ENOSYS tells it "not
/// there", and libc falls back to the old call the profile does allow. Per architecture:
///
/// ```text
///   ld  [4]                      ; seccomp_data.arch
///   jeq AUDIT_ARCH, 0, next      ; not this arch: next block
///   ld  [0]                      ; seccomp_data.nr
///   jge base, 0, main            ; (only when base > 0) below the range: main program
///   jge limit, main, 0           ; (only when limit < 2^32-1) at or above the range's end: main program
///   jgt max, enosys, main
/// next: ...
///   ja  main
/// enosys: ret ERRNO(ENOSYS)
/// main: <libseccomp's program, unchanged: its jumps are relative, so shifting it is safe>
/// ```
pub fn enosys_prologue(known: &[Known]) -> Vec<Insn> {
    let block_len = |k: &Known| 4 + (k.base > 0) as usize + (k.limit < u32::MAX) as usize;
    let total: usize = known.iter().map(block_len).sum::<usize>() + 2;
    let enosys = total - 1;
    let main = total;
    let mut p = Vec::with_capacity(total);
    for k in known {
        let next = p.len() + block_len(k);
        let rel = |from: usize, to: usize| (to - from - 1) as u8;
        p.push(stmt(LD_W_ABS, 4));
        let at = p.len();
        p.push(jump(JEQ_K, k.audit, 0, rel(at, next)));
        p.push(stmt(LD_W_ABS, 0));
        if k.base > 0 {
            let at = p.len();
            p.push(jump(JGE_K, k.base, 0, rel(at, next)));
        }
        if k.limit < u32::MAX {
            let at = p.len();
            p.push(jump(JGE_K, k.limit, rel(at, next), 0));
        }
        let at = p.len();
        p.push(jump(JGT_K, k.max, rel(at, enosys), rel(at, main)));
    }
    p.push(stmt(JA, 1));
    p.push(stmt(RET_K, RET_ERRNO_ENOSYS));
    debug_assert_eq!(p.len(), total);
    p
}

/// `prctl(PR_SET_NO_NEW_PRIVS)` then `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`.
pub fn load(prog: &[Insn], flags: u32, no_new_privs: bool) -> Result<()> {
    if no_new_privs {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::new("load", "no_new_privs", std::io::Error::last_os_error()));
        }
    }
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: Insn is #[repr(C)] with sock_filter's layout; fprog points into `prog`, alive for the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &fprog as *const libc::sock_fprog)
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let mut err = Error::new("load", format!("seccomp filter of {} instructions", prog.len()), &e);
        if e.raw_os_error() == Some(libc::EACCES) {
            err = err.hint("without no_new_privs, loading a filter needs CAP_SYS_ADMIN");
        }
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = 0x7fff_0000;

    #[test]
    fn bytes_roundtrip_and_limits() {
        let p = vec![stmt(LD_W_ABS, 0), jump(JEQ_K, 39, 0, 1), stmt(RET_K, ALLOW), stmt(RET_K, 0)];
        assert_eq!(from_bytes(&to_bytes(&p), "f").unwrap(), p);
        assert!(from_bytes(&[0; 7], "f").is_err());
        assert!(from_bytes(&[], "f").is_err());
        assert!(from_bytes(&vec![0; 8 * (MAX_INSNS + 1)], "f").is_err());
    }

    #[test]
    fn prologue_sends_new_calls_to_enosys() {
        let main = [stmt(RET_K, ALLOW)];
        let known = [
            Known { audit: 0xC000_003E, base: 0, limit: 0x4000_0000, max: 400 },
            Known { audit: 0xC000_003E, base: 0x4000_0000, limit: u32::MAX, max: 0x4000_0200 },
        ];
        let mut p = enosys_prologue(&known);
        p.extend_from_slice(&main);
        let call = |nr: u32, arch: u32| run(&p, &Data { nr: nr as i32, arch, ..Data::default() }).unwrap();
        assert_eq!(call(39, 0xC000_003E), ALLOW);
        assert_eq!(call(400, 0xC000_003E), ALLOW);
        assert_eq!(call(401, 0xC000_003E), RET_ERRNO_ENOSYS);
        assert_eq!(call(0x4000_0010, 0xC000_003E), ALLOW);
        assert_eq!(call(0x4000_0201, 0xC000_003E), RET_ERRNO_ENOSYS);
        assert_eq!(call(9999, 0x4000_0003), ALLOW, "other arches go to the main program");
    }

    #[test]
    fn masked_jset_and_alu() {
        // A = arg0 low word & 0xff; ret A
        let p = [stmt(LD_W_ABS, 16), stmt(0x54, 0xff), stmt(RET_A, 0)];
        let d = Data { args: [0x1234, 0, 0, 0, 0, 0], ..Data::default() };
        assert_eq!(run(&p, &d).unwrap(), 0x34);
    }
}
