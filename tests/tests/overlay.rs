//! cbuild-overlay against the real kernel: the overlay operation table observed, `diff`, 500-layer
//! mounts by both the new mount API and the mount(2) fallback, `inspect` numbers against find/df, the
//! inode-exhaustion warning, and every bad-input case (exit 125, one line naming the dir, nothing left).
//!
//! Runtime needs: the cbuild-overlay binary and a busybox userland (find, wc, stat, df, sh), so the same
//! tests run in the kernel-6.1 VM (CBUILD_IN_VM=1), where the mount(2) fallback is the default path.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cbuild_tests::*;

const TOOL: &str = "cbuild-overlay";

fn ov(sb: &Sandbox) -> Command {
    tool(TOOL, sb)
}

/// Run with stdin from a string (for `--lower-from -`).
fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "want success, got {:?}\nstdout: {}\nstderr: {}", o.status, stdout(o), stderr(o));
    stdout(o)
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy().to_string();
    mounts_under(&p).contains(&p)
}

/// (major, minor) of the running kernel.
fn kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r.trim().split(|c: char| !c.is_ascii_digit()).map(|s| s.parse().unwrap_or(0));
    (it.next().unwrap(), it.next().unwrap())
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the stated length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

fn is_whiteout(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Mount a private tmpfs (`opts` e.g. "nr_inodes=64") at `dir`; the Sandbox unmounts it on drop.
fn tmpfs(dir: &Path, opts: &str) {
    std::fs::create_dir_all(dir).unwrap();
    nix::mount::mount(Some("cbuild-test"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(opts))
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
}

/// Assert a failed invocation left nothing mounted under the sandbox and none of `absent` exists.
#[track_caller]
fn assert_nothing_left(sb: &Sandbox, before: &[String], absent: &[&Path]) {
    let now = mounts_under(&sb.path().to_string_lossy());
    assert_eq!(now, before, "mounts under the sandbox changed");
    for p in absent {
        assert!(std::fs::symlink_metadata(p).is_err(), "{} was left behind", p.display());
    }
    assert!(!sb.state.join(".overlay").exists(), "aux dir left in state");
}

/// The two-layer image the operation-table test uses. Returns (top, bottom).
fn two_layers(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let top = sb.path().join("l-top");
    let bottom = sb.path().join("l-bottom");
    write(&bottom.join("shared"), "bottom\n");
    write(&bottom.join("only_low"), "low\n");
    write(&bottom.join("dir/x"), "x\n");
    write(&top.join("shared"), "top\n");
    write(&top.join("etc/conf"), "orig\n");
    write(&top.join("gone"), "soon deleted\n");
    write(&top.join("dir/y"), "y\n");
    (top, bottom)
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn operation_table_observed_and_diff_reports_it() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let (upper, work, merged) = (sb.path().join("c/upper"), sb.path().join("c/work"), sb.path().join("c/merged"));
    ok(&run(ov(&sb).arg("mount").arg("--lower").arg(format!("{}:{}", top.display(), bottom.display())).args([
        "--upper".as_ref(),
        upper.as_os_str(),
        "--work".as_ref(),
        work.as_os_str(),
        merged.as_os_str(),
    ])));
    assert!(is_mounted(&merged));

    // Read searches top-down: the top layer's copy wins; a bottom-only file shows through.
    assert_eq!(std::fs::read_to_string(merged.join("shared")).unwrap(), "top\n");
    assert_eq!(std::fs::read_to_string(merged.join("only_low")).unwrap(), "low\n");

    // A new file lands in upper, nowhere else.
    std::fs::write(merged.join("new"), "n\n").unwrap();
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "n\n");
    assert!(!top.join("new").exists() && !bottom.join("new").exists());

    // Modifying a lower file copies it up; the lower copy is untouched.
    let mut f = std::fs::OpenOptions::new().append(true).open(merged.join("etc/conf")).unwrap();
    std::io::Write::write_all(&mut f, b"changed\n").unwrap();
    drop(f);
    assert_eq!(std::fs::read_to_string(upper.join("etc/conf")).unwrap(), "orig\nchanged\n");
    assert_eq!(std::fs::read_to_string(top.join("etc/conf")).unwrap(), "orig\n");

    // Deleting a lower file leaves a 0/0 character-device whiteout in upper; the lower keeps the file.
    std::fs::remove_file(merged.join("gone")).unwrap();
    assert!(is_whiteout(&upper.join("gone")), "no whiteout for /gone");
    assert!(top.join("gone").exists());
    assert!(!merged.join("gone").exists());

    // Deleting a lower dir and making it again makes it opaque: lower entries no longer show.
    std::fs::remove_dir_all(merged.join("dir")).unwrap();
    std::fs::create_dir(merged.join("dir")).unwrap();
    std::fs::write(merged.join("dir/z"), "z\n").unwrap();
    assert_eq!(xattr(&upper.join("dir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(names(&merged.join("dir")), BTreeSet::from(["z".to_string()]));

    // A listing merges every layer and hides whiteouts.
    let want: BTreeSet<String> = ["shared", "only_low", "etc", "dir", "new"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names(&merged), want);

    // diff reports each of these, in path order (lowers taken from the mount using this upper).
    let expected = "opaque /dir\nadded /dir/z\nmodified /etc\nmodified /etc/conf\ndeleted /gone\nadded /new\n";
    assert_eq!(ok(&run(ov(&sb).arg("diff").arg(&upper))), expected);

    let json = ok(&run(ov(&sb).arg("diff").arg("--json").arg(&upper)));
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["change"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
                r["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("opaque", "/dir", "dir"),
        ("added", "/dir/z", "file"),
        ("modified", "/etc", "dir"),
        ("modified", "/etc/conf", "file"),
        ("deleted", "/gone", "whiteout"),
        ("added", "/new", "file"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);

    ok(&run(ov(&sb).arg("umount").arg(&merged)));
    assert!(!is_mounted(&merged));

    // Unmounted: the same answer from explicit lowers, and from overlay's copy-up xattrs alone.
    let given =
        ok(&run(ov(&sb).arg("diff").arg(&upper).arg("--lower").arg(format!("{}:{}", top.display(), bottom.display()))));
    assert_eq!(given, expected);
    let from_xattrs = ok(&run(ov(&sb).arg("diff").arg(&upper)));
    assert!(from_xattrs.contains("added /new\n"), "{from_xattrs}");
    // Overlay records a copy-up's origin only when the lower filesystem can encode file handles.
    if xattr(&upper.join("etc/conf"), "trusted.overlay.origin").is_some() {
        assert!(from_xattrs.contains("modified /etc/conf\n"), "{from_xattrs}");
    }
    assert!(from_xattrs.contains("deleted /gone\n") && from_xattrs.contains("opaque /dir\n"), "{from_xattrs}");
}

#[test]
fn read_only_without_upper() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let merged = sb.path().join("ro");
    let o = run_with_stdin(
        ov(&sb).args(["mount", "--lower-from", "-"]).arg(&merged),
        &format!("{}\n{}\n", top.display(), bottom.display()),
    );
    ok(&o);
    let err = std::fs::write(merged.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(std::fs::read_to_string(merged.join("shared")).unwrap(), "top\n");
    ok(&run(ov(&sb).args(["umount", "--lazy"]).arg(&merged)));
    assert!(!is_mounted(&merged));
}

/// 500 layers whose absolute paths are far longer than a page.
fn many_layers(sb: &Sandbox, n: usize) -> (Vec<PathBuf>, String) {
    let base = sb.path().join("layers-with-a-deliberately-long-directory-name");
    let mut dirs = vec![];
    for i in 0..n {
        let d = base.join(format!("layer-{i:04}-padding-padding-padding"));
        write(&d.join(format!("f{i}")), "");
        std::fs::write(d.join("who"), format!("{i}\n")).unwrap();
        dirs.push(d);
    }
    let list: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    assert!(list.len() > 4096 * 4, "layer list must exceed a page by far");
    (dirs, list)
}

fn mount_many(legacy: bool) {
    require_root();
    let sb = Sandbox::new();
    let (dirs, list) = many_layers(&sb, 500);
    let (upper, work, merged) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    let mut cmd = ov(&sb);
    if legacy {
        cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
    }
    cmd.args(["-v", "mount", "--lower-from", "-", "--upper"]).arg(&upper).arg("--work").arg(&work).arg(&merged);
    let o = run_with_stdin(&mut cmd, &list);
    ok(&o);
    let steps = stderr(&o);
    if legacy || kernel() < (6, 8) {
        assert!(steps.contains("step: mount: ") && steps.contains("mount(2)"), "want the mount(2) path: {steps}");
        assert!(!steps.contains("lowerdir+"), "{steps}");
    } else {
        assert_eq!(steps.matches("step: fsconfig: lowerdir+=").count(), 500, "want one lowerdir+ per layer");
        assert!(steps.contains("step: move_mount: "), "{steps}");
    }

    // Every layer is there, the top one wins.
    assert_eq!(std::fs::read_to_string(merged.join("who")).unwrap(), "0\n");
    assert_eq!(std::fs::read_dir(&merged).unwrap().count(), 501);
    assert!(merged.join("f499").exists());
    std::fs::write(merged.join("f250"), "written").unwrap();
    assert_eq!(std::fs::read_to_string(upper.join("f250")).unwrap(), "written");

    // ls shows the mount with its 500 layers, resolved to the dirs given, in order.
    let ls = ok(&run(ov(&sb).args(["ls", "--json"])));
    let m: serde_json::Value = ls
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["target"] == merged.to_string_lossy().as_ref())
        .unwrap_or_else(|| panic!("{} not in ls: {ls}", merged.display()));
    let lower: Vec<String> = m["lower"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let want: Vec<String> = dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect();
    assert_eq!(lower, want);
    assert_eq!(m["upper"], upper.to_string_lossy().as_ref());
    let human = ok(&run(ov(&sb).arg("ls")));
    assert!(human.lines().any(|l| l.starts_with(merged.to_str().unwrap()) && l.contains(" 500 ")), "{human}");

    ok(&run(ov(&sb).arg("umount").arg(&merged)));
    assert!(!is_mounted(&merged));
    assert!(!sb.state.join(".overlay").exists(), "the legacy layer links must go with the mount");
}

#[test]
fn five_hundred_layers_new_api() {
    mount_many(false);
}

#[test]
fn five_hundred_layers_legacy_mount2() {
    mount_many(true);
}

fn too_many(legacy: bool) {
    require_root();
    let sb = Sandbox::new();
    let (dirs, list) = many_layers(&sb, 501);
    let before = mounts_under(&sb.path().to_string_lossy());
    let merged = sb.path().join("new/m");
    let mut cmd = ov(&sb);
    if legacy {
        cmd.arg("mount").arg("--legacy-api");
    } else {
        cmd.arg("mount");
    }
    // With a tmpfs upper too: the failure must also undo the tmpfs, the aux dir and the layer links.
    cmd.args(["--tmpfs-upper=8m", "--lower-from", "-"]).arg(&merged);
    let o = run_with_stdin(&mut cmd, &list);
    assert_tool_error(&o, TOOL, "too many lower layers");
    let line = stderr(&o).lines().next().unwrap().to_string();
    assert!(line.contains(dirs[500].to_str().unwrap()) && line.contains("500"), "{line}");
    assert_nothing_left(&sb, &before, &[&sb.path().join("new")]);
}

#[test]
fn too_many_layers_new_api() {
    too_many(false);
}

#[test]
fn too_many_layers_legacy() {
    too_many(true);
}

#[test]
fn bad_input_missing_lower_dir() {
    require_root();
    let sb = Sandbox::new();
    let (top, _) = two_layers(&sb);
    let missing = sb.path().join("no-such-layer");
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u, w, m) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    let o = run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(format!("{}:{}", top.display(), missing.display()))
        .arg("--upper")
        .arg(&u)
        .arg("--work")
        .arg(&w)
        .arg(&m));
    assert_tool_error(&o, TOOL, &format!("lowerdir: {}: No such file or directory", missing.display()));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    assert_nothing_left(&sb, &before, &[&u, &w, &m]);
}

#[test]
fn bad_input_upper_and_work_on_different_filesystems() {
    require_root();
    let sb = Sandbox::new();
    let (top, _) = two_layers(&sb);
    let fs = sb.path().join("other-fs");
    tmpfs(&fs, "size=1m");
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u, w, m) = (fs.join("upper"), sb.path().join("work"), sb.path().join("m"));
    let o = run(ov(&sb).arg("mount").arg("--lower").arg(&top).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m));
    assert_tool_error(
        &o,
        TOOL,
        &format!("workdir: {}: not on the same mount as the upper dir {}", w.display(), u.display()),
    );
    assert_nothing_left(&sb, &before, &[&u, &w, &m]);
}

#[test]
fn bad_input_work_inside_upper() {
    require_root();
    let sb = Sandbox::new();
    let (top, _) = two_layers(&sb);
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u, m) = (sb.path().join("c/upper"), sb.path().join("c/m"));
    let w = u.join("work");
    let o = run(ov(&sb).arg("mount").arg("--lower").arg(&top).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m));
    assert_tool_error(&o, TOOL, &format!("workdir: {}: inside the upper dir {}", w.display(), u.display()));
    assert_nothing_left(&sb, &before, &[&sb.path().join("c")]);
}

