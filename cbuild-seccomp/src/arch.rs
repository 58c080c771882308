//! Architectures: the three spellings a profile uses (libseccomp's `SCMP_ARCH_X86_64`, libseccomp's short
//! `x86_64`, and the Go-style native name `amd64` that Docker's `includes.arches` compares against) and
//! the `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.

use libseccomp::ScmpArch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// `SCMP_ARCH_X86_64`: how `archMap` and OCI `architectures` spell it.
    pub scmp: &'static str,
    /// `x86_64`: libseccomp's name (and what `show` prints).
    pub name: &'static str,
    /// `amd64`: Docker's native name, what `includes.arches`/`excludes.arches` match.
    pub native: &'static str,
    /// `AUDIT_ARCH_*`: x32 shares x86_64's value and is told apart by bit 30 of the syscall number.
    pub audit: u32,
    pub token: ScmpArch,
    /// libseccomp's word size for the ABI: on 32-bit ABIs (x32 included, as libseccomp 2.5 defines it)
    /// only the low 32 bits of an argument are compared, with the profile's value truncated to 32 bits.
    pub bits32: bool,
    /// Big-endian ABIs put an argument's high word first in `seccomp_data`.
    pub big_endian: bool,
}

/// `__X32_SYSCALL_BIT`: x32 system calls are x86_64's audit arch with this bit set in the number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const fn a(scmp: &'static str, name: &'static str, native: &'static str, audit: u32, token: ScmpArch) -> Arch {
    // AUDIT_ARCH_* carries the ABI's traits: __AUDIT_ARCH_64BIT (bit 31) and __AUDIT_ARCH_LE (bit 30).
    // MIPS n32 (__AUDIT_ARCH_CONVENTION_MIPS64_N32, bit 29) is 32-bit on a 64-bit AUDIT_ARCH, and x32 uses
    // x86_64's AUDIT_ARCH: libseccomp handles both as 32-bit ABIs.
    let bits32 = audit & 0x8000_0000 == 0 || audit & 0x2000_0000 != 0 || matches!(token, ScmpArch::X32);
    Arch { scmp, name, native, audit, token, bits32, big_endian: audit & 0x4000_0000 == 0 }
}

pub const ARCHES: &[Arch] = &[
    a("SCMP_ARCH_X86", "x86", "x86", 0x4000_0003, ScmpArch::X86),
    a("SCMP_ARCH_X86_64", "x86_64", "amd64", 0xC000_003E, ScmpArch::X8664),
    a("SCMP_ARCH_X32", "x32", "x32", 0xC000_003E, ScmpArch::X32),
    a("SCMP_ARCH_ARM", "arm", "arm", 0x4000_0028, ScmpArch::Arm),
    a("SCMP_ARCH_AARCH64", "aarch64", "arm64", 0xC000_00B7, ScmpArch::Aarch64),
    a("SCMP_ARCH_MIPS", "mips", "mips", 0x0000_0008, ScmpArch::Mips),
    a("SCMP_ARCH_MIPS64", "mips64", "mips64", 0x8000_0008, ScmpArch::Mips64),
    a("SCMP_ARCH_MIPS64N32", "mips64n32", "mips64n32", 0xA000_0008, ScmpArch::Mips64N32),
    a("SCMP_ARCH_MIPSEL", "mipsel", "mipsel", 0x4000_0008, ScmpArch::Mipsel),
    a("SCMP_ARCH_MIPSEL64", "mipsel64", "mipsel64", 0xC000_0008, ScmpArch::Mipsel64),
    a("SCMP_ARCH_MIPSEL64N32", "mipsel64n32", "mipsel64n32", 0xE000_0008, ScmpArch::Mipsel64N32),
    a("SCMP_ARCH_PPC", "ppc", "ppc", 0x0000_0014, ScmpArch::Ppc),
    a("SCMP_ARCH_PPC64", "ppc64", "ppc64", 0x8000_0015, ScmpArch::Ppc64),
    a("SCMP_ARCH_PPC64LE", "ppc64le", "ppc64le", 0xC000_0015, ScmpArch::Ppc64Le),
    a("SCMP_ARCH_S390", "s390", "s390", 0x0000_0016, ScmpArch::S390),
    a("SCMP_ARCH_S390X", "s390x", "s390x", 0x8000_0016, ScmpArch::S390X),
    a("SCMP_ARCH_PARISC", "parisc", "parisc", 0x0000_000F, ScmpArch::Parisc),
    a("SCMP_ARCH_PARISC64", "parisc64", "parisc64", 0x8000_000F, ScmpArch::Parisc64),
    a("SCMP_ARCH_RISCV64", "riscv64", "riscv64", 0xC000_00F3, ScmpArch::Riscv64),
    a("SCMP_ARCH_LOONGARCH64", "loongarch64", "loong64", 0xC000_0102, ScmpArch::Loongarch64),
];

impl Arch {
    /// Any of the spellings, case-insensitively; Go's `386` and `loong64` too.
    pub fn parse(s: &str) -> Option<Arch> {
        let l = s.to_ascii_lowercase();
        let l = match l.as_str() {
            "386" | "i386" | "i686" => "x86",
            "loongarch64" => "loong64",
            other => other,
        };
        ARCHES.iter().find(|a| a.scmp.eq_ignore_ascii_case(s) || a.name == l || a.native == l).copied()
    }

    /// The architecture this binary was built for (and so the one it runs on).
    pub fn host() -> Arch {
        let name = match std::env::consts::ARCH {
            "x86" => "x86",
            "x86_64" => "x86_64",
            "arm" => "arm",
            "aarch64" => "aarch64",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "mips64" if cfg!(target_endian = "little") => "mipsel64",
            "mips64" => "mips64",
            "loongarch64" => "loongarch64",
            other => other,
        };
        Arch::parse(name).expect("a supported host architecture")
    }

    pub fn by_audit(audit: u32) -> Option<Arch> {
        ARCHES.iter().find(|a| a.audit == audit).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for s in ["SCMP_ARCH_X86_64", "x86_64", "amd64", "AMD64"] {
            assert_eq!(Arch::parse(s).unwrap().name, "x86_64", "{s}");
        }
        assert_eq!(Arch::parse("386").unwrap().name, "x86");
        assert_eq!(Arch::parse("arm64").unwrap().scmp, "SCMP_ARCH_AARCH64");
        assert!(Arch::parse("vax").is_none());
        let bits32: Vec<&str> = ARCHES.iter().filter(|a| a.bits32).map(|a| a.name).collect();
        assert_eq!(
            bits32,
            ["x86", "x32", "arm", "mips", "mips64n32", "mipsel", "mipsel64n32", "ppc", "s390", "parisc"]
        );
        let be: Vec<&str> = ARCHES.iter().filter(|a| a.big_endian).map(|a| a.name).collect();
        assert_eq!(be, ["mips", "mips64", "mips64n32", "ppc", "ppc64", "s390", "s390x", "parisc", "parisc64"]);
    }
}
