//! The teaching labs (scripts/lab/NN-*.sh), each run with `--check`: every claim of the seed they print a
//! measurement for must hold on this kernel (exit 1 otherwise). They make their own scratch dirs, network
//! namespace and cgroups and remove them; the test also checks that nothing of theirs is left mounted.

use cbuild_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn labs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".sh") && n.as_bytes()[0].is_ascii_digit()
        })
        .collect();
    v.sort();
    v
}

fn check(prefix: &str) {
    require_root();
    let lab = labs()
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no lab {prefix}-*.sh"));
    let o = run(Command::new("bash").arg(&lab).arg("--check").env("CBUILD_BIN", bin_dir()));
    let out = stdout(&o);
    assert!(o.status.success(), "{} --check failed:\n{out}\n{}", lab.display(), stderr(&o));
    assert!(out.contains("PASS"), "no claim was checked:\n{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let scratch = out.lines().find_map(|l| l.strip_prefix("scratch: ")).expect("the lab names its scratch dir");
    assert!(mounts_under(scratch).is_empty(), "{} left mounts: {:?}", lab.display(), mounts_under(scratch));
    assert!(!Path::new(scratch).exists(), "{} left {scratch}", lab.display());
}

#[test]
fn every_lab_has_a_test() {
    let names: Vec<String> = labs().iter().map(|p| p.file_name().unwrap().to_string_lossy()[..2].to_string()).collect();
    assert_eq!(
        names,
        ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13"],
        "add the new lab's test below"
    );
}

#[test]
fn lab01_container_is_a_process() {
    check("01");
}

#[test]
fn lab02_pid_namespace_and_init() {
    check("02");
}

#[test]
fn lab03_network_veth() {
    check("03");
}

#[test]
fn lab04_cgroups() {
    check("04");
}

#[test]
fn lab05_overlay_cow() {
    check("05");
}

#[test]
fn lab06_seccomp_blocks_mount() {
    check("06");
}

#[test]
fn lab07_capabilities() {
    check("07");
}

#[test]
fn lab08_inode_exhaustion() {
    check("08");
}

#[test]
fn lab09_user_namespace() {
    check("09");
}

#[test]
fn lab10_mount_namespace_and_proc() {
    check("10");
}

#[test]
fn lab11_namespace_cost() {
    check("11");
}

#[test]
fn lab12_full_container() {
    check("12");
}

#[test]
fn lab13_time_namespace() {
    check("13");
}