#[test]
fn bad_input_upper_on_overlay() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let first = sb.path().join("first");
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(&bottom)
        .arg("--upper")
        .arg(sb.path().join("u1"))
        .arg("--work")
        .arg(sb.path().join("w1"))
        .arg(&first)));
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u, w, m) = (first.join("upper"), first.join("work"), sb.path().join("m2"));
    let o = run(ov(&sb).arg("mount").arg("--lower").arg(&top).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m));
    assert_tool_error(&o, TOOL, &format!("upperdir: {}: on an overlay filesystem", u.display()));
    assert_nothing_left(&sb, &before, &[&u, &w, &m]);
    ok(&run(ov(&sb).arg("umount").arg(&first)));
}

#[test]
fn bad_input_target_already_a_mount_point() {
    require_root();
    let sb = Sandbox::new();
    let (top, _) = two_layers(&sb);
    // A name a shell would split and unquote: the hint's command must paste as one word.
    let m = sb.path().join("busy $it's");
    tmpfs(&m, "size=1m");
    std::fs::write(m.join("mine"), "keep").unwrap();
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u, w) = (sb.path().join("u"), sb.path().join("w"));
    let o = run(ov(&sb).arg("mount").arg("--lower").arg(&top).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m));
    assert_tool_error(&o, TOOL, &format!("target: {}: already a mount point", m.display()));
    let err = stderr(&o);
    let word = err
        .lines()
        .nth(1)
        .and_then(|h| h.strip_prefix("hint: unmount it first (cbuild-overlay umount "))
        .and_then(|h| h.strip_suffix(") or pick another dir"))
        .unwrap_or_else(|| panic!("{err}"));
    let sh = run(Command::new("sh").arg("-c").arg(format!("printf %s {word}")));
    assert_eq!(stdout(&sh), m.to_str().unwrap(), "the hint's word is not the path to a shell: {word}");
    assert_nothing_left(&sb, &before, &[&u, &w]);
    assert_eq!(std::fs::read_to_string(m.join("mine")).unwrap(), "keep", "the existing mount was touched");
}

#[test]
fn bad_input_other_cases() {
    require_root();
    let sb = Sandbox::new();
    let not_overlay = sb.path().join("plain");
    std::fs::create_dir(&not_overlay).unwrap();
    let o = run(ov(&sb).arg("umount").arg(&not_overlay));
    assert_tool_error(&o, TOOL, &format!("umount: {}: not an overlay mount point", not_overlay.display()));
    let o = run(ov(&sb).arg("inspect").arg(&not_overlay));
    assert_tool_error(&o, TOOL, &format!("inspect: {}: not an overlay mount point", not_overlay.display()));
    let o = run(ov(&sb).args(["mount", "--tmpfs-upper=lots", "--lower"]).arg(&not_overlay).arg(sb.path().join("m")));
    assert_tool_error(&o, TOOL, "tmpfs: lots: not a size");
    let o = run(ov(&sb)
        .args(["mount", "--lower"])
        .arg(&not_overlay)
        .arg("--upper")
        .arg(sb.path().join("u"))
        .arg(sb.path().join("m")));
    assert_tool_error(&o, TOOL, "--upper needs --work too");
    let o = run(ov(&sb).args(["mount", "--lower"]).arg(&not_overlay).arg(sb.path().join("m")));
    assert_tool_error(
        &o,
        TOOL,
        &format!("lowerdir: {}: a read-only overlay needs at least two", not_overlay.display()),
    );
    let o = run(ov(&sb).args(["mount", "--no-such-flag"]));
    assert_tool_error(&o, TOOL, "args: ");
    assert!(!sb.path().join("m").exists() && !sb.path().join("u").exists());
}

#[test]
fn tmpfs_upper_is_private_and_goes_with_umount() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let m = sb.path().join("throwaway");
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--tmpfs-upper=4m")
        .arg("--lower")
        .arg(format!("{}:{}", top.display(), bottom.display()))
        .arg(&m)));
    std::fs::write(m.join("scratch"), "s").unwrap();
    std::fs::remove_file(m.join("only_low")).unwrap();

    let info: serde_json::Value =
        serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
    let upper = PathBuf::from(info["upper"].as_str().unwrap());
    assert!(upper.starts_with(sb.state.join(".overlay")), "upper {} not in the aux dir", upper.display());
    assert_eq!(info["layers"][0]["role"], "upper");
    assert_eq!(info["layers"][0]["fs"]["fs_type"], "tmpfs");
    assert!(info["layers"][0]["fs"]["bytes_total"].as_u64().unwrap() <= 4 << 20);
    assert_eq!(ok(&run(ov(&sb).arg("diff").arg(&upper))), "deleted /only_low\nadded /scratch\n");

    ok(&run(ov(&sb).arg("umount").arg(&m)));
    assert_eq!(mounts_under(&sb.path().to_string_lossy()), Vec::<String>::new());
    assert!(!sb.state.join(".overlay").exists());
    assert!(m.exists(), "the target dir stays (umount removes only what it mounted)");
}

#[test]
fn paths_with_spaces_commas_and_colons() {
    require_root();
    let sb = Sandbox::new();
    for legacy in [false, true] {
        let a = sb.path().join("with space, comma: colon");
        let b = sb.path().join("tab\there");
        write(&a.join("a"), "a");
        write(&b.join("b"), "b");
        let m = sb.path().join("merged dir");
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        if legacy {
            ok(&run_with_stdin(
                cmd.args(["mount", "--lower-from", "-"]).arg(&m),
                &format!("{}\n{}\n", a.display(), b.display()),
            ));
        } else {
            // --lower takes overlay's own escape for a colon in a name.
            let escaped = a.to_str().unwrap().replace(':', "\\:");
            ok(&run(cmd.arg("mount").arg("--lower").arg(format!("{escaped}:{}", b.display())).arg(&m)));
        }
        assert!(m.join("a").exists() && m.join("b").exists());
        let info: serde_json::Value =
            serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
        assert_eq!(info["target"], m.to_string_lossy().as_ref());
        assert_eq!(info["lower"][0], a.to_string_lossy().as_ref(), "legacy={legacy}");
        assert_eq!(info["lower"][1], b.to_string_lossy().as_ref(), "legacy={legacy}");
        assert_eq!(info["layers"][0]["files"], 1);
        ok(&run(ov(&sb).arg("umount").arg(&m)));
    }
}

/// `sh -c CMD`, its stdout trimmed (busybox or GNU, both give the same numbers).
fn sh(cmd: &str) -> String {
    let o = run(Command::new("sh").arg("-c").arg(cmd));
    assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn inspect_numbers_match_find_and_df() {
    require_root();
    let sb = Sandbox::new();
    // A private filesystem, so nothing else changes its free inodes between our reading and df's.
    let fs = sb.path().join("fs");
    tmpfs(&fs, "size=8m,nr_inodes=500");
    let (l1, l2) = (fs.join("l1"), fs.join("l2"));
    write(&l1.join("a/b/c"), "hello");
    write(&l1.join("a/d"), &"x".repeat(10_000));
    std::os::unix::fs::symlink("a/d", l1.join("link")).unwrap();
    write(&l2.join("z"), &"y".repeat(123));
    std::fs::create_dir_all(l2.join("empty/dir")).unwrap();
    let (u, w, m) = (fs.join("u"), fs.join("w"), sb.path().join("m"));
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(format!("{}:{}", l1.display(), l2.display()))
        .arg("--upper")
        .arg(&u)
        .arg("--work")
        .arg(&w)
        .arg(&m)));
    std::fs::write(m.join("new"), "12345678").unwrap();
    std::fs::remove_file(m.join("z")).unwrap();

    let info: serde_json::Value =
        serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
    let layers = info["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers.iter().map(|l| l["role"].as_str().unwrap()).collect::<Vec<_>>(), ["upper", "lower", "lower"]);
    for (l, dir) in layers.iter().zip([&u, &l1, &l2]) {
        assert_eq!(l["path"], dir.to_string_lossy().as_ref());
        let d = dir.display();
        assert_eq!(l["inodes"].to_string(), sh(&format!("find '{d}' | wc -l")), "inodes of {d}");
        assert_eq!(l["files"].to_string(), sh(&format!("find '{d}' -type f | wc -l")), "files of {d}");
        assert_eq!(l["dirs"].to_string(), sh(&format!("find '{d}' -type d | wc -l")), "dirs of {d}");
        let bytes: u64 =
            sh(&format!("find '{d}' -type f -exec stat -c %s {{}} +")).lines().map(|s| s.parse::<u64>().unwrap()).sum();
        assert_eq!(l["bytes"].as_u64().unwrap(), bytes, "bytes of {d}");
        // df -i: Filesystem Inodes Used Free Use% Mounted-on.
        let df = sh(&format!("df -P -i '{d}' | tail -n 1"));
        let f: Vec<&str> = df.split_whitespace().collect();
        assert_eq!(l["fs"]["inodes_total"].to_string(), f[1], "df -i total for {d}: {df}");
        assert_eq!(l["fs"]["inodes_free"].to_string(), f[3], "df -i free for {d}: {df}");
        assert_eq!(l["fs"]["fs_type"], "tmpfs");
    }
    assert_eq!(layers[0]["whiteouts"], 1);
    assert_eq!(layers[1]["symlinks"], 1);
    assert!(info["warnings"].as_array().unwrap().is_empty());

    // The human table has one row per layer.
    let table = ok(&run(ov(&sb).arg("inspect").arg(&m)));
    for dir in [&u, &l1, &l2] {
        assert!(table.lines().any(|r| r.ends_with(dir.to_str().unwrap())), "{table}");
    }
    ok(&run(ov(&sb).arg("umount").arg(&m)));
}

#[test]
fn inspect_warns_on_inode_exhaustion() {
    require_root();
    let sb = Sandbox::new();
    let (top, _) = two_layers(&sb);
    let fs = sb.path().join("tiny");
    tmpfs(&fs, "size=4m,nr_inodes=40");
    let m = sb.path().join("m");
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(&top)
        .arg("--upper")
        .arg(fs.join("u"))
        .arg("--work")
        .arg(fs.join("w"))
        .arg(&m)));

    let quiet = run(ov(&sb).arg("inspect").arg(&m));
    ok(&quiet);
    assert!(!stderr(&quiet).contains("inodes:"), "warned too early: {}", stderr(&quiet));

    // Fill the upper's filesystem through the container until it is out of inodes.
    let mut made = 0;
    for i in 0..100 {
        match std::fs::write(m.join(format!("f{i}")), "") {
            Ok(()) => made += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    assert!(made > 0 && made < 100, "made {made}");

    let o = run(ov(&sb).arg("inspect").arg("--json").arg(&m));
    let info: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let warnings = info["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().starts_with(&format!("{}: ", fs.join("u").display())), "{warnings:?}");
    assert!(info["layers"][0]["fs"]["inodes_used_percent"].as_f64().unwrap() > 90.0);
    let err = stderr(&o);
    assert!(err.starts_with(&format!("{TOOL}: inodes: {}", fs.join("u").display())) && err.contains("ENOSPC"), "{err}");
    ok(&run(ov(&sb).arg("umount").arg(&m)));
}

#[test]
fn userxattr_mount_marks_opaque_in_user_namespace() {
    require_root();
    let sb = Sandbox::new();
    // user.* xattrs are needed on the upper's filesystem (tmpfs has them only from 6.6).
    let probe = sb.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and a 1-byte value.
    let r = unsafe { libc::setxattr(c.as_ptr(), c"user.cbuild".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if r != 0 {
        eprintln!("skipped: the sandbox's filesystem has no user xattrs");
        return;
    }
    let (top, _) = two_layers(&sb);
    let (u, w, m) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--userxattr")
        .arg("--lower")
        .arg(&top)
        .arg("--upper")
        .arg(&u)
        .arg("--work")
        .arg(&w)
        .arg(&m)));
    std::fs::remove_dir_all(m.join("dir")).unwrap();
    std::fs::create_dir(m.join("dir")).unwrap();
    assert_eq!(xattr(&u.join("dir"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&u.join("dir"), "trusted.overlay.opaque"), None);
    assert_eq!(ok(&run(ov(&sb).arg("diff").arg(&u))), "opaque /dir\n");
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    assert_eq!(ok(&run(ov(&sb).args(["diff", "--userxattr"]).arg(&u))), "opaque /dir\n");
}

#[test]
fn diff_does_not_follow_symlinks_or_forge_lines() {
    require_root();
    let sb = Sandbox::new();
    let upper = sb.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    // A container can leave anything in its upper dir: a symlink to a host dir, a name with a newline.
    std::os::unix::fs::symlink("/etc", upper.join("evil")).unwrap();
    std::fs::write(upper.join("two\nadded forged"), "").unwrap();
    let out = ok(&run(ov(&sb).arg("diff").arg(&upper)));
    assert_eq!(out, "added /evil\nadded /two\\012added forged\n");
    let json = ok(&run(ov(&sb).arg("diff").arg("--json").arg(&upper)));
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["type"], "symlink");
    assert_eq!(rows[1]["path"], "/two\nadded forged");
}

#[test]
fn feature_flags_pass_through_and_show_in_diff() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    write(&top.join("big"), &"b".repeat(100_000));
    let (u, w, m) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    ok(&run(ov(&sb)
        .args(["mount", "--metacopy", "--redirect-dir", "--volatile", "--lower"])
        .arg(format!("{}:{}", top.display(), bottom.display()))
        .arg("--upper")
        .arg(&u)
        .arg("--work")
        .arg(&w)
        .arg(&m)));
    let ls = ok(&run(ov(&sb).args(["ls", "--json"])));
    let entry: serde_json::Value = ls
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["target"] == m.to_string_lossy().as_ref())
        .unwrap();
    let opts: Vec<&str> = entry["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    for want in ["metacopy=on", "redirect_dir=on"] {
        assert!(opts.contains(&want), "{want} missing from {opts:?}");
    }
    // Shown as `volatile` before 6.6 (?), `fsync=volatile` after.
    assert!(opts.iter().any(|o| *o == "volatile" || *o == "fsync=volatile"), "volatile missing from {opts:?}");

    // metacopy: a chmod copies up only metadata; the data stays in the lower layer.
    std::fs::set_permissions(m.join("big"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // (A block or two may hold the xattrs; the 100 kB of data would need 25.)
    let md = std::fs::metadata(u.join("big")).unwrap();
    assert_eq!(md.len(), 100_000);
    assert!(md.blocks() * 512 < 20_000, "data was copied up: {} blocks", md.blocks());
    assert!(xattr(&u.join("big"), "trusted.overlay.metacopy").is_some());
    // redirect_dir: renaming a lower dir records where its contents come from instead of copying them.
    std::fs::rename(m.join("dir"), m.join("moved")).unwrap();
    assert_eq!(names(&m.join("moved")), BTreeSet::from(["x".to_string(), "y".to_string()]));
    assert!(xattr(&u.join("moved"), "trusted.overlay.redirect").is_some());

    let json = ok(&run(ov(&sb).args(["diff", "--json"]).arg(&u)));
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |p: &str| rows.iter().find(|r| r["path"] == p).unwrap_or_else(|| panic!("{p} not in {json}"));
    assert_eq!(find("/big")["change"], "modified");
    assert_eq!(find("/big")["metacopy"], true);
    assert_eq!(find("/dir")["change"], "deleted");
    assert_eq!(find("/moved")["change"], "added");
    assert!(find("/moved")["redirect"].as_str().unwrap().ends_with("dir"), "{json}");
    ok(&run(ov(&sb).arg("umount").arg(&m)));
}

/// Run `cmd` in a private mount namespace of its own, so mounts it makes (e.g. at odd paths that would
/// confuse other tests' mountinfo readers) vanish with it and never reach the rest of the suite.
fn in_private_mount_ns(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            Ok(())
        })
    }
}

#[test]
fn non_utf8_mount_points_do_not_break_ls_inspect_umount() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    // mountinfo is bytes: a mount point with a non-UTF-8 name (ours here; anyone's on a real host) used to
    // make every verb that reads it fail with "stream did not contain valid UTF-8".
    let target = sb.path().join(std::ffi::OsStr::from_bytes(b"m\xff x"));
    let script = r#"set -e
"$0" mount --lower "$2" "$1"
echo "ls: $("$0" ls --json | grep -F "$3" || true)"
echo "inspect: $("$0" inspect --json "$1")"
"$0" umount "$1"
echo "after: $("$0" ls --json | grep -cF "$3" || true)""#;
    let o = run(in_private_mount_ns(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(bin(TOOL))
            .arg(&target)
            .arg(format!("{}:{}", top.display(), bottom.display()))
            .arg(sb.path())
            .env("CBUILD_STATE", &sb.state),
    ));
    let out = ok(&o);
    let field = |k: &str| -> serde_json::Value {
        let line = out.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("no {k} in {out}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{k} {line}: {e}"))
    };
    let ls = field("ls: ");
    assert_eq!(ls["target"], target.to_string_lossy().as_ref());
    assert_eq!(ls["lower"][0], top.to_string_lossy().as_ref());
    let info = field("inspect: ");
    assert_eq!(info["layers"][0]["files"], 4, "{out}");
    assert!(out.lines().any(|l| l == "after: 0"), "the overlay is still listed after umount: {out}");
}

#[test]
fn umount_refuses_an_overlay_cbuild_did_not_mount() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    // Someone else's overlay whose source merely looks like an aux dir, with a tmpfs and a file there:
    // umount used to unmount that tmpfs, delete its `lower` file and rmdir the dirs.
    let foreign_aux = sb.path().join("theirs/.overlay/123-abc");
    tmpfs(&foreign_aux, "size=1m");
    std::fs::write(foreign_aux.join("lower"), "theirs\n").unwrap();
    let m = sb.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let opts = format!("lowerdir={}:{}", top.display(), bottom.display());
    nix::mount::mount(Some(&foreign_aux), &m, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
        .unwrap();
    let o = run(ov(&sb).arg("umount").arg(&m));
    assert_tool_error(
        &o,
        TOOL,
        &format!("umount: {}: not mounted by cbuild-overlay (source {}", m.display(), foreign_aux.display()),
    );
    assert!(is_mounted(&m), "the foreign overlay was unmounted");
    assert!(is_mounted(&foreign_aux), "the foreign overlay's source dir was unmounted");
    assert_eq!(std::fs::read_to_string(foreign_aux.join("lower")).unwrap(), "theirs\n");
    // A plain `umount` source (what mount(8) users often give) is refused too.
    nix::mount::umount(&m).unwrap();
    nix::mount::mount(Some("overlay"), &m, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str())).unwrap();
    let o = run(ov(&sb).arg("umount").arg(&m));
    assert_tool_error(&o, TOOL, "not mounted by cbuild-overlay (source overlay)");
    assert!(is_mounted(&m));
    // Its own mounts, aux dir and all, it still unmounts.
    nix::mount::umount(&m).unwrap();
    ok(&run(ov(&sb).args(["mount", "--tmpfs-upper", "--lower"]).arg(&top).arg(&m)));
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    assert!(!is_mounted(&m) && !sb.state.join(".overlay").exists());
}

#[test]
fn upper_and_work_with_backslashes_and_separators_both_apis() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    for legacy in [false, true] {
        // Overlay unescapes upperdir/workdir even from fsconfig: `u\x` used to mount `ux` (ENOENT), and
        // mountinfo shows them escaped, so `ls`/`inspect` named dirs that do not exist.
        let base = sb.path().join(format!("legacy={legacy}"));
        let (u, w) = (base.join(r"up\x:y,lowerdir=\,z"), base.join(r"wk\\:,w"));
        let m = base.join("m");
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        ok(&run(cmd
            .arg("mount")
            .arg("--lower")
            .arg(format!("{}:{}", top.display(), bottom.display()))
            .arg("--upper")
            .arg(&u)
            .arg("--work")
            .arg(&w)
            .arg(&m)));
        std::fs::write(m.join("new"), "n").unwrap();
        assert_eq!(std::fs::read_to_string(u.join("new")).unwrap(), "n", "legacy={legacy}: not in {}", u.display());
        let info: serde_json::Value =
            serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
        assert_eq!(info["upper"], u.to_string_lossy().as_ref(), "legacy={legacy}");
        assert_eq!(info["work"], w.to_string_lossy().as_ref(), "legacy={legacy}");
        assert_eq!(info["layers"][0]["files"], 1, "legacy={legacy}: {info}");
        // diff finds the mount by its upper, so it knows the lowers: /shared is modified, not added.
        std::fs::write(m.join("shared"), "changed").unwrap();
        assert_eq!(ok(&run(ov(&sb).arg("diff").arg(&u))), "added /new\nmodified /shared\n", "legacy={legacy}");
        ok(&run(ov(&sb).arg("umount").arg(&m)));
    }
}

/// A chain of `depth` dirs named `d` below `dir`, made fd-relative (deeper than PATH_MAX allows by path).
fn deep_chain(dir: &Path, depth: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscalls on valid C strings; each fd is owned exactly once.
    let mut fd = unsafe { OwnedFd::from_raw_fd(libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY)) };
    for _ in 0..depth {
        unsafe {
            assert_eq!(libc::mkdirat(fd.as_raw_fd(), c"d".as_ptr(), 0o755), 0);
            let next = libc::openat(fd.as_raw_fd(), c"d".as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            assert!(next >= 0);
            fd = OwnedFd::from_raw_fd(next);
        }
    }
}

/// Remove what [`deep_chain`] made under `dir`, holding two fds at any depth: the Sandbox's
/// `remove_dir_all` takes one per level, and in the VM (1024 open files) it would run this whole test
/// process out of them, failing whatever a concurrent test opens or spawns meanwhile.
fn remove_chain(dir: &Path) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: plain syscalls on valid C strings; each fd is owned exactly once.
    unsafe {
        let mut fd = OwnedFd::from_raw_fd(libc::open(c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY));
        let mut depth = 0;
        loop {
            let next = libc::openat(fd.as_raw_fd(), c"d".as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            if next < 0 {
                break;
            }
            fd = OwnedFd::from_raw_fd(next);
            depth += 1;
        }
        for _ in 0..depth {
            let up = libc::openat(fd.as_raw_fd(), c"..".as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            assert!(up >= 0);
            fd = OwnedFd::from_raw_fd(up);
            assert_eq!(libc::unlinkat(fd.as_raw_fd(), c"d".as_ptr(), libc::AT_REMOVEDIR), 0);
        }
    }
}

#[test]
fn diff_and_inspect_survive_hostile_trees() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let (u, w, m) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(format!("{}:{}", top.display(), bottom.display()))
        .arg("--upper")
        .arg(&u)
        .arg("--work")
        .arg(&w)
        .arg(&m)));
    // A container can make a tree far deeper than PATH_MAX: the recursive walk overflowed its stack
    // (abort, no error line) at a few thousand levels.
    const DEPTH: usize = 4000;
    std::fs::create_dir(m.join("a-new")).unwrap();
    deep_chain(&m.join("a-new"), DEPTH);
    std::fs::write(m.join("shared"), "changed").unwrap();
    // A device node that is not a whiteout is a change like any other, not a deletion.
    nix::sys::stat::mknod(
        &m.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let out = ok(&run(ov(&sb).arg("diff").arg(&u)));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), DEPTH + 3, "{}", &out[out.len().saturating_sub(300)..]);
    assert_eq!(lines[0], "added /a-new");
    assert!(lines[DEPTH].starts_with("added /a-new/d/d/") && lines[DEPTH].ends_with("/d"));
    // After leaving the new dir, entries are looked up in the lowers again.
    assert_eq!(&lines[DEPTH + 1..], ["added /null", "modified /shared"]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
    assert_eq!(info["layers"][0]["dirs"], DEPTH as u64 + 2, "upper root, a-new and the chain");

    // Deeper than the open-file limit: a clean error, not a crash.
    let mut cmd = ov(&sb);
    cmd.arg("diff").arg(&u);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = run(&mut cmd);
    // EMFILE, by number: its text is the C library's (musl's static build says "No file descriptors available").
    assert_tool_error(&o, TOOL, "(os error 24)");
    assert!(stderr(&o).contains("hint: the tree is"), "{}", stderr(&o));
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    remove_chain(&u.join("a-new"));
}

#[test]
fn a_stop_signal_during_mount_undoes_everything() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let before = mounts_under(&sb.path().to_string_lossy());
    let m = sb.path().join("m/x");
    for legacy in [false, true] {
        // A SIGTERM that arrives while mount works (here: before it starts, held pending by a blocked mask
        // the tool inherits) used to end it between steps, leaving the tmpfs and created dirs; now the
        // mount finishes its steps, sees the signal, and takes everything back.
        let mut cmd = ov(&sb);
        cmd.args(["mount", "--tmpfs-upper", "--lower"]).arg(format!("{}:{}", top.display(), bottom.display())).arg(&m);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        // SAFETY: sigprocmask and raise only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                libc::raise(libc::SIGTERM);
                Ok(())
            });
        }
        let o = run(&mut cmd);
        assert_tool_error(&o, TOOL, &format!("mount: {}: interrupted by SIGTERM", m.display()));
        assert_nothing_left(&sb, &before, &[&sb.path().join("m")]);
    }
}

/// `mount --fd 6 -- CMD`: the overlay is never attached on the host; `cbuild-ns run --rootfs-fd 6`
/// attaches it inside its own mount namespace, writes land in the upper dir, and when the container
/// ends the overlay is gone with nothing to unmount. Both ways of making it: the new mount API's
/// fsmount fd, and mount(2) on a temporary dir cloned with open_tree (the 6.1 VM's path).
#[test]
fn detached_overlay_lives_only_in_the_container() {
    require_root();
    for legacy in [false, true] {
        let sb = Sandbox::new();
        // The sandbox as a shared mount, as / is on systemd hosts: a clone of the mount(2) path's
        // temporary mount would join its peer group, and pivot_root refuses a shared new root.
        let d = sb.path();
        nix::mount::mount(Some(d), d, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
        nix::mount::mount(None::<&str>, d, None::<&str>, nix::mount::MsFlags::MS_SHARED, None::<&str>).unwrap();
        let before = mounts_under(&sb.path().to_string_lossy());
        let top = sb.path().join("top");
        write(&top.join("marker"), "from the top layer\n");
        let (upper, work, attach) = (sb.path().join("c/upper"), sb.path().join("c/work"), sb.path().join("root"));
        std::fs::create_dir(&attach).unwrap();
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        cmd.args(["mount", "--lower"])
            .arg(&top)
            .arg("--lower")
            .arg(busybox_rootfs())
            .arg("--upper")
            .arg(&upper)
            .arg("--work")
            .arg(&work)
            .args(["--fd", "6", "--"])
            .arg(bin("cbuild-ns"))
            .args(["run", "--mount", "--pid", "--rootfs"])
            .arg(&attach)
            .args(["--rootfs-fd", "6", "--", "sh", "-c"])
            .arg("cat /marker; echo new > /written; grep -c ' / / .* overlay ' /proc/self/mountinfo; read x || true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        use std::io::BufRead;
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "from the top layer\n", "legacy={legacy}");
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "1", "legacy={legacy}: the container's root is the overlay");
        // While the container runs, the host sees no overlay and no aux dir, and the attach point is empty.
        assert_eq!(mounts_under(&sb.path().to_string_lossy()), before, "legacy={legacy}");
        assert!(!sb.state.join(".overlay").exists(), "legacy={legacy}: aux dir left in state");
        assert_eq!(std::fs::read_dir(&attach).unwrap().count(), 0, "legacy={legacy}");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "legacy={legacy}");
        assert_eq!(std::fs::read_to_string(upper.join("written")).unwrap(), "new\n", "legacy={legacy}");
        assert_eq!(mounts_under(&sb.path().to_string_lossy()), before, "legacy={legacy}");
        // Nothing holds the upper any more: it can be mounted again at once (overlay's in-use lock is gone).
        let again = sb.path().join("again");
        ok(&run(ov(&sb)
            .arg("mount")
            .arg("--lower")
            .arg(&top)
            .arg("--upper")
            .arg(&upper)
            .arg("--work")
            .arg(&work)
            .arg(&again)));
        ok(&run(ov(&sb).arg("umount").arg(&again)));
    }
}

/// `--fd` failures: exec of a missing command is 127 and takes back the dirs it made; bad values are 125.
#[test]
fn detached_overlay_bad_input_leaves_nothing() {
    require_root();
    let sb = Sandbox::new();
    let before = mounts_under(&sb.path().to_string_lossy());
    let (top, bottom) = two_layers(&sb);
    let c = sb.path().join("c");
    let base = |cmd: &mut Command| {
        cmd.arg("mount").arg("--lower").arg(&top).arg("--lower").arg(&bottom);
        cmd.arg("--upper").arg(c.join("upper")).arg("--work").arg(c.join("work"));
    };
    let mut cmd = ov(&sb);
    base(&mut cmd);
    let o = run(cmd.args(["--fd", "6", "--", "/nonexistent/cmd"]));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_nothing_left(&sb, &before, &[&c]);
    // CMD's arguments go to the command byte for byte (not UTF-8 here), as any chain-loader passes them.
    {
        use std::os::unix::ffi::OsStrExt;
        let arg = std::ffi::OsStr::from_bytes(b"caf\xe9");
        let mut cmd = ov(&sb);
        base(&mut cmd);
        let o = run(cmd.args(["--fd", "6", "--", "printf", "%s"]).arg(arg));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, arg.as_bytes());
        std::fs::remove_dir_all(&c).unwrap();
    }
    let t = sb.path().join("t");
    for (extra, needle) in [
        (&["--fd", "2", "--", "true"][..], "fd: 2"),
        (&["--fd", "6", "--tmpfs-upper", "--", "true"], "--tmpfs-upper"),
        (&["--fd", "6"], "args"),
    ] {
        let mut cmd = ov(&sb);
        base(&mut cmd);
        assert_tool_error(&run(cmd.args(extra)), TOOL, needle);
        assert_nothing_left(&sb, &before, &[&c, &t]);
    }
    let mut cmd = ov(&sb);
    base(&mut cmd);
    assert_tool_error(&run(cmd.args(["--fd", "6"]).arg(&t).args(["--", "true"])), TOOL, "args");
    assert_nothing_left(&sb, &before, &[&c, &t]);
    // cbuild-ns: fd 0 (/dev/null) is no mount's root; --rootfs-fd needs --rootfs.
    std::fs::create_dir(&t).unwrap();
    let o = run(tool("cbuild-ns", &sb).arg("run").arg("--rootfs").arg(&t).args(["--rootfs-fd", "0", "--", "true"]));
    assert_tool_error(&o, "cbuild-ns", "not the root directory of a mount");
    let o = run(tool("cbuild-ns", &sb).args(["run", "--rootfs-fd", "0", "--", "true"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(mounts_under(&sb.path().to_string_lossy()), before);
}

/// `prune` removes what a SIGKILL'd invocation leaves in `<state>/.overlay` (here: the tmpfs of a
/// `--tmpfs-upper` overlay that is gone, made by a process that no longer exists), and keeps an aux dir
/// still in use and one whose creating process is alive.
#[test]
fn prune_removes_only_dead_aux_dirs() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    // In use: a live --tmpfs-upper overlay.
    let target = sb.path().join("live");
    ok(&run(ov(&sb)
        .arg("mount")
        .arg("--lower")
        .arg(&top)
        .arg("--lower")
        .arg(&bottom)
        .arg("--tmpfs-upper")
        .arg(&target)));
    let aux = sb.state.join(".overlay");
    let live: Vec<PathBuf> = std::fs::read_dir(&aux).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(live.len(), 1);
    // Left by a dead process: its tmpfs still mounted, its upper and work in it.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let dead = aux.join(format!("{dead_pid}-abc123"));
    tmpfs(&dead, "size=1m");
    std::fs::create_dir(dead.join("upper")).unwrap();
    std::fs::create_dir(dead.join("work")).unwrap();
    // The temporary of a mount(2) `--fd` overlay whose creator died before cloning it: an overlay
    // mounted inside the aux dir, with the aux dir as its source.
    let tmp = aux.join(format!("{dead_pid}-def456"));
    std::fs::create_dir_all(tmp.join("root")).unwrap();
    let opts = format!("lowerdir={}:{}", top.display(), bottom.display());
    nix::mount::mount(
        Some(&tmp),
        &tmp.join("root"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    // Made by a live process (ours), not in use yet: a mount in progress.
    let busy = aux.join(format!("{}-abc123", std::process::id()));
    std::fs::create_dir(&busy).unwrap();

    let out = ok(&run(ov(&sb).arg("prune")));
    let base = std::fs::canonicalize(&aux).unwrap();
    let mut want = vec![base.join(dead.file_name().unwrap()), base.join(tmp.file_name().unwrap())];
    want.sort();
    let mut got: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
    got.sort();
    assert_eq!(got, want);
    assert!(!dead.exists() && !tmp.exists(), "the dead aux dirs are gone");
    assert!(!is_mounted(&dead) && !is_mounted(&tmp.join("root")), "their mounts are gone");
    assert!(live[0].exists() && is_mounted(&target), "the live overlay and its aux dir are kept");
    assert!(busy.exists(), "a live process's aux dir is kept");
    std::fs::remove_dir(&busy).unwrap();
    ok(&run(ov(&sb).arg("umount").arg(&target)));
    assert!(!aux.exists(), "umount removed the last aux dir and .overlay");
    // Nothing to do is fine.
    assert_eq!(ok(&run(ov(&sb).arg("prune"))), "");
}

/// The upper/work vs lower overlap check sees through symlinks and `..` in a lower path, and checks the
/// work dir too: each used to pass and create dirs inside an image layer.
#[test]
fn bad_input_upper_or_work_overlapping_a_lower_through_symlink_or_dotdot() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let (l1, l2) = (base.join("l1"), base.join("l2"));
    write(&l1.join("f"), "1\n");
    write(&l2.join("g"), "2\n");
    std::os::unix::fs::symlink("l1", base.join("l1link")).unwrap();
    let before = mounts_under(&sb.path().to_string_lossy());
    let cases: [(&str, &str, &str, String); 3] = [
        ("l1link:l2", "l1/u", "l1/w", format!("upperdir: {}: overlaps the lower dir", l1.join("u").display())),
        ("l2/../l1:l2", "l1/u", "l1/w", format!("upperdir: {}: overlaps the lower dir", l1.join("u").display())),
        ("l1:l2", "u", "l2/w", format!("workdir: {}: overlaps the lower dir", l2.join("w").display())),
    ];
    for (lower, u, w, want) in cases {
        let o = run(ov(&sb).current_dir(&base).args(["mount", "--lower", lower, "--upper", u, "--work", w, "m"]));
        assert_tool_error(&o, TOOL, &want);
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
        assert_nothing_left(
            &sb,
            &before,
            &[&l1.join("u"), &l1.join("w"), &l2.join("w"), &base.join("u"), &base.join("m")],
        );
    }
}

/// An interrupted mount with --upper/--work removes the upper and work dirs whole (overlay made
/// `work/work` in the work dir by then), and what overlay made in a work dir that was already there.
#[test]
fn a_stop_signal_during_mount_removes_upper_and_work_whole() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let before = mounts_under(&sb.path().to_string_lossy());
    let lower = format!("{}:{}", top.display(), bottom.display());
    let old_work = sb.path().join("old-work");
    std::fs::create_dir(&old_work).unwrap();
    for legacy in [false, true] {
        for pre_existing in [false, true] {
            let c = sb.path().join("c");
            let (u, m) = (c.join("upper"), c.join("m"));
            let w = if pre_existing { old_work.clone() } else { c.join("work") };
            let mut cmd = ov(&sb);
            cmd.args(["mount", "--lower", &lower]).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m);
            if legacy {
                cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
            }
            // Every signal a runtime forwards to a chain still setting up, USR1 and USR2 too.
            let (sig, name) = match (legacy, pre_existing) {
                (false, false) => (libc::SIGTERM, "SIGTERM"),
                (false, true) => (libc::SIGUSR1, "SIGUSR1"),
                (true, false) => (libc::SIGUSR2, "SIGUSR2"),
                (true, true) => (libc::SIGHUP, "SIGHUP"),
            };
            let o = run(with_pending_signal(&mut cmd, sig, false));
            assert_tool_error(&o, TOOL, &format!("mount: {}: interrupted by {name}", m.display()));
            assert_eq!(stderr(&o).lines().count(), 1, "one line (legacy {legacy}): {}", stderr(&o));
            assert_nothing_left(&sb, &before, &[&c, &old_work.join("work")]);
            assert!(old_work.is_dir(), "the work dir that was there before was removed");
        }
    }
}

/// A stop signal the caller ignores (a background job of a non-interactive shell ignores SIGINT, nohup
/// SIGHUP) stays pending while blocked, but does not cancel the mount.
#[test]
fn an_ignored_stop_signal_does_not_cancel_mount() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let lower = format!("{}:{}", top.display(), bottom.display());
    for legacy in [false, true] {
        let m = sb.path().join(format!("m-{legacy}"));
        let mut cmd = ov(&sb);
        cmd.args(["mount", "--lower", &lower]).arg("--upper").arg(sb.path().join(format!("u-{legacy}")));
        cmd.arg("--work").arg(sb.path().join(format!("w-{legacy}"))).arg(&m);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        ok(&run(with_pending_signal(&mut cmd, libc::SIGINT, true)));
        assert!(is_mounted(&m), "not mounted (legacy {legacy})");
        assert_eq!(std::fs::read_to_string(m.join("shared")).unwrap(), "top\n");
        ok(&run(ov(&sb).arg("umount").arg(&m)));
    }
}

/// The upper dir mount creates gets the top lower's mode whatever the umask (its mode is the merged
/// root's), for --upper and --tmpfs-upper.
#[test]
fn merged_root_mode_is_the_top_lowers_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o751)).unwrap();
    let lower = format!("{}:{}", top.display(), bottom.display());
    for tmpfs_upper in [false, true] {
        let m = sb.path().join(format!("m-{tmpfs_upper}"));
        let mut cmd = ov(&sb);
        cmd.args(["mount", "--lower", &lower]);
        if tmpfs_upper {
            cmd.arg("--tmpfs-upper");
        } else {
            cmd.arg("--upper").arg(sb.path().join("u")).arg("--work").arg(sb.path().join("w"));
        }
        cmd.arg(&m);
        // SAFETY: umask only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0o077);
                Ok(())
            });
        }
        ok(&run(&mut cmd));
        let mode = std::fs::metadata(&m).unwrap().mode() & 0o7777;
        ok(&run(ov(&sb).arg("umount").arg(&m)));
        assert_eq!(mode, 0o751, "merged root mode with umask 077 (tmpfs upper {tmpfs_upper}): {mode:o}");
    }
}

/// An upper or work dir a mounted overlay already uses is refused (overlay only warns in dmesg).
#[test]
fn bad_input_upper_or_work_already_in_use() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let lower = format!("{}:{}", top.display(), bottom.display());
    let (u, w, m1) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m1"));
    ok(&run(ov(&sb).args(["mount", "--lower", &lower]).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m1)));
    let before = mounts_under(&sb.path().to_string_lossy());
    let (u2, w2, m2) = (sb.path().join("u2"), sb.path().join("w2"), sb.path().join("m2"));
    for (uu, ww, want) in [
        (&u, &w, format!("upperdir: {}: already in use by the overlay mounted at {}", u.display(), m1.display())),
        (&u2, &w, format!("workdir: {}: already in use by the overlay mounted at {}", w.display(), m1.display())),
        (&w, &w2, format!("upperdir: {}: already in use by the overlay mounted at {}", w.display(), m1.display())),
    ] {
        let o = run(ov(&sb).args(["mount", "--lower", &lower]).arg("--upper").arg(uu).arg("--work").arg(ww).arg(&m2));
        assert_tool_error(&o, TOOL, &want);
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
        assert_nothing_left(&sb, &before, &[&u2, &w2, &m2]);
    }
    ok(&run(ov(&sb).arg("umount").arg(&m1)));
}

/// `ls` and `inspect` show a foreign overlay's relative lowerdirs as the kernel does: relative (their
/// base, the mounter's cwd, is unknowable), not joined to the mount's source.
#[test]
fn foreign_relative_lowerdirs_stay_relative_in_ls_and_inspect() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    write(&base.join("l1/f"), "1\n");
    write(&base.join("l2/g"), "2\n");
    // A source that is an absolute dir holding dirs of the same names: the old code joined to it.
    let source = base.join("src");
    write(&source.join("l1/x"), "not the layer\n");
    let m = base.join("m");
    std::fs::create_dir(&m).unwrap();
    let script = r#"set -e
echo "ls: $("$0" ls --json | grep -F "$1")"
echo "inspect: $("$0" inspect --json "$1")""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(bin(TOOL)).arg(&m).current_dir(&base).env("CBUILD_STATE", &sb.state);
    in_private_mount_ns(&mut cmd);
    let (src, target) = (source.clone(), m.clone());
    // SAFETY: mount(2) only, between fork and exec (after the chdir to `base` and the unshare).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            nix::mount::mount(
                Some(&src),
                &target,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some("lowerdir=l1:l2"),
            )?;
            Ok(())
        });
    }
    let out = ok(&run(&mut cmd));
    let field = |k: &str| -> serde_json::Value {
        let line = out.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("no {k} in {out}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{k} {line}: {e}"))
    };
    let ls = field("ls: ");
    assert_eq!(ls["lower"], serde_json::json!(["l1", "l2"]), "{out}");
    let info = field("inspect: ");
    assert_eq!(info["lower"], serde_json::json!(["l1", "l2"]), "{out}");
    assert_eq!(info["layers"][0]["path"], "l1", "{out}");
}

/// Overlay marks the work dir of a `volatile` mount and refuses it afterwards with a bare EINVAL (the
/// reason only in dmesg); mount says so first, in one line that names the mark to remove, and leaves
/// the mark alone (only a person can know there was no crash since).
#[test]
fn bad_input_work_dir_of_an_earlier_volatile_mount() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let lower = format!("{}:{}", top.display(), bottom.display());
    let (u, w, m) = (sb.path().join("u"), sb.path().join("w"), sb.path().join("m"));
    let mount = |extra: &[&str], target: &Path| {
        run(ov(&sb)
            .arg("mount")
            .args(extra)
            .args(["--lower", &lower])
            .arg("--upper")
            .arg(&u)
            .arg("--work")
            .arg(&w)
            .arg(target))
    };
    ok(&mount(&["--volatile"], &m));
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    let mark = w.join("work/incompat/volatile");
    assert!(mark.is_dir(), "the kernel no longer marks volatile work dirs? {}", mark.display());
    let before = mounts_under(&sb.path().to_string_lossy());
    let m2 = sb.path().join("again/m");
    for (legacy, extra) in [(false, &[][..]), (false, &["--volatile"][..]), (true, &[][..])] {
        let extra: Vec<&str> = extra.iter().copied().chain(legacy.then_some("--legacy-api")).collect();
        let o = mount(&extra, &m2);
        assert_tool_error(
            &o,
            TOOL,
            &format!(
                "workdir: {}: marked by an earlier --volatile mount, which overlay refuses to reuse: remove {} to reuse",
                w.display(),
                mark.display()
            ),
        );
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 2, "the error and a hint: {err}");
        assert!(err.lines().nth(1).unwrap().starts_with("hint: only if that overlay was unmounted cleanly"), "{err}");
        assert_nothing_left(&sb, &before, &[&sb.path().join("again")]);
        assert!(mark.is_dir(), "the volatile mark was removed");
    }
    // What the error says to do is enough.
    std::fs::remove_dir_all(&mark).unwrap();
    ok(&mount(&[], &m2));
    ok(&run(ov(&sb).arg("umount").arg(&m2)));
}

/// tmpfs takes size=0 as no limit: `--tmpfs-upper=0` would give a throw-away upper that can fill RAM.
#[test]
fn bad_input_tmpfs_upper_of_size_zero() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let before = mounts_under(&sb.path().to_string_lossy());
    let m = sb.path().join("z/m");
    for size in ["0", "0m", "00G", "0%"] {
        let o = run(ov(&sb)
            .arg("mount")
            .arg(format!("--tmpfs-upper={size}"))
            .arg("--lower")
            .arg(format!("{}:{}", top.display(), bottom.display()))
            .arg(&m));
        assert_tool_error(&o, TOOL, &format!("tmpfs: {size}: a size of 0 means no limit to tmpfs"));
        assert_nothing_left(&sb, &before, &[&sb.path().join("z")]);
    }
}

/// The `<state>` dirs mount made for its aux dirs go with the last aux dir; a `<state>` that was there
/// before (the caller's own CBUILD_STATE) stays.
#[test]
fn umount_removes_the_state_dirs_mount_created_and_only_those() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let lower = format!("{}:{}", top.display(), bottom.display());
    let made = sb.path().join("made");
    let state = made.join("state");
    let (m1, m2) = (sb.path().join("m1"), sb.path().join("m2"));
    for m in [&m1, &m2] {
        ok(&run(ov(&sb).env("CBUILD_STATE", &state).args(["mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(m)));
    }
    // Another tool's file in <state> keeps it; the rest goes.
    ok(&run(ov(&sb).env("CBUILD_STATE", &state).arg("umount").arg(&m1)));
    assert!(state.join(".overlay").is_dir(), "the other overlay's aux dir is still there");
    ok(&run(ov(&sb).env("CBUILD_STATE", &state).arg("umount").arg(&m2)));
    assert!(!made.exists(), "{} (made by mount) was left", made.display());

    ok(&run(ov(&sb).env("CBUILD_STATE", &state).args(["mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(&m1)));
    std::fs::write(made.join("theirs"), "").unwrap();
    ok(&run(ov(&sb).env("CBUILD_STATE", &state).arg("umount").arg(&m1)));
    assert!(!state.exists() && made.join("theirs").exists(), "only the empty dirs mount made go");

    // A <state> that was there before stays, as does one prune empties.
    ok(&run(ov(&sb).args(["mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(&m1)));
    ok(&run(ov(&sb).arg("umount").arg(&m1)));
    assert!(sb.state.is_dir() && !sb.state.join(".overlay").exists());
    assert_eq!(ok(&run(ov(&sb).arg("prune"))), "");
    assert!(sb.state.is_dir());
}

/// `--lower-from FILE` reads like a manifest: relative lines are relative to FILE's dir (stdin's to the
/// cwd); a CRLF line is refused, not silently trimmed.
#[test]
fn lower_from_file_is_relative_to_its_dir_and_refuses_crlf() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let img = base.join("img");
    write(&img.join("l1/one"), "1\n");
    write(&img.join("l2/two"), "2\n");
    let list = img.join("layers");
    std::fs::write(&list, format!("l1\n\n{}\n", img.join("l2").display())).unwrap();
    let m = base.join("m");
    // Run from elsewhere: the cwd has nothing to do with the file's lines.
    let o = run(ov(&sb).current_dir("/").args(["mount", "--lower-from"]).arg(&list).arg(&m));
    ok(&o);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
    assert_eq!(info["lower"], serde_json::json!([img.join("l1"), img.join("l2")]));
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    // A relative FILE: its dir is relative to the cwd.
    ok(&run(ov(&sb).current_dir(&base).args(["mount", "--lower-from", "img/layers"]).arg(&m)));
    ok(&run(ov(&sb).arg("umount").arg(&m)));
    // stdin has no dir: relative to the cwd.
    ok(&run_with_stdin(ov(&sb).current_dir(&img).args(["mount", "--lower-from", "-"]).arg(&m), "l1\nl2\n"));
    ok(&run(ov(&sb).arg("umount").arg(&m)));

    let before = mounts_under(&sb.path().to_string_lossy());
    // A name a shell would split or expand: the hint's command still names the file, and works.
    let crlf = img.join("crlf it's $HOME");
    std::fs::write(&crlf, "l1\r\nl2\r\n").unwrap();
    let m2 = base.join("m2");
    let o = run(ov(&sb).args(["mount", "--lower-from"]).arg(&crlf).arg(&m2));
    assert_tool_error(&o, TOOL, &format!("lower-from: {}:1: the line ends in a carriage return", crlf.display()));
    let hint =
        stderr(&o).lines().find_map(|l| l.strip_prefix("hint: convert it to LF line ends: ")).unwrap().to_string();
    let st = Command::new("sh").arg("-c").arg(&hint).status().unwrap();
    assert!(st.success(), "{hint}");
    assert_eq!(std::fs::read_to_string(&crlf).unwrap(), "l1\nl2\n", "{hint}");
    let o = run_with_stdin(ov(&sb).current_dir(&img).args(["mount", "--lower-from", "-"]).arg(&m2), "l1\nl2\r\n");
    assert_tool_error(&o, TOOL, "lower-from: -:2: the line ends in a carriage return");
    assert_nothing_left(&sb, &before, &[&m2]);
}

/// Every line printed on stderr stays one line when a path holds a newline: `-v` steps, undo steps and
/// the warning when an aux dir cannot be removed.
#[test]
fn stderr_lines_stay_one_line_with_newlines_in_paths() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let lower = format!("{}:{}", top.display(), bottom.display());
    let state = sb.path().join("st\nate");
    let m = sb.path().join("m\nx");
    #[track_caller]
    fn one_line_each(o: &Output) {
        let err = stderr(o);
        for l in err.lines() {
            assert!(
                l.starts_with("cbuild-overlay: ") || l.starts_with("hint: "),
                "a line broke in two: {l:?} in {err}"
            );
        }
    }
    // The aux dir's removal fails (something else is mounted on it): a warning, one line.
    ok(&run(ov(&sb).env("CBUILD_STATE", &state).args(["mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(&m)));
    let aux = std::fs::read_dir(state.join(".overlay"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    tmpfs(&aux, "size=1m");
    let o = run(ov(&sb).env("CBUILD_STATE", &state).arg("umount").arg(&m));
    ok(&o);
    assert!(stderr(&o).starts_with("cbuild-overlay: rmdir: ") && stderr(&o).contains("st\\012ate"), "{}", stderr(&o));
    one_line_each(&o);
    nix::mount::umount2(&aux, nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir(&aux).unwrap();
    std::fs::remove_dir_all(&state).unwrap();

    // `-v` steps, mount and umount.
    let o =
        run(ov(&sb).env("CBUILD_STATE", &state).args(["-v", "mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(&m));
    ok(&o);
    one_line_each(&o);
    assert!(stderr(&o).contains("step: tmpfs: ") && stderr(&o).contains("st\\012ate"), "{}", stderr(&o));
    let o = run(ov(&sb).env("CBUILD_STATE", &state).args(["-v", "umount"]).arg(&m));
    ok(&o);
    one_line_each(&o);
    assert!(stderr(&o).contains("step: rmdir: "), "{}", stderr(&o));

    // Undo steps, for both APIs.
    let before = mounts_under(&sb.path().to_string_lossy());
    for legacy in [false, true] {
        let mut cmd = ov(&sb);
        cmd.env("CBUILD_STATE", &state).args(["-v", "mount", "--tmpfs-upper=1m", "--lower", &lower]).arg(&m);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        let o = run(with_pending_signal(&mut cmd, libc::SIGTERM, false));
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).lines().last().unwrap().ends_with("interrupted by SIGTERM"), "{}", stderr(&o));
        assert!(stderr(&o).contains("step: undo umount: "), "{}", stderr(&o));
        one_line_each(&o);
        assert_eq!(mounts_under(&sb.path().to_string_lossy()), before);
    }
}

/// Field 22 of /proc/self/stat: this process's start time in clock ticks after boot.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// `prune` tells a creator that is alive from a reused PID: an aux dir records its creator's start time,
/// and a live process with that PID but another start time is not its creator.
#[test]
fn prune_is_not_fooled_by_a_reused_pid() {
    require_root();
    let sb = Sandbox::new();
    let aux = sb.state.join(".overlay");
    let pid = std::process::id();
    let start = own_start_time();
    // Left by an earlier process with our PID: its tmpfs still mounted.
    let reused = aux.join(format!("{pid}-{:x}{:012x}", start + 1, 0xabc));
    tmpfs(&reused, "size=1m");
    // Made by us, mounting right now.
    let ours = aux.join(format!("{pid}-{start:x}{:012x}", 0xdef));
    std::fs::create_dir(&ours).unwrap();
    let out = ok(&run(ov(&sb).arg("prune")));
    let base = std::fs::canonicalize(&aux).unwrap();
    assert_eq!(out, format!("{}\n", base.join(reused.file_name().unwrap()).display()));
    assert!(!reused.exists() && !is_mounted(&reused), "the dead creator's aux dir is gone");
    assert!(ours.is_dir(), "a live creator's aux dir is kept");
    std::fs::remove_dir(&ours).unwrap();
}

/// A mount point inside a layer is refused: in (or being) the upper or work dir the overlay would show
/// in its own upper layer; in a lower dir the image would hold its own mount point. Over a lower dir
/// itself (making that dir writable in place) is allowed.
#[test]
fn bad_input_target_inside_a_layer() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let (top, bottom) = two_layers(&sb);
    let (top, bottom) = (base.join(top.file_name().unwrap()), base.join(bottom.file_name().unwrap()));
    std::os::unix::fs::symlink(&bottom, base.join("bottom-link")).unwrap();
    let (u, w) = (base.join("u"), base.join("w"));
    std::fs::create_dir(&u).unwrap();
    let before = mounts_under(&sb.path().to_string_lossy());
    let lower = format!("{}:{}", top.display(), bottom.display());
    let cases: [(PathBuf, String); 6] = [
        (u.join("m"), format!("target: {}: inside the upper dir {}", u.join("m").display(), u.display())),
        (u.clone(), format!("target: {}: is the upper dir itself", u.display())),
        (w.join("x/m"), format!("target: {}: inside the work dir {}", w.join("x/m").display(), w.display())),
        (top.join("etc"), format!("target: {}: inside the lower dir {}", top.join("etc").display(), top.display())),
        (
            bottom.join("new/m"),
            format!("target: {}: inside the lower dir {}", bottom.join("new/m").display(), bottom.display()),
        ),
        (
            base.join("bottom-link/dir"),
            format!("target: {}: inside the lower dir {}", bottom.join("dir").display(), bottom.display()),
        ),
    ];
    for (target, want) in cases {
        for legacy in [false, true] {
            let mut cmd = ov(&sb);
            cmd.args(["mount", "--lower", &lower]).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&target);
            if legacy {
                cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, &want);
            assert_nothing_left(&sb, &before, &[&w, &bottom.join("new"), &u.join("m")]);
        }
    }
    // Read-only overlays too.
    let o = run(ov(&sb).args(["mount", "--lower", &lower]).arg(top.join("dir/m")));
    assert_tool_error(&o, TOOL, &format!("inside the lower dir {}", top.display()));
    assert_nothing_left(&sb, &before, &[&top.join("dir/m")]);

    // Over the top lower itself: that dir, made writable in place.
    ok(&run(ov(&sb).args(["mount", "--lower", &lower]).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&top)));
    std::fs::write(top.join("shared"), "changed\n").unwrap();
    assert_eq!(std::fs::read_to_string(u.join("shared")).unwrap(), "changed\n");
    assert_eq!(std::fs::read_to_string(top.join("only_low")).unwrap(), "low\n");
    ok(&run(ov(&sb).arg("umount").arg(&top)));
    assert_eq!(std::fs::read_to_string(top.join("shared")).unwrap(), "top\n");
}

/// When the command after `--fd N --` cannot be executed, what overlay made in a work dir that was
/// already there (`work/work`) goes too, with the dirs mount created; the work dir itself stays.
#[test]
fn detached_overlay_exec_failure_takes_back_work_work_in_an_existing_work_dir() {
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let before = mounts_under(&sb.path().to_string_lossy());
    let work = sb.path().join("existing-work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("theirs"), "").unwrap();
    for legacy in [false, true] {
        let upper = sb.path().join("c/upper");
        let mut cmd = ov(&sb);
        cmd.args(["mount", "--index", "--lower"]).arg(format!("{}:{}", top.display(), bottom.display()));
        cmd.arg("--upper").arg(&upper).arg("--work").arg(&work).args(["--fd", "6", "--", "/nonexistent/cmd"]);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        let o = run(&mut cmd);
        assert_eq!(o.status.code(), Some(127), "legacy={legacy}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert_nothing_left(&sb, &before, &[&sb.path().join("c"), &work.join("work"), &work.join("index")]);
        assert_eq!(names(&work), BTreeSet::from(["theirs".to_string()]), "legacy={legacy}");
    }
}

/// Mounts (fs type, mount point) from /proc/self/mountinfo at or below `prefix`.
fn mounts_with_type_under(prefix: &Path) -> Vec<(String, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let point = PathBuf::from(f[4].replace("\\040", " ").replace("\\012", "\n").replace("\\134", "\\"));
            point.starts_with(prefix).then(|| (f[sep + 1].to_string(), point))
        })
        .collect()
}

/// The mount(2) path of `--fd` mounts the overlay on a temporary before cloning it detached. Under a
/// shared mount (/ on systemd hosts) that temporary overlay must not be copied into the peer mounts
/// (other mount namespaces): the temporary is made private before the overlay is mounted in it. Seen
/// at the moment the clone is taken: the tool is held in its open_tree call by a seccomp listener.
#[test]
fn detached_mount2_overlay_is_never_copied_to_peer_mounts() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    require_root();
    let sb = Sandbox::new();
    let d = sb.path();
    nix::mount::mount(Some(d), d, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    nix::mount::mount(None::<&str>, d, None::<&str>, nix::mount::MsFlags::MS_SHARED, None::<&str>).unwrap();
    // A bind of a shared mount is its peer: whatever is mounted under <state> shows under `peer` too.
    let peer = d.join("peer");
    std::fs::create_dir(&peer).unwrap();
    nix::mount::mount(Some(&sb.state), &peer, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    let before = mounts_under(&d.to_string_lossy());
    let (top, bottom) = two_layers(&sb);

    // Trap open_tree (only the mount(2) path of --fd calls it, once the overlay is mounted) into a
    // listener left at fd LISTENER in the tool, which we take with pidfd_getfd.
    const LISTENER: i32 = 200;
    let ins = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let filter = [
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        ins(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::SYS_open_tree as u32, 0, 1),
        ins(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF, 0, 0),
        ins(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    let prog_addr = &prog as *const libc::sock_fprog as usize;
    let mut cmd = ov(&sb);
    cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1").args(["mount", "--lower"]);
    cmd.arg(format!("{}:{}", top.display(), bottom.display()));
    cmd.arg("--upper").arg(d.join("u")).arg("--work").arg(d.join("w")).args(["--fd", "6", "--", "true"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: seccomp and dup2 only, between fork and exec; `prog` and `filter` outlive the spawn.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                prog_addr as *const libc::sock_fprog,
            );
            if fd < 0 || libc::dup2(fd as i32, LISTENER) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    // SAFETY: plain syscalls; each fd returned is owned once.
    let pidfd = unsafe { OwnedFd::from_raw_fd(libc::syscall(libc::SYS_pidfd_open, child.id(), 0) as i32) };
    // Never leave the tool stuck in its trapped call, whatever fails below.
    let _kill = Defer(|| unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, 0, 0);
    });
    let listener = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), LISTENER, 0) };
    assert!(listener >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    let listener = unsafe { OwnedFd::from_raw_fd(listener as i32) };
    // Bounded: a tool that exits without calling open_tree must fail the test, not hang it.
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
    assert!(
        n == 1 && pfd.revents & libc::POLLIN != 0,
        "the tool never reached open_tree (poll {n}, {:#x})",
        pfd.revents
    );
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
    assert_eq!(r, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
    let at_clone = mounts_with_type_under(&sb.state);
    let in_peer = mounts_with_type_under(&peer);
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = req.id;
    resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    assert_eq!(r, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
    let o = child.wait_with_output().unwrap();
    ok(&o);

    assert!(at_clone.iter().any(|(t, m)| t == "overlay" && m.ends_with("root")), "not at the clone: {at_clone:?}");
    assert!(!in_peer.iter().any(|(t, _)| t == "overlay"), "the temporary overlay reached a peer: {in_peer:?}");
    assert_eq!(mounts_under(&d.to_string_lossy()), before);
    assert!(!sb.state.join(".overlay").exists());
}

/// `mount --fd N --rm`: a throw-away layer. While the command runs, its upper and work dirs exist and a
/// remover (a child, in its own session, holding only /dev/null, a pidfd and the upper dir) keeps the upper
/// dir locked; once the command has exited they go, even a tree deeper than the remover's fd limit (its
/// `rm -rf` fallback). Existing dirs are refused (125), as is `--rm` without `--fd`, `--upper` or `--work`.
#[test]
fn detached_overlay_rm_removes_upper_and_work_after_the_command() {
    require_root();
    let sb = Sandbox::new();
    let before = mounts_under(&sb.path().to_string_lossy());
    let (top, bottom) = two_layers(&sb);
    let c = sb.path().join("c");
    let (upper, work) = (c.join("upper"), c.join("work"));
    let mount = |script: &str| {
        let mut cmd = ov(&sb);
        cmd.arg("mount").arg("--lower").arg(format!("{}:{}", top.display(), bottom.display()));
        cmd.arg("--upper").arg(&upper).arg("--work").arg(&work).args(["--volatile", "--rm", "--fd", "6", "--"]);
        run(cmd.args(["sh", "-c", script]))
    };
    let wait_gone = |what: &str| {
        let since = std::time::Instant::now();
        while (upper.exists() || work.exists()) && since.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!upper.exists() && !work.exists(), "{what}: upper and work dirs still there");
    };
    // The remover is the command's only child: looked at from here while the command waits for a file.
    let (pid_file, stop) = (sb.path().join("remover-pid"), sb.path().join("stop"));
    let mut cmd = ov(&sb);
    cmd.arg("mount").arg("--lower").arg(format!("{}:{}", top.display(), bottom.display()));
    cmd.arg("--upper").arg(&upper).arg("--work").arg(&work).args(["--rm", "--fd", "6", "--", "sh", "-c"]);
    cmd.arg(format!(
        "read r </proc/$$/task/$$/children; echo $r >{p}.tmp; mv {p}.tmp {p}; while [ ! -e {s} ]; do sleep 0.01; done",
        p = pid_file.display(),
        s = stop.display()
    ));
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let since = std::time::Instant::now();
    while !pid_file.exists() && since.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let r = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    assert!(upper.is_dir() && work.is_dir());
    let dir = std::fs::File::open(&upper).unwrap();
    let locked = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock);
    assert!(locked.is_err(), "the upper dir is locked while the remover lives");
    // Its fds: /dev/null thrice, the pidfd and the upper dir, none of the caller's (mount fd, pipes); a
    // moment after the fork for the close.
    let fds = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{r}/fd"))
            .unwrap()
            .map(|e| std::fs::read_link(e.unwrap().path()).unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    while fds().len() > 5 && since.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let up = upper.to_string_lossy().into_owned();
    assert_eq!(fds(), ["/dev/null", "/dev/null", "/dev/null", up.as_str(), "anon_inode:[pidfd]"]);
    let stat = std::fs::read_to_string(format!("/proc/{r}/stat")).unwrap();
    assert_eq!(stat.rsplit(") ").next().unwrap().split(' ').nth(3), Some(r.as_str()), "own session: {stat}");
    // The caller's signals (a group-wide one may be pending from before its setsid) do not stop it.
    let rpid = nix::unistd::Pid::from_raw(r.parse().unwrap());
    use nix::sys::signal::Signal::*;
    for sig in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2] {
        nix::sys::signal::kill(rpid, sig).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(nix::sys::signal::kill(rpid, None).is_ok(), "the remover outlives HUP, INT, QUIT, TERM, USR1, USR2");
    std::fs::write(&stop, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    wait_gone("after the command");
    // The command fails, and writes a tree deeper than 1024 levels first (2048 nested dirs).
    let o = mount(&format!(
        "cd {} && p=d; i=0; while [ $i -lt 11 ]; do p=$p/$p; i=$((i+1)); done; mkdir -p \"$p\" && exit 3",
        upper.display()
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    wait_gone("after a failed command with a deep tree");
    assert_eq!(mounts_under(&sb.path().to_string_lossy()), before);
    // Refused: dirs that exist (the data is not ours to throw away), and --rm without --fd/--upper/--work.
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("keep"), "x").unwrap();
    assert_tool_error(&mount("true"), TOOL, "must be new");
    assert!(upper.join("keep").exists() && !work.exists());
    std::fs::remove_dir_all(&c).unwrap();
    for extra in
        [&["--rm", "--upper", "u", "--work", "w", "target"][..], &["--rm", "--upper", "u", "--fd", "6", "--", "true"]]
    {
        let o = run(ov(&sb).arg("mount").arg("--lower").arg(&top).args(extra).current_dir(sb.path()));
        assert_tool_error(&o, TOOL, "args");
    }
    assert_nothing_left(&sb, &before, &[&c, &sb.path().join("u"), &sb.path().join("w")]);
}

/// The `--rm` remover against a tree moved while it walks: a container started without `--pid` can
/// outlive the chain and rename the subtree the walk is in (here the test does it, with the remover
/// stopped inside). The walk used to come back up through `..` as many times as it had gone down, so a
/// chain named after the real ancestors (`x/L/upper/D/...` in `R/L/upper`) took it above the upper dir,
/// and it emptied R: the host's `R/victim` went with the layer. Past the fd limit (lowered to 64 here, as
/// `ulimit -n` does, so 150 levels are enough) it must stay inside the upper dir, and still remove it all.
#[test]
fn detached_overlay_rm_stays_inside_a_tree_moved_while_it_is_removed() {
    use nix::sys::signal::{kill, Signal};
    use std::time::{Duration, Instant};
    require_root();
    const DEPTH: usize = 150;
    const FILES: usize = 20_000;
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let r = sb.path().join("R");
    write(&r.join("victim/keep"), "host data\n");
    write(&r.join("keep"), "host data\n");
    let (upper, work) = (r.join("L/upper"), r.join("L/work"));
    let (pid_file, go) = (sb.path().join("remover-pid"), sb.path().join("go"));
    let mut cmd = ov(&sb);
    cmd.arg("mount").arg("--lower").arg(format!("{}:{}", top.display(), bottom.display()));
    cmd.arg("--upper").arg(&upper).arg("--work").arg(&work).args(["--rm", "--fd", "6", "--", "sh", "-c"]);
    cmd.arg(format!(
        "read r </proc/$$/task/$$/children; echo $r >{p}.tmp; mv {p}.tmp {p}; while [ ! -e {g} ]; do sleep 0.01; done",
        p = pid_file.display(),
        g = go.display()
    ));
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let since = Instant::now();
    while !pid_file.exists() && since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let remover: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let remover = nix::unistd::Pid::from_raw(remover);
    // What the container would make: a chain deeper than the remover's fd limit, and files at its bottom
    // that keep the walk there a while.
    let moved = upper.join("x/L/upper/D");
    let deepest = moved.join(vec!["d"; DEPTH].join("/"));
    std::fs::create_dir_all(&deepest).unwrap();
    for i in 0..FILES {
        std::fs::File::create(deepest.join(format!("f{i}"))).unwrap();
    }
    std::fs::write(&go, "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Files going at the bottom: the deep walk is there (std's remove_dir_all gave up higher up, at EMFILE).
    // Stopped, so the move lands while it is inside the subtree.
    let stopped = || {
        let stat = std::fs::read_to_string(format!("/proc/{remover}/stat")).unwrap_or_default();
        matches!(stat.rsplit(") ").next().and_then(|s| s.split(' ').next()), Some("T" | "t" | "Z") | None)
    };
    loop {
        assert!(since.elapsed() < Duration::from_secs(60), "the remover never reached the bottom");
        kill(remover, Signal::SIGSTOP).expect("the remover is gone before the move");
        while !stopped() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = std::fs::read_dir(&deepest).map(|d| d.count());
        match left {
            Ok(n) if n < FILES => {
                std::fs::rename(&moved, upper.join("D")).unwrap();
                kill(remover, Signal::SIGCONT).unwrap();
                break;
            }
            Ok(_) => {
                kill(remover, Signal::SIGCONT).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                kill(remover, Signal::SIGCONT).unwrap();
                panic!("the remover left the bottom before the move: {e}");
            }
        }
    }
    while kill(remover, None).is_ok() && !stopped() && since.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        r.join("victim/keep").exists() && r.join("keep").exists(),
        "the remover deleted host files beside the layer"
    );
    assert!(r.join("L").is_dir(), "the remover removed the layer's parent");
    assert!(!upper.exists() && !work.exists(), "upper and work dirs not removed");
}

/// Names are bytes: `a\xff` and `a\xfe` are two files. Both used to print as `/a\u{ffd}` (JSON and human
/// line alike), so a report could not tell them apart nor name either.
#[test]
fn diff_carries_non_utf8_names_exactly() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let upper = sb.path().join("upper");
    std::fs::create_dir_all(upper.join("ok")).unwrap();
    for n in [&b"a\xff"[..], b"a\xfe"] {
        std::fs::write(upper.join(std::ffi::OsStr::from_bytes(n)), "").unwrap();
    }
    // A dir renamed with redirect_dir=on whose old name was not UTF-8 either.
    let c = std::ffi::CString::new(upper.join("ok").as_os_str().as_bytes()).unwrap();
    let v = b"/old\xff";
    // SAFETY: a valid C string and a buffer of the stated length.
    let rc =
        unsafe { libc::lsetxattr(c.as_ptr(), c"trusted.overlay.redirect".as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let out = ok(&run(ov(&sb).arg("diff").arg(&upper)));
    assert_eq!(out, "added /a\\376\nadded /a\\377\nadded /ok\n");
    let json = ok(&run(ov(&sb).arg("diff").arg("--json").arg(&upper)));
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{json}");
    assert_eq!(rows[0]["path"], "/a\u{fffd}");
    assert_eq!(rows[0]["path_bytes"], serde_json::json!([47, 97, 0xfe]));
    assert_eq!(rows[1]["path_bytes"], serde_json::json!([47, 97, 0xff]));
    assert_eq!(rows[2]["path"], "/ok");
    assert!(rows[2].get("path_bytes").is_none(), "only for names that are not UTF-8: {json}");
    assert_eq!(rows[2]["redirect"], "/old\u{fffd}");
    assert_eq!(rows[2]["redirect_bytes"], serde_json::json!([47, 111, 108, 100, 0xff]));
}

/// The mount(2) path built `upperdir=`/`workdir=` (and `lowerdir=`) from lossy strings: an upper dir
/// named `u\xff` was passed as `u\u{fffd}` and the mount failed with ENOENT.
#[test]
fn non_utf8_layer_dirs_mount_with_both_apis() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let low = sb.path().join(std::ffi::OsStr::from_bytes(b"l\xfe"));
    std::fs::rename(&top, &low).unwrap();
    for legacy in [false, true] {
        let base = sb.path().join(format!("legacy={legacy}"));
        let (u, w) =
            (base.join(std::ffi::OsStr::from_bytes(b"u\xff")), base.join(std::ffi::OsStr::from_bytes(b"w\xff")));
        let m = base.join("m");
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        // `--lower-from`: its lines are bytes (`--lower` too: lower_flag_takes_non_utf8_dirs_with_both_apis).
        let list = base.join("layers");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(&list, [low.as_os_str().as_bytes(), b"\n", bottom.as_os_str().as_bytes(), b"\n"].concat())
            .unwrap();
        ok(&run(cmd.arg("mount").arg("--lower-from").arg(&list).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m)));
        assert_eq!(std::fs::read_to_string(m.join("etc/conf")).unwrap(), "orig\n", "legacy={legacy}: top layer");
        std::fs::write(m.join("new"), "n").unwrap();
        assert_eq!(std::fs::read_to_string(u.join("new")).unwrap(), "n", "legacy={legacy}: not in the upper dir");
        ok(&run(ov(&sb).arg("umount").arg(&m)));
    }
}

/// `--lower` was a UTF-8 string: a lower dir named `l\xff` was refused at the command line, though
/// `--lower-from` took it. Its `\:` (a colon in a name) and the separators mount(2) needs escaped must
/// still work, on both mount paths, and in `diff --lower` too.
#[test]
fn lower_flag_takes_non_utf8_dirs_with_both_apis() {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let odd = |name: &[u8]| base.join(std::ffi::OsStr::from_bytes(name));
    let (l1, l2, l3) = (odd(b"l\xff"), odd(b"c:\xfe,d\\e"), base.join("b"));
    write(&l1.join("one"), "1\n");
    write(&l2.join("two"), "2\n");
    write(&l3.join("three"), "3\n");
    // `\:` and `\\` as overlay's lowerdir takes them: the second flag names two dirs.
    let mut second = vec![];
    for &b in l2.as_os_str().as_bytes() {
        if matches!(b, b':' | b'\\') {
            second.push(b'\\');
        }
        second.push(b);
    }
    second.push(b':');
    second.extend_from_slice(l3.as_os_str().as_bytes());
    let second = OsString::from_vec(second);
    for legacy in [false, true] {
        let m = base.join(format!("m-legacy={legacy}"));
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        ok(&run(cmd.arg("mount").arg("--lower").arg(&l1).arg("--lower").arg(&second).arg(&m)));
        assert_eq!(names(&m), ["one", "three", "two"].map(String::from).into(), "legacy={legacy}");
        ok(&run(ov(&sb).arg("umount").arg(&m)));
    }
    let upper = base.join("upper");
    write(&upper.join("one"), "changed\n");
    write(&upper.join("new"), "\n");
    let out = ok(&run(ov(&sb).arg("diff").arg(&upper).arg("--lower").arg(&l1).arg("--lower").arg(&second)));
    assert_eq!(out, "added /new\nmodified /one\n");
}

/// Found by a review: stderr named a path that is not UTF-8 with U+FFFD for each odd byte, so `l\xff` and
/// `l\xfe` read the same there, and otherwise than on stdout (`\377`). Error objects, the paths in their
/// reasons and `-v` steps now escape as the reports do.
#[test]
fn stderr_names_non_utf8_paths_as_stdout_does() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let odd = |name: &[u8]| base.join(std::ffi::OsStr::from_bytes(name));
    let (gone, m) = (odd(b"gone\xff"), odd(b"m\xfe"));
    std::fs::create_dir(&m).unwrap();
    let before = mounts_under(&sb.path().to_string_lossy());
    let o = run(ov(&sb).args(["-v", "mount", "--tmpfs-upper=1m", "--lower"]).arg(&gone).arg(&m));
    let err = stderr(&o);
    assert_tool_error(&o, TOOL, &format!("lowerdir: {}/gone\\377: No such file or directory", base.display()));
    assert!(!err.contains('\u{fffd}'), "{err}");
    assert_nothing_left(&sb, &before, &[]);
    // A step names the target as the error would, and `ls` lists it the same way.
    let (top, _) = two_layers(&sb);
    let o = run(ov(&sb).args(["-v", "mount", "--tmpfs-upper=1m", "--lower"]).arg(&top).arg(&m));
    ok(&o);
    let _umount = Defer(|| drop(run(ov(&sb).arg("umount").arg(&m))));
    let shown = format!("{}/m\\376", base.display());
    assert!(
        stderr(&o).lines().any(|l| l.starts_with("cbuild-overlay: step: ") && l.contains(&shown)),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains('\u{fffd}'), "{}", stderr(&o));
    assert!(ok(&run(ov(&sb).arg("ls"))).contains(&shown));
}

/// `ls` and `inspect` showed a layer named `l\xff` as `l\u{fffd}` (JSON and human lines alike): `l\xff`
/// and `l\xfe` read the same and neither could be named. They give names as `diff` does now.
#[test]
fn ls_and_inspect_carry_non_utf8_names_exactly() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::canonicalize(sb.path()).unwrap();
    let odd = |name: &[u8]| base.join(std::ffi::OsStr::from_bytes(name));
    let (l1, l2, u) = (odd(b"l\xff"), odd(b"l\xfe"), odd(b"u\xfd"));
    write(&l1.join("one"), "1\n");
    write(&l2.join("two"), "2\n");
    let bytes = |p: &Path| serde_json::json!(p.as_os_str().as_bytes());
    let list = base.join("layers");
    std::fs::write(&list, [l1.as_os_str().as_bytes(), b"\n", l2.as_os_str().as_bytes(), b"\n"].concat()).unwrap();
    for legacy in [false, true] {
        let m = base.join(format!("m-legacy={legacy}"));
        let w = base.join(format!("w-legacy={legacy}"));
        let u = u.with_extension(format!("{legacy}"));
        let mut cmd = ov(&sb);
        if legacy {
            cmd.env("CBUILD_OVERLAY_FORCE_LEGACY", "1");
        }
        ok(&run(cmd.arg("mount").arg("--lower-from").arg(&list).arg("--upper").arg(&u).arg("--work").arg(&w).arg(&m)));
        let _umount = Defer(|| drop(run(ov(&sb).arg("umount").arg(&m))));
        let ls = ok(&run(ov(&sb).args(["ls", "--json"])));
        let row: serde_json::Value = ls
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["target"] == m.to_str().unwrap())
            .unwrap_or_else(|| panic!("legacy={legacy}: {} not in {ls}", m.display()));
        assert_eq!(row["lower_bytes"], serde_json::json!([bytes(&l1), bytes(&l2)]), "legacy={legacy}: {row}");
        assert_eq!(row["lower"][0], l1.to_string_lossy().as_ref());
        assert_eq!(row["upper_bytes"], bytes(&u), "legacy={legacy}: {row}");
        assert!(row.get("work_bytes").is_none() && row.get("target_bytes").is_none(), "UTF-8 names: {row}");
        let human = ok(&run(ov(&sb).arg("ls")));
        let shown_u = format!("{}/u\\375.{legacy}", base.display());
        assert!(human.lines().any(|l| l.ends_with(&shown_u)), "legacy={legacy}: {shown_u} in {human}");

        let info: serde_json::Value =
            serde_json::from_str(&ok(&run(ov(&sb).arg("inspect").arg("--json").arg(&m)))).unwrap();
        assert_eq!(info["lower_bytes"], row["lower_bytes"]);
        let paths: Vec<_> = info["layers"].as_array().unwrap().iter().map(|l| l["path_bytes"].clone()).collect();
        assert_eq!(paths, [bytes(&u), bytes(&l1), bytes(&l2)], "legacy={legacy}: {info}");
        let human = ok(&run(ov(&sb).arg("inspect").arg(&m)));
        for shown in [format!("{}/l\\377", base.display()), format!("{}/l\\376", base.display())] {
            assert!(human.lines().any(|l| l.ends_with(&shown)), "legacy={legacy}: {shown} in {human}");
        }
    }
}

/// The dirs made for an upper and a work dir (`<data>/upper`, `<data>/work`) only their owner may enter:
/// what a container writes in its upper dir (a set-uid-root copy of a shell, say) must not be runnable
/// by every host user from the host's side. The upper dir itself takes the lower root's mode, and a
/// mount point's parents are made as `mkdir -p` makes them.
#[test]
fn upper_and_work_parents_are_private() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = sb.path().join("data");
    let (upper, work, merged) = (data.join("upper/c1"), data.join("work/c1"), sb.path().join("mnt/c1"));
    ok(&run(ov(&sb).arg("mount").arg("--lower").arg(format!("{}:{}", top.display(), bottom.display())).args([
        "--upper".as_ref(),
        upper.as_os_str(),
        "--work".as_ref(),
        work.as_os_str(),
        merged.as_os_str(),
    ])));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&data.join("upper")), 0o700);
    assert_eq!(mode(&data.join("work")), 0o700);
    assert_eq!(mode(&upper), 0o755, "the upper dir is the merged root: the lower root's mode");
    assert_eq!(mode(&sb.path().join("mnt")) & 0o055, 0o055, "a mount point's parent as mkdir -p makes it");
    // A host user who is not root cannot reach what the container wrote (the sandbox itself is 0700:
    // opened up, so only <data>/upper can stop the user).
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(merged.join("written"), "x").unwrap();
    use std::os::unix::process::CommandExt;
    let o = run(Command::new("cat").arg(upper.join("written")).uid(65534).gid(65534));
    assert!(!o.status.success() && stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    ok(&run(ov(&sb).arg("umount").arg(&merged)));
}

/// Regression: the aux dir (a `--tmpfs-upper` overlay's source) was given to the kernel as a lossy UTF-8
/// copy of its path, so under a state dir whose name is not UTF-8 the source mountinfo shows named no
/// dir: `umount` refused the mount as not cbuild-overlay's, and `prune` took a live overlay's aux dir
/// for an orphan.
#[test]
fn tmpfs_upper_under_a_state_dir_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let (top, bottom) = two_layers(&sb);
    let state = sb.path().join(std::ffi::OsStr::from_bytes(b"st\xff"));
    let m = sb.path().join("m");
    let ovs = || {
        let mut c = ov(&sb);
        c.env("CBUILD_STATE", &state);
        c
    };
    ok(&run(ovs()
        .arg("mount")
        .arg("--tmpfs-upper=4m")
        .arg("--lower")
        .arg(format!("{}:{}", top.display(), bottom.display()))
        .arg(&m)));
    std::fs::write(m.join("scratch"), "s").unwrap();
    let pruned = ok(&run(ovs().arg("prune")));
    assert!(!pruned.contains(".overlay"), "prune took the live aux dir: {pruned}");
    assert_eq!(std::fs::read_to_string(m.join("scratch")).unwrap(), "s");
    ok(&run(ovs().arg("umount").arg(&m)));
    assert_eq!(mounts_under(&sb.path().to_string_lossy()), Vec::<String>::new());
    assert!(!state.join(".overlay").exists());
}
