//! cbuild-image against the real thing: images made by Debian's umoci and skopeo (which no one here
//! wrote), compared with `umoci unpack`'s rootfs and with a real overlayfs mount of `layers`; exports read
//! back by skopeo and umoci; hand-crafted hostile archives that must fail with exit 125, a clear error
//! and nothing left behind.

use cbuild_tests::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const TOOL: &str = "cbuild-image";

fn img(sb: &Sandbox) -> Command {
    tool(TOOL, sb)
}

/// `gc --json`'s report.
fn gc_report(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&ok(run(img(sb).args(["--json", "gc"])))).unwrap()
}

/// An overlay on `mnt` whose top layer is `lower` as spelled relative to `from` (where the mount is
/// made: the kernel shows the spelling, not what it was relative to), over `empty`; unmounted when the
/// guard drops.
fn mount_from(from: &Path, lower: &str, empty: &Path, mnt: &Path) -> Defer<impl FnMut()> {
    sh_ok(&format!(
        "cd {} && mount -t overlay overlay -o lowerdir={lower}:{} {}",
        from.display(),
        empty.display(),
        mnt.display()
    ));
    let mnt = mnt.to_path_buf();
    Defer(move || {
        let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
    })
}

/// cbuild-image on the store at `store` (`--store`), the sandbox's data dir and its layer store.
fn img_at(sb: &Sandbox, store: &Path) -> Command {
    let mut c = img(sb);
    c.arg("--store").arg(store);
    c
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

fn sh(cmd: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(cmd))
}

#[track_caller]
fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(o.status.success(), "`{cmd}` failed: {}", stderr(&o));
    stdout(&o)
}

fn sha256(b: &[u8]) -> String {
    let mut c = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut c = Command::new("gzip").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut i = c.stdin.take().unwrap();
    let data = b.to_vec();
    let t = std::thread::spawn(move || i.write_all(&data).unwrap());
    let o = c.wait_with_output().unwrap();
    t.join().unwrap();
    o.stdout
}

fn set_xattr(p: &Path, name: &str, val: &[u8]) {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let r = unsafe { libc::lsetxattr(cp.as_ptr(), cn.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", p.display(), std::io::Error::last_os_error());
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(cp.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let s = String::from_utf8_lossy(name).into_owned();
        if s == "security.selinux" {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let k = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if k >= 0 {
            v.truncate(k as usize);
            out.push((s, v));
        }
    }
    out.sort();
    out
}

/// What we compare of each file in a tree.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Node {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    content: String,
    xattrs: Vec<(String, Vec<u8>)>,
    mtime: Option<i64>,
    /// For hard-linked regular files: the first path (in sorted order) sharing the inode.
    link_group: Option<String>,
}

struct TreeOpts {
    mtimes: bool,
    hardlinks: bool,
}

fn tree(root: &Path, o: &TreeOpts) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    walk(root, root, o, &mut out, &mut inodes);
    out
}

fn walk(root: &Path, p: &Path, o: &TreeOpts, out: &mut BTreeMap<String, Node>, inodes: &mut BTreeMap<u64, String>) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let rel = if rel.is_empty() { ".".to_string() } else { rel };
    let ft = m.file_type();
    let (kind, content) = if ft.is_dir() {
        ('d', String::new())
    } else if ft.is_symlink() {
        ('l', std::fs::read_link(p).unwrap().to_string_lossy().into_owned())
    } else if ft.is_file() {
        ('f', sha256(&std::fs::read(p).unwrap()))
    } else if ft.is_char_device() {
        ('c', format!("{:x}", m.rdev()))
    } else if ft.is_block_device() {
        ('b', format!("{:x}", m.rdev()))
    } else {
        ('p', String::new())
    };
    let link_group =
        (o.hardlinks && ft.is_file() && m.nlink() > 1).then(|| inodes.entry(m.ino()).or_insert(rel.clone()).clone());
    out.insert(
        rel,
        Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            content,
            xattrs: xattrs(p),
            mtime: (o.mtimes && kind != 'l').then_some(m.mtime()),
            link_group,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            walk(root, &p.join(n), o, out, inodes);
        }
    }
}

#[track_caller]
fn assert_same_tree(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>, what: &str) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: different paths");
    for (k, na) in a {
        assert_eq!(Some(na), b.get(k), "{what}: {k} differs");
    }
}

// ---------------------------------------------------------------------------------------------------
// A tiny tar writer, for archives that no well-behaved tool would write.

fn tar_header(name: &str, kind: u8, size: usize, link: &str, mode: u32) -> Vec<u8> {
    assert!(name.len() < 100 && link.len() < 100);
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let oct = |h: &mut [u8], off: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    oct(&mut h, 100, 8, mode as u64);
    oct(&mut h, 108, 8, 0);
    oct(&mut h, 116, 8, 0);
    oct(&mut h, 124, 12, size as u64);
    oct(&mut h, 136, 12, 1_600_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// One tar entry: kind b'0' file, b'5' dir, b'2' symlink, b'1' hardlink, b'3' char device.
fn tar_entry(name: &str, kind: u8, data: &[u8], link: &str, mode: u32) -> Vec<u8> {
    let mut v = tar_header(name, kind, data.len(), link, mode);
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// Recompute a hand-made header's checksum, written as `fmt` formats the sum.
fn rechecksum(h: &mut [u8], fmt: impl Fn(u32) -> String) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|b| *b as u32).sum();
    let s = fmt(sum);
    h[148..156].copy_from_slice(s.as_bytes());
}

fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = entries.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

// ---------------------------------------------------------------------------------------------------
// Hand-made OCI layouts.

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf() }
    }

    fn blob(&self, b: &[u8]) -> String {
        let h = sha256(b);
        std::fs::write(self.dir.join("blobs/sha256").join(&h), b).unwrap();
        format!("sha256:{h}")
    }

    /// Write an image of uncompressed `layers` tagged `tag`; `edit` may tamper with the manifest JSON.
    fn image(
        &self,
        tag: &str,
        layers: &[(Vec<u8>, &str)],
        edit: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
    ) -> String {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tarball, mt) in layers {
            diff_ids.push(format!("sha256:{}", sha256(tarball)));
            let blob = if *mt == LAYER_GZIP { gzip(tarball) } else { tarball.clone() };
            let d = self.blob(&blob);
            descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        }
        let mut config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let mut manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": descs});
        edit(&mut manifest, &mut config);
        let cb = serde_json::to_vec(&config).unwrap();
        let cd = self.blob(&cb);
        if manifest.get("config").is_none() {
            manifest["config"] = serde_json::json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()});
        }
        let mb = serde_json::to_vec(&manifest).unwrap();
        let md = self.blob(&mb);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        md
    }
}

/// Everything in the store: blobs, index entries, layer dirs, temporaries. "Nothing left behind" means
/// this is unchanged by a failing command.
fn store_state(sb: &Sandbox) -> Vec<String> {
    let mut v = Vec::new();
    for sub in ["images/blobs/sha256", "images/.tmp", "layers"] {
        if let Ok(rd) = std::fs::read_dir(sb.data.join(sub)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != ".locks" {
                    v.push(format!("{sub}/{n}"));
                }
            }
        }
    }
    v.push(std::fs::read_to_string(sb.data.join("images/index.json")).unwrap_or_default());
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------------
// Images made by umoci.

/// A three-layer image made by umoci in `dir/oci:t`: layer 1 a busybox rootfs with xattrs, a hard link, a
/// symlink, a setuid file, a fifo, a device node and odd owners; layer 2 deletes files and a directory
/// (OCI `.wh.` whiteouts written by umoci) and changes one; layer 3 (added with `umoci raw add-layer`)
/// makes a directory opaque.
fn umoci_image(dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    let r = bundle.join("rootfs");
    sh_ok(&format!(
        "umoci init --layout {l} && umoci new --image {l}:t && umoci unpack --image {l}:t {b} >/dev/null",
        l = layout.display(),
        b = bundle.display()
    ));
    sh_ok(&format!("cp -a {}/. {}", busybox_rootfs().display(), r.display()));
    for d in ["etc/d", "opq/sub", "del/deep", "owned"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/d/f"), "hello\n").unwrap();
    set_xattr(&r.join("etc/d/f"), "user.cbuild", b"value");
    std::fs::hard_link(r.join("etc/d/f"), r.join("etc/hl")).unwrap();
    std::os::unix::fs::symlink("../etc/d/f", r.join("owned/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/d/f", r.join("abs")).unwrap();
    std::fs::write(r.join("owned/suid"), "#!/bin/sh\n").unwrap();
    std::fs::write(r.join("opq/sub/x"), "x").unwrap();
    std::fs::write(r.join("opq/keep"), "lower").unwrap();
    std::fs::write(r.join("del/deep/y"), "y").unwrap();
    std::fs::write(r.join("del/gone"), "gone").unwrap();
    sh_ok(&format!(
        "chown -R 1000:2000 {o} && chmod 0750 {o} && chmod 4755 {o}/suid && mkfifo {r}/owned/fifo && mknod {r}/dev/null2 c 1 3 && chmod 0640 {r}/dev/null2",
        o = r.join("owned").display(),
        r = r.display()
    ));
    sh_ok(&format!("umoci repack --refresh-bundle --image {}:t {}", layout.display(), bundle.display()));
    std::fs::remove_file(r.join("del/gone")).unwrap();
    std::fs::remove_dir_all(r.join("del/deep")).unwrap();
    std::fs::write(r.join("etc/d/f"), "changed\n").unwrap();
    std::fs::write(r.join("new"), "new").unwrap();
    sh_ok(&format!("umoci repack --refresh-bundle --image {}:t {}", layout.display(), bundle.display()));
    let l3 = tar(&[
        tar_entry("opq/", b'5', b"", "", 0o755),
        tar_entry("opq/.wh..wh..opq", b'0', b"", "", 0o644),
        tar_entry("opq/only", b'0', b"upper", "", 0o644),
    ]);
    std::fs::write(dir.join("l3.tar"), l3).unwrap();
    sh_ok(&format!("umoci raw add-layer --image {}:t {}", layout.display(), dir.join("l3.tar").display()));
    layout
}

/// `umoci unpack` of the same image, for comparison: returns the rootfs path.
fn umoci_unpack(layout: &Path, tag: &str, dest: &Path) -> PathBuf {
    sh_ok(&format!("umoci unpack --image {}:{tag} {} >/dev/null", layout.display(), dest.display()));
    dest.join("rootfs")
}

const FULL: TreeOpts = TreeOpts { mtimes: true, hardlinks: true };

/// Mount `lowers` (top-first) read-only with overlayfs at `target`; unmounted when the guard drops.
fn overlay(lowers: &str, target: &Path) -> Defer<impl FnMut()> {
    std::fs::create_dir_all(target).unwrap();
    let mut dirs: Vec<&str> = lowers.lines().collect();
    // Without an upper dir overlayfs wants two lower dirs: add an empty one at the bottom.
    let empty = target.with_extension("empty");
    std::fs::create_dir_all(&empty).unwrap();
    if dirs.len() == 1 {
        dirs.push(empty.to_str().unwrap());
    }
    let o = run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", dirs.join(":")))
        .arg(target));
    assert!(o.status.success(), "mount overlay: {}", stderr(&o));
    let t = target.to_path_buf();
    Defer(move || {
        let _ = nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH);
    })
}

/// Make the default store, empty (readers and `gc` make none): an image built, removed and collected.
fn empty_store(sb: &Sandbox) {
    let root = sb.path().join("empty-store-root");
    std::fs::create_dir_all(&root).unwrap();
    ok(run(img(sb).arg("build").arg(&root).args(["--tag", "empty-store"])));
    ok(run(img(sb).args(["rm", "empty-store"])));
    ok(run(img(sb).arg("gc")));
    std::fs::remove_dir(&root).unwrap();
}

/// A tree with one file, `f` = "x": what a test needs to build a small image from.
fn one_file_root(sb: &Sandbox) -> PathBuf {
    let root = sb.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), "x").unwrap();
    root
}
#[test]
fn umoci_image_in_three_forms_unpacks_like_umoci_and_overlay_agrees() {
    require_root();
    let sb = Sandbox::new();
    let layout = umoci_image(sb.path());
    let reference = umoci_unpack(&layout, "t", &sb.path().join("ref"));
    let want = tree(&reference, &FULL);
    // The image has what the test means it to have, so the comparisons below compare something.
    assert_eq!(want["etc/d/f"].xattrs, vec![("user.cbuild".to_string(), b"value".to_vec())]);
    assert_eq!(want["etc/hl"].link_group.as_deref(), Some("etc/d/f"));
    assert!(!want.contains_key("del/gone") && !want.contains_key("opq/sub") && !want.contains_key("opq/keep"));
    assert_eq!(want["owned/suid"].mode, 0o4755);

    let docker = sb.path().join("img.docker.tar");
    let ociar = sb.path().join("img.oci.tar");
    sh_ok(&format!("skopeo copy -q oci:{}:t docker-archive:{}:cbuild/test:t", layout.display(), docker.display()));
    sh_ok(&format!("skopeo copy -q oci:{}:t oci-archive:{}:t", layout.display(), ociar.display()));

    let mut unpacked = Vec::new();
    for (src, tag) in [(layout.clone(), "dir"), (docker.clone(), "docker"), (ociar.clone(), "ociar")] {
        let out = ok(run(img(&sb).args(["import", "--tag", tag]).arg(&src)));
        assert!(out.starts_with(&format!("{tag}:latest\tsha256:")), "stored as the full name: {out}");
        let dest = sb.path().join(format!("u-{tag}"));
        ok(run(img(&sb).args(["unpack", tag]).arg(&dest)));
        assert_same_tree(&want, &tree(&dest, &FULL), &format!("unpack of the {tag} import vs umoci unpack"));
        unpacked.push(dest);
    }
    // docker-archive keeps the names in manifest.json's RepoTags (skopeo writes them fully qualified).
    ok(run(img(&sb).arg("import").arg(&docker)));
    let ls = ok(run(img(&sb).args(["--json", "ls"])));
    assert!(ls.lines().any(|l| l.contains(r#""ref":"docker.io/cbuild/test:t""#)), "{ls}");

    // layers + overlayfs give the same view as unpack (mtimes of directories and link counts aside:
    // overlayfs shows the upper-most directory's and copies nothing).
    let lowers = ok(run(img(&sb).args(["layers", "docker"])));
    assert_eq!(lowers.lines().count(), 3, "{lowers}");
    for l in lowers.lines() {
        assert!(Path::new(l).starts_with(sb.data.join("layers")), "{l}");
    }
    // Layer dirs keep the image's set-uid files (owned/suid): only root may enter <data>/layers, made
    // so, or made so again if it was opened up.
    use std::os::unix::fs::PermissionsExt;
    let layers_mode = || std::fs::metadata(sb.data.join("layers")).unwrap().mode() & 0o7777;
    assert_eq!(layers_mode(), 0o700);
    // (The sandbox itself is 0700: opened up, so only <data>/layers can stop the user.)
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let suid =
        lowers.lines().map(|l| Path::new(l).join("owned/suid")).find(|p| p.exists()).expect("owned/suid in a layer");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "test", "-e"])
        .arg(&suid));
    assert!(!o.status.success(), "a host user reaches {}", suid.display());
    std::fs::set_permissions(sb.data.join("layers"), std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(run(img(&sb).args(["layers", "docker"])));
    assert_eq!(layers_mode(), 0o700);
    // The top layer holds the opaque dir in overlay form; the second one umoci's deletions as whiteouts.
    let top = Path::new(lowers.lines().next().unwrap());
    assert_eq!(xattrs(&top.join("opq")), vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())]);
    let mid = Path::new(lowers.lines().nth(1).unwrap());
    let wh = std::fs::symlink_metadata(mid.join("del/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "del/gone should be a 0/0 whiteout");
    let mnt = sb.path().join("mnt");
    let _m = overlay(&lowers, &mnt);
    let loose = TreeOpts { mtimes: false, hardlinks: false };
    let mut got = tree(&mnt, &loose);
    let mut exp = tree(&unpacked[0], &loose);
    // overlayfs reports the mount's own root as the top layer's root dir.
    got.remove(".");
    exp.remove(".");
    assert_same_tree(&exp, &got, "overlay mount of `layers` vs unpack");

    // The same image imported three ways shares its layer dirs: the OCI dir and oci-archive imports
    // are the same manifest, so `layers` has nothing to extract.
    let again = ok(run(img(&sb).args(["layers", "dir"])));
    let again2 = ok(run(img(&sb).args(["layers", "ociar"])));
    assert_eq!(again, again2);
    ok(run(img(&sb).args(["verify", "ociar"])));
}

/// A tar entry owned by `uid:gid`.
fn owned(mut e: Vec<u8>, uid: u32, gid: u32) -> Vec<u8> {
    e[108..116].copy_from_slice(format!("{uid:07o}\0").as_bytes());
    e[116..124].copy_from_slice(format!("{gid:07o}\0").as_bytes());
    rechecksum(&mut e, |s| format!("{s:06o}\0 "));
    e
}

/// A layer that adds `tmp/x` without a `tmp/` entry: in the overlay form `tmp` must take the lower
/// layer's metadata (1777, owner, mtime), as containerd copies it, not 0755 root; a hard link to a file
/// of a lower layer must work (the file is copied up so both names share an inode, as in `unpack`).
#[test]
fn layers_overlay_view_matches_unpack_for_implied_dirs_and_lower_hardlinks() {
    require_root();
    let sb = Sandbox::new();
    let l1 = tar(&[
        tar_entry("tmp/", b'5', b"", "", 0o1777),
        owned(tar_entry("data/", b'5', b"", "", 0o750), 1000, 1001),
        tar_entry("data/f", b'0', b"lower file", "", 0o644),
        owned(tar_entry("orig", b'0', b"original", "", 0o640), 7, 8),
        tar_entry("srv/", b'5', b"", "", 0o711),
        owned(tar_entry("srv/www/", b'5', b"", "", 0o700), 33, 33),
    ]);
    let l2 = tar(&[
        tar_entry("tmp/x", b'0', b"x", "", 0o644),
        tar_entry("data/g", b'0', b"g", "", 0o644),
        tar_entry("data/hl", b'1', b"", "data/f", 0o644),
        tar_entry("link", b'1', b"", "orig", 0o640),
        tar_entry("srv/www/index", b'0', b"hi", "", 0o644),
        tar_entry("new/deep/f", b'0', b"n", "", 0o644),
    ]);
    let l = Layout::new(&sb.path().join("oci"));
    l.image("implied", &[(l1, LAYER_TAR), (l2, LAYER_GZIP)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "implied"]).arg(&u)));
    let mut want = tree(&u, &FULL);
    // What the comparison compares.
    assert_eq!((want["tmp"].mode, want["srv/www"].uid, want["data"].gid), (0o1777, 33, 1001));
    assert_eq!(want["link"].link_group.as_deref(), Some("link"));
    assert_eq!(want["orig"].link_group.as_deref(), Some("link"));
    let lowers = ok(run(img(&sb).args(["layers", "implied"])));
    let mnt = sb.path().join("mnt");
    let _m = overlay(&lowers, &mnt);
    let mut got = tree(&mnt, &FULL);
    got.remove(".");
    want.remove(".");
    // `new` and `new/deep` exist in no layer's tar and in no lower layer: each extraction makes them at
    // the moment it runs (as containerd does), so their mtimes can differ by a clock tick between the two.
    for t in [&mut want, &mut got] {
        for k in ["new", "new/deep"] {
            t.get_mut(k).expect("the implied dir").mtime = None;
        }
    }
    assert_same_tree(&want, &got, "overlay mount of `layers` vs unpack");
    // The top layer holds the copied-up lower file, linked, with the lower file's owner.
    let top = Path::new(lowers.lines().next().unwrap());
    let o = std::fs::symlink_metadata(top.join("orig")).unwrap();
    assert_eq!((o.nlink(), o.uid(), o.mode() & 0o7777), (2, 7, 0o640));
    assert_eq!(std::fs::symlink_metadata(top.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
}

// ---------------------------------------------------------------------------------------------------
// Whiteouts in the same layer as the entries they name (OCI image spec: a whiteout hides only what lower
// layers have; umoci is the reference).

/// The lower layer of the whiteout tests.
fn whiteout_base() -> Vec<u8> {
    tar(&[
        tar_entry("a/", b'5', b"", "", 0o755),
        tar_entry("a/b/", b'5', b"", "", 0o755),
        tar_entry("a/b/old", b'0', b"old", "", 0o644),
        tar_entry("a/keep", b'0', b"keep", "", 0o644),
        tar_entry("c/", b'5', b"", "", 0o755),
        tar_entry("c/old", b'0', b"old", "", 0o644),
        tar_entry("foo", b'0', b"foo", "", 0o644),
        tar_entry("real/", b'5', b"", "", 0o755),
        tar_entry("real/x", b'0', b"x", "", 0o644),
    ])
}

/// Import `whiteout_base` with `top` on it and `unpack` it; check the tree against `umoci unpack` of
/// the same image and against an overlay mount of `layers`. The mtimes of `no_mtime` are not compared
/// with umoci's: directories no tar lists (each extraction makes them when it runs), and directories a
/// whiteout of their own layer emptied (umoci leaves the time of the removal; here they keep the mtime
/// their entry gives them, or the lower layer's, as the overlay form shows them; the tests check that). Returns the sandbox, the unpacked tree (without `.`) and
/// the layer dirs (top-first).
#[track_caller]
fn whiteout_case(no_mtime: &[&str], top: &[Vec<u8>]) -> (Sandbox, BTreeMap<String, Node>, Vec<PathBuf>) {
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    l.image("wh", &[(whiteout_base(), LAYER_TAR), (tar(top), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "wh"]).arg(&u)));
    let unpacked = tree(&u, &FULL);
    let mut got = unpacked.clone();
    let mut want = tree(&umoci_unpack(&l.dir, "wh", &sb.path().join("ref")), &FULL);
    for t in [&mut want, &mut got] {
        t.remove(".");
        for k in no_mtime {
            if let Some(n) = t.get_mut(*k) {
                n.mtime = None;
            }
        }
    }
    assert_same_tree(&want, &got, "unpack vs umoci unpack");
    let lowers = ok(run(img(&sb).args(["layers", "wh"])));
    let mnt = sb.path().join("mnt");
    let m = overlay(&lowers, &mnt);
    let loose = TreeOpts { mtimes: false, hardlinks: false };
    let (mut exp, mut view) = (tree(&u, &loose), tree(&mnt, &loose));
    exp.remove(".");
    view.remove(".");
    assert_same_tree(&exp, &view, "overlay mount of `layers` vs unpack");
    drop(m);
    let mut unpacked = unpacked;
    unpacked.remove(".");
    (sb, unpacked, lowers.lines().map(PathBuf::from).collect())
}

#[track_caller]
fn assert_paths(got: &BTreeMap<String, Node>, want: &[&str]) {
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), want);
}

/// A whiteout after an entry of its own layer leaves that entry alone: `new` stays a file, `a` listed
/// by this layer stays with only this layer's `a/n2`, and `real` (an ancestor of this layer's
/// `real/y`) keeps `real/y`. Only what the lower layer had under them goes.
#[test]
fn whiteouts_spare_entries_of_their_own_layer() {
    require_root();
    let (_sb, paths, lowers) = whiteout_case(
        &["a", "real"],
        &[
            tar_entry("new", b'0', b"new", "", 0o644),
            tar_entry(".wh.new", b'0', b"", "", 0o644),
            tar_entry("a/", b'5', b"", "", 0o750),
            tar_entry("a/n2", b'0', b"n2", "", 0o644),
            tar_entry(".wh.a", b'0', b"", "", 0o644),
            tar_entry("real/y", b'0', b"y", "", 0o644),
            tar_entry(".wh.real", b'0', b"", "", 0o644),
        ],
    );
    assert_paths(&paths, &["a", "a/n2", "c", "c/old", "foo", "new", "real", "real/y"]);
    assert_eq!((paths["a"].mode, paths["a"].mtime), (0o750, Some(1_600_000_000)), "a as this layer lists it");
    assert_eq!(paths["real"].mtime, Some(1_600_000_000), "real as the lower layer has it");
    // The overlay form: the file stays a file, the directories hide the lower ones by being opaque.
    let top = &lowers[0];
    assert!(std::fs::symlink_metadata(top.join("new")).unwrap().is_file(), "new became a whiteout");
    for d in ["a", "real"] {
        assert_eq!(xattrs(&top.join(d)), vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())], "{d}");
    }
}

/// An opaque marker after a child directory of its own layer that merged with a lower one: the child
/// stays, with only what this layer put in it (`a/b/old` of the lower layer goes).
#[test]
fn opaque_dirs_hide_lower_content_below_their_own_layers_subdirs() {
    require_root();
    let (_sb, paths, _) = whiteout_case(
        &["a/b"],
        &[
            tar_entry("a/", b'5', b"", "", 0o755),
            tar_entry("a/b/", b'5', b"", "", 0o700),
            tar_entry("a/b/mine", b'0', b"mine", "", 0o644),
            tar_entry("a/.wh..wh..opq", b'0', b"", "", 0o644),
        ],
    );
    assert_paths(&paths, &["a", "a/b", "a/b/mine", "c", "c/old", "foo", "real", "real/x"]);
    assert_eq!((paths["a/b"].mode, paths["a/b"].mtime), (0o700, Some(1_600_000_000)), "a/b as this layer lists it");
}

/// A whiteout and then the same name again as a directory, in one layer: nothing of the lower one shows
/// through, in the overlay form too (the directory replacing the whiteout device is opaque). The same
/// when the directory is only implied by an entry below it (`real/z/f` after `.wh.real`), and when it
/// replaces a file of its own layer that replaced the lower directory (`c`).
#[test]
fn a_directory_recreated_after_its_whiteout_hides_the_lower_one() {
    require_root();
    let (_sb, paths, lowers) = whiteout_case(
        &["real", "real/z"],
        &[
            tar_entry(".wh.a", b'0', b"", "", 0o644),
            tar_entry("a/", b'5', b"", "", 0o755),
            tar_entry("a/new", b'0', b"new", "", 0o644),
            tar_entry(".wh.real", b'0', b"", "", 0o644),
            tar_entry("real/z/f", b'0', b"f", "", 0o644),
            tar_entry("c", b'0', b"file", "", 0o644),
            tar_entry("c/", b'5', b"", "", 0o755),
            tar_entry("c/mine", b'0', b"mine", "", 0o644),
        ],
    );
    assert_paths(&paths, &["a", "a/new", "c", "c/mine", "foo", "real", "real/z", "real/z/f"]);
    let top = &lowers[0];
    for d in ["a", "c", "real"] {
        assert_eq!(xattrs(&top.join(d)), vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())], "{d}");
    }
    // `real/z` is new: it takes no metadata from a lower `real/z` (there is none to hide), and is not opaque.
    assert_eq!(xattrs(&top.join("real/z")), vec![]);
}

/// A PAX header carrying `SCHILY.xattr.` records for the entry after it.
fn pax_xattrs(recs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (k, v) in recs {
        let rec = format!(" SCHILY.xattr.{k}={v}\n");
        let mut len = rec.len() + 1;
        while format!("{len}{rec}").len() != len {
            len += 1;
        }
        body.push_str(&format!("{len}{rec}"));
    }
    tar_entry("PaxHeaders/x", b'x', body.as_bytes(), "", 0o644)
}

/// xattrs on symlinks, device nodes and FIFOs are applied (to the node itself, never through a symlink
/// to its target), in `unpack` and in the overlay form, as `umoci unpack` applies them.
#[test]
fn xattrs_on_symlinks_and_special_files_are_applied_like_umoci() {
    require_root();
    let sb = Sandbox::new();
    let layer = tar(&[
        tar_entry("target", b'0', b"t", "", 0o644),
        pax_xattrs(&[("trusted.onlink", "L"), ("security.cbuild", "S")]),
        tar_entry("link", b'2', b"", "target", 0o777),
        pax_xattrs(&[("trusted.onfifo", "F")]),
        tar_entry("fifo", b'6', b"", "", 0o644),
        pax_xattrs(&[("trusted.ondev", "D")]),
        tar_entry("null", b'3', b"", "", 0o666),
    ]);
    let l = Layout::new(&sb.path().join("oci"));
    l.image("x", &[(layer, LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "x"]).arg(&u)));
    let x = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
    assert_eq!(xattrs(&u.join("link")), vec![x("security.cbuild", b"S"), x("trusted.onlink", b"L")]);
    assert_eq!(xattrs(&u.join("target")), vec![], "set through the symlink");
    assert_eq!(xattrs(&u.join("fifo")), vec![x("trusted.onfifo", b"F")]);
    assert_eq!(xattrs(&u.join("null")), vec![x("trusted.ondev", b"D")]);
    let reference = umoci_unpack(&l.dir, "x", &sb.path().join("ref"));
    let mut want = tree(&reference, &FULL);
    let mut got = tree(&u, &FULL);
    want.remove(".");
    got.remove(".");
    assert_same_tree(&want, &got, "unpack vs umoci unpack");
    let lowers = ok(run(img(&sb).args(["layers", "x"])));
    let top = Path::new(lowers.lines().next().unwrap());
    assert_eq!(xattrs(&top.join("link")), xattrs(&u.join("link")));
    assert_eq!(xattrs(&top.join("null")), xattrs(&u.join("null")));
}

#[test]
fn exports_are_read_by_skopeo_and_umoci() {
    require_root();
    let sb = Sandbox::new();
    let layout = umoci_image(sb.path());
    ok(run(img(&sb).args(["import", "--tag", "ex:v1"]).arg(&layout)));
    let mine = sb.path().join("mine");
    ok(run(img(&sb).args(["unpack", "ex:v1"]).arg(&mine)));
    let want = tree(&mine, &FULL);

    let ociar = sb.path().join("out.oci.tar");
    let dock = sb.path().join("out.docker.tar");
    ok(run(img(&sb).args(["export", "ex:v1"]).arg(&ociar)));
    ok(run(img(&sb).args(["export", "--format", "docker-archive", "ex:v1"]).arg(&dock)));
    for src in [format!("oci-archive:{}", ociar.display()), format!("docker-archive:{}", dock.display())] {
        let o = ok(run(Command::new("skopeo").args(["inspect", &src])));
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert_eq!(v["Layers"].as_array().map(|a| a.len()), Some(3), "{src}: {o}");
    }
    // umoci reads the exported layout (unpacked from the archive) and produces the same tree.
    let x = sb.path().join("x");
    std::fs::create_dir(&x).unwrap();
    sh_ok(&format!("tar -C {} -xf {}", x.display(), ociar.display()));
    let r = umoci_unpack(&x, "v1", &sb.path().join("umoci-of-export"));
    assert_same_tree(&want, &tree(&r, &FULL), "umoci unpack of our oci-archive");
    // The docker-archive export imports back to the same layers (uncompressed now: same diff_ids).
    ok(run(img(&sb).args(["import", "--tag", "back"]).arg(&dock)));
    let a: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "ex:v1"])))).unwrap();
    let b: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "back"])))).unwrap();
    let ids = |v: &serde_json::Value| {
        v["layers"].as_array().unwrap().iter().map(|l| l["chain_id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    let back = sb.path().join("back");
    ok(run(img(&sb).args(["unpack", "back"]).arg(&back)));
    assert_same_tree(&want, &tree(&back, &FULL), "unpack after docker-archive round trip");
}

#[test]
fn build_is_deterministic_and_runs() {
    require_root();
    let sb = Sandbox::new();
    let a = sb.path().join("a");
    copy_rootfs(&a);
    let b = sb.path().join("b");
    sh_ok(&format!("cp -a {}/. {}", a.display(), b.display()));
    let build = |dir: &Path, tag: &str, extra: &[&str]| -> serde_json::Value {
        let o = ok(run(img(&sb).args(["--json", "build"]).arg(dir).args(["--tag", tag]).args(extra)));
        serde_json::from_str(&o).unwrap()
    };
    let fixed = [
        "--mtime",
        "1700000000",
        "--entrypoint",
        r#"["/bin/sh","-c"]"#,
        "--cmd",
        "echo hi",
        "--env",
        "GREETING=it's me",
        "--workdir",
        "/tmp",
        "--user",
        "1000:1000",
    ];
    let x = build(&a, "bb:x", &fixed);
    let y = build(&b, "bb:y", &fixed);
    assert_eq!(x["digest"], y["digest"], "same tree, same options: same image digest");
    let p = build(&a, "bb:plain", &[]);
    let q = build(&b, "bb:plain2", &[]);
    assert_eq!(p["layer"], q["layer"], "same tree (cp -a keeps mtimes): same layer digest");
    assert_ne!(p["layer"], x["layer"], "--mtime changes the entries");
    std::fs::write(b.join("etc/hostname"), "other\n").unwrap();
    let r = build(&b, "bb:changed", &[]);
    assert_ne!(r["layer"], p["layer"], "a changed file changes the digest");

    // The config a runtime script reads.
    let cfg: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["config", "bb:x"])))).unwrap();
    assert_eq!(cfg["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(cfg["working_dir"], "/tmp");
    assert_eq!(cfg["user"], "1000:1000");
    let env = ok(run(img(&sb).args(["config", "--format", "env", "bb:x"])));
    assert!(env.lines().any(|l| l == "GREETING=it's me") && env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    let shell = ok(run(img(&sb).args(["config", "--format", "shell", "bb:x"])));
    let o = sh_ok(&format!("{shell}\neval \"set -- $IMAGE_ENTRYPOINT $IMAGE_CMD\"; printf '<%s>' \"$@\"; echo; eval \"set -- $IMAGE_ENV\"; printf '<%s>' \"$@\""));
    assert_eq!(o, "</bin/sh><-c><echo><hi>\n<PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin><GREETING=it's me>");

    // Unpacked, the image is the tree it was built from, and busybox runs in it.
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "bb:plain"]).arg(&u)));
    let mut src = tree(&a, &FULL);
    let mut got = tree(&u, &FULL);
    src.remove(".");
    got.remove(".");
    assert_same_tree(&src, &got, "unpack of build vs its source");
    let o = ok(run(Command::new("chroot").arg(&u).args(["/bin/sh", "-c", "echo ok from $(cat /etc/hostname)"])));
    assert_eq!(o, "ok from busybox\n");

    // On a terminal (script(1) gives it one) unpack draws a progress line on stderr; in a pipe it does not.
    let tty = sb.path().join("tty");
    let o = ok(run(Command::new("script")
        .args(["-qec"])
        .arg(format!("{} unpack bb:plain {} 2>&1", bin(TOOL).display(), tty.display()))
        .arg("/dev/null")
        .env("CBUILD_DATA", &sb.data)));
    assert!(o.contains("unpack") && o.contains(" MB"), "{o:?}");
    assert!(tty.join("bin/busybox").is_file());
    let piped = run(img(&sb).args(["unpack", "bb:plain"]).arg(sb.path().join("piped")));
    assert_eq!(stderr(&piped), "", "quiet when stderr is not a terminal");
    // export to stdout.
    let o = run(img(&sb).args(["export", "bb:x", "-"]));
    let exported = sb.path().join("stdout.tar");
    std::fs::write(&exported, &o.stdout).unwrap();
    let list = sh_ok(&format!("tar -tf {}", exported.display()));
    assert!(list.lines().any(|l| l == "oci-layout") && list.lines().any(|l| l == "index.json"), "{list}");

    // zstd layers work the same way.
    let z = build(&a, "bb:zstd", &["--compression", "zstd"]);
    let i: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "bb:zstd"])))).unwrap();
    assert_eq!(i["layers"][0]["media_type"], "application/vnd.oci.image.layer.v1.tar+zstd");
    assert_eq!(i["layers"][0]["diff_id"], p["diff_id"], "compression does not change the diff_id");
    assert_eq!(z["diff_id"], p["diff_id"]);
    let uz = sb.path().join("uz");
    ok(run(img(&sb).args(["unpack", "bb:zstd"]).arg(&uz)));
    let mut gz = tree(&uz, &FULL);
    gz.remove(".");
    assert_same_tree(&src, &gz, "unpack of the zstd build");
}

#[test]
fn commit_turns_an_overlay_upper_into_a_layer() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    std::fs::create_dir_all(root.join("data/old")).unwrap();
    std::fs::write(root.join("data/old/a"), "a").unwrap();
    std::fs::write(root.join("data/b"), "b").unwrap();
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "base"])));
    let lowers = ok(run(img(&sb).args(["layers", "base"])));
    let (upper, work, mnt) = (sb.path().join("upper"), sb.path().join("work"), sb.path().join("mnt"));
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let o = run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={},upperdir={},workdir={}", lowers.trim(), upper.display(), work.display()))
        .arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let m = mnt.clone();
        let _g = Defer(move || {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        });
        // A deletion (whiteout), a replaced directory (opaque), a new file.
        std::fs::remove_file(mnt.join("data/b")).unwrap();
        std::fs::remove_dir_all(mnt.join("data/old")).unwrap();
        std::fs::create_dir(mnt.join("data/old")).unwrap();
        std::fs::write(mnt.join("data/old/fresh"), "fresh").unwrap();
        std::fs::write(mnt.join("etc/motd"), "committed\n").unwrap();
    }
    let wh = std::fs::symlink_metadata(upper.join("data/b")).unwrap();
    assert!(wh.file_type().is_char_device(), "overlayfs made a whiteout");
    ok(run(img(&sb).arg("commit").arg(&upper).args(["--from", "base", "--tag", "next", "--cmd", "/bin/sh"])));
    let i: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "next"])))).unwrap();
    assert_eq!(i["layers"].as_array().unwrap().len(), 2);
    assert_eq!(i["manifest"]["layers"][1]["digest"], i["layers"][1]["digest"]);
    assert_eq!(i["history"].as_array().unwrap().len(), 2);
    // The new layer carries OCI whiteouts, not device nodes.
    let top = i["layers"][1]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let list = sh_ok(&format!("tar -tzvf {}/images/blobs/sha256/{top}", sb.data.display()));
    assert!(list.contains("data/.wh.b") && list.contains("data/old/.wh..wh..opq"), "{list}");
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "next"]).arg(&u)));
    assert!(!u.join("data/b").exists() && !u.join("data/old/a").exists());
    assert_eq!(std::fs::read_to_string(u.join("data/old/fresh")).unwrap(), "fresh");
    assert_eq!(std::fs::read_to_string(u.join("etc/motd")).unwrap(), "committed\n");
    assert!(u.join("bin/busybox").is_file());
    // A container may create a file named `.wh.passwd` in its own view: in the upper dir it is a plain
    // file, but as a layer entry it would delete /etc/passwd. Refused, as `build` refuses it, and the
    // store is left as it was.
    let before = store_state(&sb);
    std::fs::write(upper.join("etc/.wh.passwd"), "").unwrap();
    let o = run(img(&sb).arg("commit").arg(&upper).args(["--from", "base", "--tag", "evil"]));
    assert_tool_error(&o, TOOL, "would read as a whiteout");
    assert_eq!(store_state(&sb), before);
}

/// `build` and `commit` read trees a container may still be writing (an upper dir): a regular file or a
/// directory swapped for a symlink (to a host file or directory) or a FIFO between the walker's look and
/// its open must never make root read the host file into the layer, nor block on the FIFO. A racer thread
/// swaps entries back and forth (renameat2 RENAME_EXCHANGE) while builds run; whatever the walker saw,
/// no layer holds the host's bytes and no build hangs.
#[test]
fn build_of_a_changing_tree_never_follows_symlinks_or_blocks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    require_root();
    let sb = Sandbox::new();
    let (root, aux, host) = (sb.path().join("root"), sb.path().join("aux"), sb.path().join("host"));
    for d in [&root, &aux, &host, &root.join("d")] {
        std::fs::create_dir_all(d).unwrap();
    }
    const MARK: &str = "host-secret-bytes-4b1d";
    std::fs::write(host.join("s"), MARK.repeat(8)).unwrap();
    std::fs::write(host.join("inner"), MARK.repeat(8)).unwrap();
    std::fs::write(root.join("d/inner"), "inside").unwrap();
    // Static cases: a symlink where a file could be, and a FIFO, are recorded as what they are.
    std::os::unix::fs::symlink(host.join("s"), root.join("link")).unwrap();
    sh_ok(&format!("mkfifo {}", root.join("fifo").display()));
    ok(run_bounded(img(&sb).arg("build").arg(&root).args(["--tag", "static", "--compression", "none"]), 30));
    let i: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "static"])))).unwrap();
    let top = i["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let list = sh_ok(&format!("tar -tvf {}/images/blobs/sha256/{top}", sb.data.display()));
    assert!(
        list.lines().any(|l| l.starts_with('l') && l.ends_with(&format!("link -> {}", host.join("s").display()))),
        "{list}"
    );
    assert!(list.lines().any(|l| l.starts_with('p') && l.ends_with(" fifo")), "{list}");
    let mut pairs = Vec::new();
    for i in 0..16 {
        let (f, l) = (root.join(format!("f{i}")), aux.join(format!("l{i}")));
        std::fs::write(&f, "inside").unwrap();
        std::os::unix::fs::symlink(host.join("s"), &l).unwrap();
        pairs.push((f, l));
        let (p, q) = (root.join(format!("p{i}")), aux.join(format!("q{i}")));
        std::fs::write(&p, "inside").unwrap();
        sh_ok(&format!("mkfifo {}", q.display()));
        pairs.push((p, q));
    }
    std::os::unix::fs::symlink(&host, aux.join("dl")).unwrap();
    pairs.push((root.join("d"), aux.join("dl")));
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let pairs: Vec<(CString, CString)> = pairs
            .iter()
            .map(|(a, b)| {
                (CString::new(a.as_os_str().as_bytes()).unwrap(), CString::new(b.as_os_str().as_bytes()).unwrap())
            })
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (a, b) in &pairs {
                    let r = unsafe {
                        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
                    };
                    if r != 0 {
                        return; // the sandbox is gone: the test failed elsewhere
                    }
                }
            }
        })
    };
    let _stop = {
        let stop = stop.clone();
        Defer(move || stop.store(true, Ordering::Relaxed))
    };
    let t0 = std::time::Instant::now();
    let mut built = 0;
    while t0.elapsed().as_secs() < 4 || built < 20 {
        let o = run_bounded(
            img(&sb).arg("build").arg(&root).args(["--tag", &format!("race:{built}"), "--compression", "none"]),
            30,
        );
        // A build may refuse an entry that changed under it; it must not read through it.
        if !o.status.success() {
            assert_tool_error(&o, TOOL, "changed while it was read");
        }
        built += 1;
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let blobs = sb.data.join("images/blobs/sha256");
    let mut layers = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!b.windows(MARK.len()).any(|w| w == MARK.as_bytes()), "a layer holds the host file's bytes");
        layers += usize::from(b.windows(6).any(|w| w == b"inside"));
    }
    assert!(layers > 0, "no build succeeded");
}

/// `build`/`commit` walk without recursion: a container can make a tree thousands of levels deep (a
/// recursive walk overflowed the stack: abort, no error line). Past the open-file limit (one fd per
/// level) the error is clear and the store unchanged.
#[test]
fn build_of_a_very_deep_tree() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // Deeper than PATH_MAX allows by path, so made by fds; removed by `rm -rf` (std's remove_dir_all
    // would need an fd per level too).
    let _rm = {
        let r = root.clone();
        Defer(move || {
            let _ = Command::new("rm").arg("-rf").arg(&r).status();
        })
    };
    const DEPTH: usize = 4000;
    let mut fd = nix::fcntl::open(&root, nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    for _ in 0..DEPTH {
        nix::sys::stat::mkdirat(&fd, "d", nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        fd = nix::fcntl::openat(&fd, "d", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    }
    let f = nix::fcntl::openat(
        &fd,
        "bottom",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::write(&f, b"deep").unwrap();
    drop((f, fd));
    // Below the depth: a clear error, exit 125, nothing stored.
    empty_store(&sb);
    let before = store_state(&sb);
    let o = run(Command::new("prlimit")
        .args(["--nofile=512:512", "--"])
        .arg(bin(TOOL))
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data)
        .arg("build")
        .arg(&root)
        .args(["--tag", "deep"]));
    assert_tool_error(&o, TOOL, "deeper than the open-file limit");
    assert_eq!(store_state(&sb), before);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "deep", "--compression", "none"])));
    let i: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "deep"])))).unwrap();
    let top = i["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let list = sh_ok(&format!("tar -tf {}/images/blobs/sha256/{top}", sb.data.display()));
    assert_eq!(list.lines().count(), DEPTH + 1);
    assert_eq!(list.lines().last().unwrap(), format!("{}bottom", "d/".repeat(DEPTH)));
    let content =
        sh_ok(&format!("tar -xOf {}/images/blobs/sha256/{top} {}bottom", sb.data.display(), "d/".repeat(DEPTH)));
    assert_eq!(content, "deep");
}

/// A PAX header with `recs` (key, value) for the entry after it: paths and link targets longer than a
/// ustar header holds.
fn pax(recs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (k, v) in recs {
        let rec = format!(" {k}={v}\n");
        let mut len = rec.len() + 1;
        while format!("{len}{rec}").len() != len {
            len += 1;
        }
        body.push_str(&format!("{len}{rec}"));
    }
    tar_entry("PaxHeaders/p", b'x', body.as_bytes(), "", 0o644)
}

/// A `Command` for cbuild-image whose open-file limit (soft and hard) is `n`.
fn img_nofile(sb: &Sandbox, n: u64) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = img(sb);
    // SAFETY: setrlimit is async-signal-safe; lowering a limit needs no privilege.
    unsafe {
        c.pre_exec(move || {
            let l = libc::rlimit { rlim_cur: n, rlim_max: n };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// A layer can make a tree far deeper than its paths spell out (through a symlink to a directory
/// already half of PATH_MAX deep). Removing it must need neither an fd per level nor a stack frame per
/// level: under an open-file limit of 64, a 3000-level tree is removed by `unpack`'s and `layers`' undo
/// when a later entry fails, by a whiteout in the next layer, and by `gc` (a layer dir and a killed
/// extraction's leftover).
#[test]
fn deep_trees_are_removed_with_few_open_files() {
    require_root();
    let sb = Sandbox::new();
    // Should an assertion fail, what is left needs a remover that copes with the depth.
    let _rm = {
        let p = sb.path().to_path_buf();
        Defer(move || {
            let _ = Command::new("rm").arg("-rf").arg(&p).status();
        })
    };
    const HALF: usize = 1500;
    const NOFILE: u64 = 64;
    let deep = |bad: bool| {
        let mut v = vec![
            pax(&[("path", &format!("{}f", "d/".repeat(HALF)))]),
            tar_entry("f", b'0', b"1", "", 0o644),
            pax(&[("linkpath", &format!("/{}", "d/".repeat(HALF).trim_end_matches('/')))]),
            tar_entry("s", b'2', b"", "", 0o777),
            pax(&[("path", &format!("s/{}f", "e/".repeat(HALF)))]),
            tar_entry("f", b'0', b"2", "", 0o644),
        ];
        if bad {
            v.push(tar_entry("../escape", b'0', b"x", "", 0o644));
        }
        tar(&v)
    };
    let l = Layout::new(&sb.path().join("oci"));
    l.image("bad", &[(deep(true), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let before = store_state(&sb);
    let dest = sb.path().join("dest");
    let o = run(img_nofile(&sb, NOFILE).args(["unpack", "bad"]).arg(&dest));
    assert_tool_error(&o, TOOL, "path escapes the root");
    assert!(!stderr(&o).contains("undo"), "{}", stderr(&o));
    assert!(!dest.exists(), "unpack left {} behind", dest.display());
    let o = run(img_nofile(&sb, NOFILE).args(["layers", "bad"]));
    assert_tool_error(&o, TOOL, "path escapes the root");
    assert!(!stderr(&o).contains("undo"), "{}", stderr(&o));
    assert_eq!(store_state(&sb), before, "layers left something in the store");

    // The tree is there when nothing fails, and a whiteout in the next layer removes it.
    let wh = tar(&[tar_entry(".wh.d", b'0', b"", "", 0o644), tar_entry(".wh.s", b'0', b"", "", 0o644)]);
    l.image("good", &[(deep(false), LAYER_TAR), (wh, LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    ok(run(img_nofile(&sb, NOFILE).args(["unpack", "good"]).arg(&dest)));
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "the whiteouts left something");
    let lowers = ok(run(img_nofile(&sb, NOFILE).args(["layers", "good"])));
    let bottom = PathBuf::from(lowers.lines().last().unwrap());
    let fd = nix::fcntl::open(&bottom, nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    let bottom_file = format!("{}e/{}f", "d/".repeat(HALF), "e/".repeat(HALF - 1));
    // Relative to an fd: longer than PATH_MAX as one path.
    let half = bottom_file.len() / 2;
    let cut = bottom_file[..half].rfind('/').unwrap();
    let mid =
        nix::fcntl::openat(&fd, &bottom_file[..cut], nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    assert!(nix::sys::stat::fstatat(&mid, &bottom_file[cut + 1..], nix::fcntl::AtFlags::empty()).is_ok());
    drop((fd, mid));

    // gc: the image's layer dirs once it is removed, and a killed extraction's leftover, as deep and
    // read-only at every level.
    let stale = sb.data.join("layers").join(format!(".tmp-{}-1", "a".repeat(64)));
    std::fs::create_dir(&stale).unwrap();
    let mut fd = nix::fcntl::open(&stale, nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    for _ in 0..2 * HALF {
        nix::sys::stat::mkdirat(&fd, "d", nix::sys::stat::Mode::from_bits_truncate(0o555)).unwrap();
        fd = nix::fcntl::openat(&fd, "d", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
    }
    drop(fd);
    ok(run(img(&sb).args(["rm", "good", "bad"])));
    let rep: serde_json::Value =
        serde_json::from_str(&ok(run(img_nofile(&sb, NOFILE).args(["--json", "gc"])))).unwrap();
    assert_eq!((rep["layer_dirs"].as_u64(), rep["temp"].as_u64()), (Some(2), Some(1)), "{rep}");
    assert_eq!(
        std::fs::read_dir(sb.data.join("layers")).unwrap().flatten().filter(|e| e.file_name() != ".locks").count(),
        0
    );
}

// ---------------------------------------------------------------------------------------------------
// Hostile input.

/// Import a one-layer image with `entries`; `unpack` and `layers` must both fail with `needle`, exit 125,
/// and leave neither an unpack dir nor a layer dir nor a temporary behind.
#[track_caller]
fn assert_extract_refused(entries: &[Vec<u8>], needle: &str) {
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    l.image("bad", &[(tar(entries), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).args(["import"]).arg(&l.dir)));
    let before = store_state(&sb);
    let dest = sb.path().join("dest");
    let o = run(img(&sb).args(["unpack", "bad"]).arg(&dest));
    assert_tool_error(&o, TOOL, needle);
    assert_eq!(stderr(&o).lines().filter(|l| l.starts_with("cbuild-image: ")).count(), 1, "{}", stderr(&o));
    assert!(!dest.exists(), "unpack left {} behind", dest.display());
    let o = run(img(&sb).args(["layers", "bad"]));
    assert_tool_error(&o, TOOL, needle);
    assert_eq!(store_state(&sb), before, "layers left something in the store");
}

#[test]
fn extraction_refuses_escapes_and_root_replacement() {
    require_root();
    assert_extract_refused(&[tar_entry("../escape", b'0', b"x", "", 0o644)], "path escapes the root");
    assert_extract_refused(&[tar_entry("a/../../escape", b'0', b"x", "", 0o644)], "path escapes the root");
    assert_extract_refused(&[tar_entry("/abs", b'0', b"x", "", 0o644)], "absolute path");
    assert_extract_refused(
        &[tar_entry("ok", b'0', b"x", "", 0o644), tar_entry("h", b'1', b"", "../../etc/passwd", 0o644)],
        "hardlink target",
    );
    // CVE-2021-29136: a `.` symlink would replace the root with a link to anywhere.
    assert_extract_refused(
        &[tar_entry(".", b'2', b"", "/tmp", 0o777), tar_entry("pwned", b'0', b"x", "", 0o644)],
        "replace the root",
    );
    assert_extract_refused(&[tar_entry("./", b'0', b"x", "", 0o644)], "replace the root");
    // A write through a symlink to a directory that exists only outside the root.
    assert_extract_refused(
        &[tar_entry("out", b'2', b"", "/etc", 0o777), tar_entry("out/pwned", b'0', b"x", "", 0o644)],
        "points to nothing inside the root",
    );
    // A hard link through a symlink resolves inside the root, where there is nothing to link to.
    assert_extract_refused(
        &[tar_entry("etc", b'2', b"", "/etc", 0o777), tar_entry("h", b'1', b"", "etc/passwd", 0o644)],
        "hardlink target",
    );
}

#[test]
fn writes_through_symlinks_and_duplicates_stay_inside() {
    require_root();
    let sb = Sandbox::new();
    let outside = sb.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "untouched").unwrap();
    let o = outside.to_str().unwrap().trim_start_matches('/').to_string();
    let l = Layout::new(&sb.path().join("oci"));
    let up = "../".repeat(12);
    l.image(
        "sym",
        &[(
            tar(&[
                // The same path as the outside dir, made inside the root: where the links resolve.
                tar_entry(&format!("{o}/"), b'5', b"", "", 0o755),
                tar_entry("abs", b'2', b"", &format!("/{o}"), 0o777),
                tar_entry("abs/pwned", b'0', b"in", "", 0o644),
                tar_entry("rel", b'2', b"", &up, 0o777),
                tar_entry(&format!("rel/{o}/pwned2"), b'0', b"in", "", 0o644),
                // A duplicate: first a symlink to the victim, then a file of the same name.
                tar_entry("dup", b'2', b"", &format!("/{o}/victim"), 0o777),
                tar_entry("dup", b'0', b"replaced", "", 0o644),
                tar_entry("suid", b'0', b"#!/bin/sh\n", "", 0o4755),
                tar_entry("dev/zero2", b'3', b"", "", 0o666),
            ]),
            LAYER_TAR,
        )],
        |_, _| {},
    );
    ok(run(img(&sb).args(["import"]).arg(&l.dir)));
    let dest = sb.path().join("dest");
    ok(run(img(&sb).args(["unpack", "sym"]).arg(&dest)));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "something was written outside");
    assert_eq!(std::fs::read_to_string(outside.join("victim")).unwrap(), "untouched");
    // The writes landed inside the root, where the symlinks point when the root is `/`.
    assert_eq!(std::fs::read_to_string(dest.join(&o).join("pwned")).unwrap(), "in");
    assert_eq!(std::fs::read_to_string(dest.join(&o).join("pwned2")).unwrap(), "in");
    let dup = std::fs::symlink_metadata(dest.join("dup")).unwrap();
    assert!(dup.is_file() && std::fs::read_to_string(dest.join("dup")).unwrap() == "replaced");
    assert_eq!(std::fs::metadata(dest.join("suid")).unwrap().mode() & 0o7777, 0o4755, "setuid kept inside the rootfs");
    let dev = std::fs::symlink_metadata(dest.join("dev/zero2")).unwrap();
    assert!(dev.file_type().is_char_device(), "root creates device nodes");
    // The same layer in the layer store.
    let dirs = ok(run(img(&sb).args(["layers", "sym"])));
    let ldir = Path::new(dirs.trim());
    assert_eq!(std::fs::read_to_string(ldir.join(&o).join("pwned")).unwrap(), "in");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn digest_size_and_diff_id_mismatches_are_refused() {
    require_root();
    let sb = Sandbox::new();
    let good = tar(&[tar_entry("f", b'0', b"content", "", 0o644)]);
    // Seed the store so "unchanged" is a real comparison.
    let seed = Layout::new(&sb.path().join("seed"));
    seed.image("seed", &[(good.clone(), LAYER_GZIP)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&seed.dir)));
    let before = store_state(&sb);

    // A blob whose bytes do not match its name.
    let l = Layout::new(&sb.path().join("tampered"));
    l.image("t", &[(good.clone(), LAYER_TAR)], |_, _| {});
    let d = sha256(&good);
    std::fs::write(l.dir.join("blobs/sha256").join(&d), tar(&[tar_entry("f", b'0', b"CONTENT", "", 0o644)])).unwrap();
    let o = run(img(&sb).arg("import").arg(&l.dir));
    assert_tool_error(&o, TOOL, &format!("verify: layer sha256:{d}: content has digest"));
    assert_eq!(store_state(&sb), before);

    // A descriptor that lies about the size.
    let l = Layout::new(&sb.path().join("size"));
    l.image("s", &[(good.clone(), LAYER_TAR)], |m, _| m["layers"][0]["size"] = serde_json::json!(10));
    let o = run(img(&sb).arg("import").arg(&l.dir));
    assert_tool_error(&o, TOOL, "descriptor says 10");
    assert_eq!(store_state(&sb), before);

    // The same, through an oci-archive and a docker-archive.
    let ar = sb.path().join("size.tar");
    sh_ok(&format!("tar -C {} -cf {} .", l.dir.display(), ar.display()));
    assert_tool_error(&run(img(&sb).arg("import").arg(&ar)), TOOL, "descriptor says 10");
    assert_eq!(store_state(&sb), before);

    // A config whose diff_id is not the layer's: import cannot see it in a gzip layer, extraction does,
    // and throws the result away.
    let l = Layout::new(&sb.path().join("diffid"));
    let other = format!("sha256:{}", "0".repeat(64));
    l.image("dd", &[(good.clone(), LAYER_GZIP)], |_, c| c["rootfs"]["diff_ids"][0] = serde_json::json!(other));
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let before = store_state(&sb);
    let dest = sb.path().join("dest");
    assert_tool_error(&run(img(&sb).args(["unpack", "dd"]).arg(&dest)), TOOL, "the config's diff_id is");
    assert!(!dest.exists());
    assert_tool_error(&run(img(&sb).args(["layers", "dd"])), TOOL, "the config's diff_id is");
    assert_tool_error(&run(img(&sb).args(["verify", "dd"])), TOOL, "the config's diff_id is");
    assert_eq!(store_state(&sb), before);

    // A docker-archive whose uncompressed layer is not the config's diff_id is refused at import.
    let dock = sb.path().join("dock");
    std::fs::create_dir(&dock).unwrap();
    std::fs::write(dock.join("layer.tar"), &good).unwrap();
    let cfg =
        serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [other]}});
    std::fs::write(dock.join("c.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    std::fs::write(dock.join("manifest.json"), r#"[{"Config":"c.json","RepoTags":["d:1"],"Layers":["layer.tar"]}]"#)
        .unwrap();
    sh_ok(&format!("tar -C {} -cf {}/dock.tar .", dock.display(), sb.path().display()));
    assert_tool_error(&run(img(&sb).arg("import").arg(sb.path().join("dock.tar"))), TOOL, "the config's diff_id is");
    assert_eq!(store_state(&sb), before);
}

/// A change to a hand-made (manifest, config).
type Edit = dyn Fn(&mut serde_json::Value, &mut serde_json::Value);

#[test]
fn hostile_manifests_and_archives_are_refused() {
    require_root();
    let sb = Sandbox::new();
    let good = tar(&[tar_entry("f", b'0', b"content", "", 0o644)]);
    let seed = Layout::new(&sb.path().join("seed"));
    seed.image("seed", &[(good.clone(), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&seed.dir)));
    let before = store_state(&sb);
    let cases: Vec<(&str, Box<Edit>, &str)> = vec![
        (
            "traversal digest",
            Box::new(|m, _| m["layers"][0]["digest"] = serde_json::json!("sha256:../../../../etc/passwd")),
            "Invalid encoded value",
        ),
        (
            "other algorithm",
            Box::new(|m, _| m["layers"][0]["digest"] = serde_json::json!(format!("sha512:{}", "a".repeat(128)))),
            "unsupported digest",
        ),
        (
            "unknown media type",
            Box::new(|m, _| m["layers"][0]["mediaType"] = serde_json::json!("application/x-evil")),
            "unsupported media type",
        ),
        (
            "diff_id count",
            Box::new(|_, c| c["rootfs"]["diff_ids"] = serde_json::json!([])),
            "1 layers but the config lists 0 diff_ids",
        ),
        (
            "huge config",
            Box::new(
                |m, _| m["config"] = serde_json::json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 1u64 << 40}),
            ),
            "limit for JSON",
        ),
    ];
    for (what, edit, needle) in cases {
        let l = Layout::new(&sb.path().join(what.replace(' ', "-")));
        l.image("h", &[(good.clone(), LAYER_TAR)], edit);
        let o = run(img(&sb).arg("import").arg(&l.dir));
        assert_tool_error(&o, TOOL, needle);
        assert_eq!(store_state(&sb), before, "{what}");
    }
    // An archive whose own entries climb out, and a docker manifest.json pointing outside the archive.
    let evil = sb.path().join("evil.tar");
    std::fs::write(&evil, tar(&[tar_entry("../../manifest.json", b'0', b"[]", "", 0o644)])).unwrap();
    assert_tool_error(&run(img(&sb).arg("import").arg(&evil)), TOOL, "path escapes the archive");
    let evil2 = sb.path().join("evil2.tar");
    let man = br#"[{"Config":"../../../etc/passwd","RepoTags":["e:1"],"Layers":[]}]"#;
    std::fs::write(&evil2, tar(&[tar_entry("manifest.json", b'0', man, "", 0o644)])).unwrap();
    assert_tool_error(&run(img(&sb).arg("import").arg(&evil2)), TOOL, "missing from the archive");
    let junk = sb.path().join("junk");
    std::fs::write(&junk, b"this is not a tar archive at all, not even close.................").unwrap();
    assert_tool_error(&run(img(&sb).arg("import").arg(&junk)), TOOL, "not a readable tar archive");
    assert_eq!(store_state(&sb), before);
    // Unknown references and bad arguments follow the same contract.
    assert_tool_error(&run(img(&sb).args(["unpack", "nope", "/tmp/never"])), TOOL, "no such image");
    assert_tool_error(&run(img(&sb).args(["unpack"])), TOOL, "arguments");
}

#[test]
fn decompression_bombs_hit_the_limit() {
    require_root();
    let sb = Sandbox::new();
    let big = vec![0u8; 8 << 20];
    let bomb = tar(&[tar_entry("zeros", b'0', &big, "", 0o644)]);
    let l = Layout::new(&sb.path().join("oci"));
    l.image("bomb", &[(bomb, LAYER_GZIP)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let before = store_state(&sb);
    let dest = sb.path().join("dest");
    let o = run(img(&sb).args(["unpack", "--max-layer-size", "1000000", "bomb"]).arg(&dest));
    assert_tool_error(&o, TOOL, "larger than the limit of 1000000 bytes");
    assert!(!dest.exists());
    let o = run(img(&sb).args(["layers", "--max-layer-size", "1000000", "bomb"]));
    assert_tool_error(&o, TOOL, "larger than the limit");
    // A PAX record the tar reader would hold in memory whole: refused before it is buffered.
    let pax = tar(&[tar_entry("paxhdr", b'x', &vec![b'1'; 2 << 20], "", 0o644), tar_entry("f", b'0', b"", "", 0o644)]);
    let l3 = Layout::new(&sb.path().join("pax"));
    l3.image("pax", &[(pax, LAYER_GZIP)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l3.dir)));
    let o = run(img(&sb).args(["unpack", "pax"]).arg(&dest));
    assert_tool_error(&o, TOOL, "tar metadata record (x) of 2097152 bytes exceeds");
    assert!(!dest.exists());
    let many: Vec<Vec<u8>> = (0..50).map(|i| tar_entry(&format!("f{i}"), b'0', b"", "", 0o644)).collect();
    let l2 = Layout::new(&sb.path().join("many"));
    l2.image("many", &[(tar(&many), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l2.dir)));
    let before2 = store_state(&sb);
    assert_tool_error(&run(img(&sb).args(["layers", "--max-entries", "10", "many"])), TOOL, "more than 10 entries");
    assert_eq!(store_state(&sb), before2);
    assert_ne!(before, before2);
}

/// An archive is staged whole before its manifests are read, so a small compressed archive (`docker save
/// | gzip`, a gzip or zstd oci-archive) that inflates to gigabytes would fill the disk: `--max-size`
/// bounds the uncompressed stream (and `--max-entries` its entries), exit 125, nothing left behind.
#[test]
fn compressed_archive_import_is_bounded() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let zeros = tar(&[tar_entry("zeros", b'0', &vec![0u8; 8 << 20], "", 0o644)]);
    l.image("bomb", &[(zeros, LAYER_TAR)], |_, _| {});
    // Something no manifest names is staged too: the bound is on the whole stream.
    std::fs::write(l.dir.join("junk"), vec![0u8; 4 << 20]).unwrap();
    let gz = sb.path().join("bomb.tar.gz");
    let zst = sb.path().join("bomb.tar.zst");
    sh_ok(&format!("tar -C {} -c . | gzip -9 > {}", l.dir.display(), gz.display()));
    sh_ok(&format!("tar -C {} -c . | zstd -q -19 > {}", l.dir.display(), zst.display()));
    assert!(std::fs::metadata(&gz).unwrap().len() < 100_000, "the archive is small");
    empty_store(&sb);
    let before = store_state(&sb);
    for a in [&gz, &zst] {
        let o = run(img(&sb).args(["import", "--max-size", "1000000"]).arg(a));
        assert_tool_error(&o, TOOL, "uncompressed archive larger than the limit of 1000000 bytes");
        assert_eq!(store_state(&sb), before, "a refused import left something behind");
        let o = run(img(&sb).args(["import", "--max-entries", "3"]).arg(a));
        assert_tool_error(&o, TOOL, "more than 3 entries");
        assert_eq!(store_state(&sb), before);
    }
    // From stdin too, and the same archives within the limits import.
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("{} import --max-size 1000000 - < {}", bin(TOOL).display(), gz.display()))
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data));
    assert_tool_error(&o, TOOL, "larger than the limit");
    assert_eq!(store_state(&sb), before);
    ok(run(img(&sb).args(["import", "--max-size", "20000000"]).arg(&gz)));
    ok(run(img(&sb).arg("import").arg(&zst)));
    ok(run(img(&sb).args(["verify", "bomb"])));
}

/// The guard that bounds PAX and long-name records follows the header chain beside the tar reader; an
/// archive that made the two disagree on where headers are would slip a huge record past it. Each of
/// these made the guard lose the chain: a checksum written with a `+` (the tar crate accepts it), a GNU
/// sparse entry, a PAX `size` record that moves the next header.
#[test]
fn tar_guard_follows_the_reader_past_odd_headers() {
    require_root();
    let huge_pax = || tar_entry("paxhdr", b'x', &vec![b'1'; 2 << 20], "", 0o644);
    let mut plus = tar_entry("plus", b'0', b"x", "", 0o644);
    rechecksum(&mut plus, |s| format!("+{s:06o}\0"));
    let mut sparse = tar_header("sparse", b'S', 0, "", 0o644);
    sparse[257..265].copy_from_slice(b"ustar  \0"); // GNU magic: the reader treats it as GNU sparse
    sparse[483..495].copy_from_slice(b"00000000000\0");
    rechecksum(&mut sparse, |s| format!("{s:06o}\0 "));
    let record = "13 size=1024\n";
    let moved = [
        tar_entry("pax-size", b'x', record.as_bytes(), "", 0o644),
        tar_header("moved", b'0', 0, "", 0o644),
        vec![b'A'; 1024],
    ]
    .concat();
    for (what, first) in [("plus checksum", plus), ("GNU sparse", sparse), ("PAX size", moved)] {
        eprintln!("case: {what}");
        assert_extract_refused(
            &[first, huge_pax(), tar_entry("f", b'0', b"", "", 0o644)],
            "exceeds the 1048576-byte limit",
        );
    }
}

/// `export` writes a temporary beside FILE and renames it: in a shared directory (/tmp) someone may have
/// planted a symlink at that name, and root must not write through it (the classic /tmp race). In a new
/// PID namespace the tool is pid 1, so the temporary's name is known in advance.
#[test]
fn export_does_not_write_through_a_planted_temporary() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    l.image("ex", &[(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let victim = sb.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let shared = sb.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for pid in 1..4 {
        std::os::unix::fs::symlink(&victim, shared.join(format!(".out.tar.tmp-{pid}"))).unwrap();
    }
    let out = shared.join("out.tar");
    let o = run(Command::new("unshare")
        .args(["--pid", "--fork", "--"])
        .arg(bin(TOOL))
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data)
        .args(["export", "ex"])
        .arg(&out));
    assert!(std::fs::read(&victim).unwrap() == b"precious", "export wrote through a planted symlink");
    assert!(std::fs::symlink_metadata(&victim).unwrap().is_file());
    if o.status.success() {
        let b = std::fs::read(&out).unwrap();
        assert!(b.len() > 1024 && std::fs::symlink_metadata(&out).unwrap().is_file());
    } else {
        assert_tool_error(&o, TOOL, "out.tar");
        assert!(!out.exists());
    }
}

/// Run `cmd`, killing it after `secs`: a command that never ends is a failure, not a hung suite.
#[track_caller]
fn run_bounded(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A layout directory is input too: a blob that is a symlink to /dev/zero (or a FIFO, or a file much
/// larger than its descriptor) must not be copied without bound into the store's staging area.
#[test]
fn layout_dir_blobs_are_read_no_further_than_their_size() {
    require_root();
    let sb = Sandbox::new();
    let good = tar(&[tar_entry("f", b'0', b"content", "", 0o644)]);
    let seed = Layout::new(&sb.path().join("seed"));
    seed.image("seed", &[(good.clone(), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&seed.dir)));
    let before = store_state(&sb);
    for (what, needle) in
        [("zero", "not a regular file"), ("fifo", "not a regular file"), ("huge", "size is more than")]
    {
        let l = Layout::new(&sb.path().join(what));
        let other = tar(&[tar_entry(what, b'0', b"other", "", 0o644)]);
        l.image("h", &[(other.clone(), LAYER_TAR)], |_, _| {});
        let blob = l.dir.join("blobs/sha256").join(sha256(&other));
        std::fs::remove_file(&blob).unwrap();
        match what {
            "zero" => std::os::unix::fs::symlink("/dev/zero", &blob).unwrap(),
            "fifo" => nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
            // A sparse terabyte: its first bytes are the real blob, the rest is what the copy must not take.
            _ => {
                let f = std::fs::File::create(&blob).unwrap();
                std::io::Write::write_all(&mut &f, &other).unwrap();
                f.set_len(1 << 40).unwrap();
            }
        }
        let o = run_bounded(img(&sb).arg("import").arg(&l.dir), 20);
        assert_tool_error(&o, TOOL, needle);
        assert_eq!(store_state(&sb), before, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Store behaviour: indexes, concurrency, interrupted imports, gc.

#[test]
fn image_index_resolves_to_the_platform() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let arm = l.image("x", &[(tar(&[tar_entry("arch", b'0', b"arm64", "", 0o644)]), LAYER_TAR)], |_, _| {});
    let amd = l.image("x", &[(tar(&[tar_entry("arch", b'0', b"amd64", "", 0o644)]), LAYER_TAR)], |_, _| {});
    let size =
        |d: &str| std::fs::metadata(l.dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap().len();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": size(&arm), "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": size(&amd), "platform": {"os": "linux", "architecture": "amd64"}},
    ]});
    let ib = serde_json::to_vec(&index).unwrap();
    let id = l.blob(&ib);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": ib.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(l.dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    for (platform, want, tag) in [("linux/amd64", "amd64", "m:amd"), ("linux/arm64", "arm64", "m:arm")] {
        let out = ok(run(img(&sb).args(["import", "--platform", platform, "--tag", tag]).arg(&l.dir)));
        assert!(out.contains(if want == "amd64" { &amd } else { &arm }), "{out}");
        let d = sb.path().join(want);
        ok(run(img(&sb).args(["unpack", tag]).arg(&d)));
        assert_eq!(std::fs::read_to_string(d.join("arch")).unwrap(), want);
    }
    let o = run(img(&sb).args(["import", "--platform", "linux/s390x"]).arg(&l.dir));
    assert_tool_error(&o, TOOL, "no manifest for platform linux/s390x");
    // The same manifests listed directly in index.json, one per platform: still one image.
    let flat = serde_json::json!({"schemaVersion": 2, "manifests": index["manifests"]});
    std::fs::write(l.dir.join("index.json"), serde_json::to_vec(&flat).unwrap()).unwrap();
    let out = ok(run(img(&sb).args(["import", "--platform", "linux/arm64", "--tag", "flat"]).arg(&l.dir)));
    assert!(out.contains(&arm) && out.lines().count() == 1, "{out}");
    let o = run(img(&sb).args(["import", "--platform", "linux/s390x"]).arg(&l.dir));
    assert_tool_error(&o, TOOL, "no manifest for platform linux/s390x");
}

#[test]
fn concurrent_imports_and_layers_store_once() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    let other = Sandbox::new();
    ok(run(img(&other).arg("build").arg(&root).args(["--tag", "cc:1"])));
    let ar = sb.path().join("cc.tar");
    ok(run(img(&other).args(["export", "--format", "docker-archive", "cc:1"]).arg(&ar)));
    let spawn = |args: &[&str]| img(&sb).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let a = spawn(&["import", ar.to_str().unwrap()]);
    let b = spawn(&["import", ar.to_str().unwrap()]);
    ok(a.wait_with_output().unwrap());
    ok(b.wait_with_output().unwrap());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.data.join("images/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(
        std::fs::read_dir(sb.data.join("images/blobs/sha256")).unwrap().count(),
        3,
        "manifest, config, one layer"
    );
    let a = spawn(&["layers", "cc:1"]);
    let b = spawn(&["layers", "cc:1"]);
    let (oa, ob) = (ok(a.wait_with_output().unwrap()), ok(b.wait_with_output().unwrap()));
    assert_eq!(oa, ob);
    let names: Vec<String> = std::fs::read_dir(sb.data.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.iter().filter(|n| n.as_str() != ".locks").count(), 1, "{names:?}");
    assert!(Path::new(oa.trim()).join("bin/busybox").is_file());
    assert!(std::fs::read_dir(sb.data.join("images/.tmp")).unwrap().next().is_none(), "no staging left");
}

#[test]
fn killed_import_leaves_no_image_and_gc_cleans_up() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    let other = Sandbox::new();
    ok(run(img(&other).arg("build").arg(&root).args(["--tag", "k:1", "--compression", "none"])));
    let ar = sb.path().join("k.tar");
    ok(run(img(&other).args(["export", "k:1"]).arg(&ar)));
    let bytes = std::fs::read(&ar).unwrap();
    empty_store(&sb);
    let before = store_state(&sb);
    // Feed half the archive on stdin, then kill the importer: it is mid-stream, by construction.
    let mut c = img(&sb)
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.kill().unwrap();
    c.wait().unwrap();
    drop(stdin);
    assert_eq!(ok(run(img(&sb).args(["--json", "ls"]))), "", "no image is visible");
    let left = std::fs::read_dir(sb.data.join("images/.tmp")).unwrap().count();
    assert_eq!(left, 1, "the killed import's staging dir is there");
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["temp"], 1, "{rep}");
    assert_eq!(store_state(&sb), before);
    // And the full stream imports fine.
    let mut c =
        img(&sb).args(["import", "--tag", "k:2", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(&bytes).unwrap();
    ok(c.wait_with_output().unwrap());
}

/// A reader holds the store lock shared from start to end: an `export` stalled on a full pipe (its reader
/// not reading) keeps `rm` and `gc` of its image waiting, and its archive comes out whole; then they run.
#[test]
fn rm_and_gc_wait_for_a_reader_of_the_image() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "r:1"])));
    // busybox makes the archive far larger than a pipe's 64 KiB: export blocks in a write.
    let mut export = img(&sb)
        .args(["export", "r:1", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = export.stdout.take().unwrap();
    let mut first = [0u8; 512];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    let mut rm =
        img(&sb).args(["rm", "r:1"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(rm.try_wait().unwrap().is_none(), "rm waits for the export");
    let mut rest = vec![];
    std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
    let st = export.wait().unwrap();
    assert!(st.success(), "export: {st:?}");
    let ar = sb.path().join("r.tar");
    std::fs::write(&ar, [&first[..], &rest].concat()).unwrap();
    let list = sh_ok(&format!("tar -tf {}", ar.display()));
    assert!(
        list.lines().any(|l| l == "index.json") && list.lines().filter(|l| l.starts_with("blobs/sha256/")).count() >= 3
    );
    let o = rm.wait_with_output().unwrap();
    assert!(o.status.success(), "rm: {}", stderr(&o));
    let rep: serde_json::Value = gc_report(&sb);
    assert!(rep["blobs"].as_u64().unwrap() >= 3, "gc then removes the image's blobs: {rep}");
    // The archive the export wrote is a whole image: import it back.
    ok(run(img(&sb).arg("import").arg(&ar)));
    assert_eq!(ok(run(img(&sb).args(["layers", "r:1"]))).lines().count(), 1);
}

#[test]
fn rm_and_gc_keep_what_is_used() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "g:1"])));
    std::fs::write(root.join("extra"), "x").unwrap();
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "g:2"])));
    let l1 = ok(run(img(&sb).args(["layers", "g:1"])));
    let l2 = ok(run(img(&sb).args(["layers", "g:2"])));
    // Nothing unreferenced yet.
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!((rep["blobs"].as_u64(), rep["layer_dirs"].as_u64()), (Some(0), Some(0)), "{rep}");
    // g:2's layer is in use by a mount: rm + gc removes its blobs but keeps the dir.
    let _m = overlay(&l2, &sb.path().join("mnt"));
    ok(run(img(&sb).args(["rm", "g:2"])));
    assert_tool_error(&run(img(&sb).args(["inspect", "g:2"])), TOOL, "no such image");
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["blobs"].as_u64(), Some(3), "{rep}");
    assert_eq!(rep["kept_mounted"].as_u64(), Some(1), "{rep}");
    assert!(Path::new(l2.trim()).is_dir() && Path::new(l1.trim()).is_dir());
    ok(run(img(&sb).args(["rm", "g:1"])));
    // What a killed `layers` leaves: a temporary dir whose lock nobody holds.
    let stale = sb.data.join("layers").join(format!(".tmp-{}-1", "a".repeat(64)));
    std::fs::create_dir_all(stale.join("usr")).unwrap();
    drop(_m);
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(2), "{rep}");
    assert_eq!(rep["temp"].as_u64(), Some(1), "{rep}");
    assert!(!stale.exists());
    assert!(!Path::new(l1.trim()).exists() && !Path::new(l2.trim()).exists());
    assert_eq!(std::fs::read_dir(sb.data.join("images/blobs/sha256")).unwrap().count(), 0);
}

/// A container's root overlay lives in the container's own mount namespace, not in the one `gc` runs in:
/// its layer dirs are still in use, and gc must see that.
#[test]
fn gc_keeps_layer_dirs_mounted_in_another_mount_namespace() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    l.image("ns", &[(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dirs = ok(run(img(&sb).args(["layers", "ns"])));
    let layer = dirs.trim().to_string();
    let empty = sb.path().join("empty");
    let mnt = sb.path().join("mnt");
    std::fs::create_dir(&empty).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={layer}:{} {} && echo ready && exec sleep 120",
        empty.display(),
        mnt.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let _kill = Defer(move || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    });
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the overlay mount in the new namespace failed");
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&layer), "the mount leaked to the host");
    ok(run(img(&sb).args(["rm", "ns"])));
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["kept_mounted"].as_u64(), Some(1), "{rep}");
    assert!(Path::new(&layer).join("f").is_file(), "gc removed a layer dir a container still uses");
    let _ = child.kill();
    let _ = child.wait();
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(1), "{rep}");
    assert!(!Path::new(&layer).exists());
}

#[test]
fn docker25_archive_follows_manifest_json() {
    require_root();
    let sb = Sandbox::new();
    // Docker 25+ `docker save`: an OCI layout whose manifest.json points into blobs/sha256/, with a
    // legacy-style symlink that a careless reader would follow out of the archive.
    let l = docker25_layout(&sb.path().join("d25"));
    let ar = sb.path().join("d25.tar");
    sh_ok(&format!("tar -C {} -cf {} .", l.dir.display(), ar.display()));
    let out = ok(run(img(&sb).arg("import").arg(&ar)));
    assert!(out.starts_with("hello:25\t"), "{out}");
    let d = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "hello:25"]).arg(&d)));
    assert_eq!(std::fs::read_to_string(d.join("hello")).unwrap(), "from docker 25");
}

#[test]
fn rootless_layers_use_user_xattrs_and_skip_devices() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    // The whiteouts need something below to hide: a whiteout of nothing is left out of the overlay form.
    let lower = tar(&[
        tar_entry("d/", b'5', b"", "", 0o755),
        tar_entry("d/old", b'0', b"old", "", 0o644),
        tar_entry("gone", b'0', b"gone", "", 0o644),
    ]);
    l.image(
        "r",
        &[
            (lower, LAYER_GZIP),
            (
                tar(&[
                    tar_entry("d/", b'5', b"", "", 0o755),
                    tar_entry("d/.wh..wh..opq", b'0', b"", "", 0o644),
                    tar_entry("d/f", b'0', b"f", "", 0o644),
                    tar_entry(".wh.gone", b'0', b"", "", 0o644),
                    tar_entry("null2", b'3', b"", "", 0o666),
                    tar_entry("ro/", b'5', b"", "", 0o555),
                    tar_entry("ro/inside", b'0', b"x", "", 0o444),
                ]),
                LAYER_GZIP,
            ),
        ],
        |_, _| {},
    );
    sh_ok(&format!("chmod -R a+rX {} && chown -R 1000:1000 {}", sb.path().display(), sb.data.display()));
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"]).arg(bin(TOOL)).args(args);
        c.env("CBUILD_DATA", &sb.data).env("CBUILD_STATE", &sb.state);
        run(&mut c)
    };
    ok(as_user(&["import", l.dir.to_str().unwrap()]));
    let o = as_user(&["layers", "r"]);
    let dir = PathBuf::from(ok(o.clone()).lines().next().unwrap());
    assert!(stderr(&o).contains("skipped 1 device nodes"), "{}", stderr(&o));
    assert_eq!(xattrs(&dir.join("d")), vec![("user.overlay.opaque".to_string(), b"y".to_vec())]);
    let wh = std::fs::symlink_metadata(dir.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "an unprivileged whiteout is still a 0/0 device");
    assert!(!dir.join("null2").exists());
    assert_eq!(std::fs::metadata(dir.join("ro")).unwrap().mode() & 0o777, 0o555, "modes applied after the content");
    assert_eq!(std::fs::metadata(dir.join("d/f")).unwrap().uid(), 1000, "no chown without privilege");
    // gc as the same user can remove what it made, read-only dirs included.
    ok(as_user(&["rm", "r"]));
    let rep: serde_json::Value = serde_json::from_str(&ok(as_user(&["--json", "gc"]))).unwrap();
    assert_eq!(rep["layer_dirs"], 2, "{rep}");
    assert!(!dir.exists());
}

#[test]
fn rootless_unpack_matches_umoci_rootless() {
    require_root();
    let sb = Sandbox::new();
    let layout = umoci_image(sb.path());
    let work = sb.path().join("work");
    std::fs::create_dir(&work).unwrap();
    sh_ok(&format!(
        "chmod -R a+rX {} && chown -R 1000:1000 {} {}",
        sb.path().display(),
        work.display(),
        sb.data.display()
    ));
    let as_user = |prog: &Path, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"]).arg(prog).args(args);
        c.env("CBUILD_DATA", &sb.data).env("HOME", &work).current_dir(&work);
        run(&mut c)
    };
    let l = format!("{}:t", layout.display());
    ok(as_user(Path::new("/usr/bin/umoci"), &["unpack", "--rootless", "--image", &l, "ub"]));
    ok(as_user(&bin(TOOL), &["import", "--tag", "t", layout.to_str().unwrap()]));
    let o = as_user(&bin(TOOL), &["unpack", "t", "u"]);
    ok(o.clone());
    assert!(stderr(&o).contains("skipped 1 device nodes"), "{}", stderr(&o));
    let mut want = tree(&work.join("ub/rootfs"), &FULL);
    let mut got = tree(&work.join("u"), &FULL);
    // umoci leaves an empty file where a device node cannot be made; we skip it (and say so).
    assert_eq!(want.remove("dev/null2").map(|n| n.kind), Some('f'));
    want.remove(".");
    got.remove(".");
    assert!(got.values().all(|n| n.uid == 1000), "no chown without privilege");
    assert_same_tree(&want, &got, "rootless unpack vs umoci unpack --rootless");
}

// ---------------------------------------------------------------------------------------------------
// Review fixes: gc on broken images, export's temporary, reference grammar and normalization, config
// types, commit against missing base blobs.

fn blob_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count()
}

#[test]
fn gc_removes_nothing_when_an_image_cannot_be_read() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    copy_rootfs(&root);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "g:1"])));
    std::fs::write(root.join("extra"), "x").unwrap();
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "g:2"])));
    ok(run(img(&sb).args(["rm", "g:2"]))); // its blobs are now unreferenced: gc would remove them
                                           // Break g:1: its config blob disappears, so what it references cannot be known.
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "g:1"])))).unwrap();
    let cfg = v["config_digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    std::fs::remove_file(sb.data.join("images/blobs/sha256").join(cfg)).unwrap();
    let before = store_state(&sb);
    let o = run(img(&sb).arg("gc"));
    assert_tool_error(&o, TOOL, "nothing removed");
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    assert_eq!(store_state(&sb), before, "gc removed something");

    // `--store DIR` on a layout whose index.json names an image index (which the store cannot load).
    let l = Layout::new(&sb.path().join("oci"));
    let md = l.image("x", &[(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)], |_, _| {});
    let msize = std::fs::metadata(l.dir.join("blobs/sha256").join(md.trim_start_matches("sha256:"))).unwrap().len();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": msize}]});
    let ib = serde_json::to_vec(&index).unwrap();
    let id = l.blob(&ib);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": ib.len()}]});
    std::fs::write(l.dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    assert_eq!(blob_count(&l.dir), 4);
    let o = run(img(&sb).arg("--store").arg(&l.dir).arg("gc"));
    assert_tool_error(&o, TOOL, "nothing removed");
    assert_eq!(blob_count(&l.dir), 4, "gc removed blobs of a layout it could not read");
}

#[test]
fn export_leaves_no_temporary_when_the_rename_fails() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    l.image("ex", &[(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dir = sb.path().join("dir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let o = run(img(&sb).args(["export", "ex"]).arg(dir.join("sub")));
    assert_tool_error(&o, TOOL, "sub");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("sub")], "export left something behind");
    assert_eq!(std::fs::read_dir(dir.join("sub")).unwrap().count(), 0);
}

#[test]
fn references_outside_the_grammar_are_refused() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let out = ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "good"])));
    let digest = out.split('\t').nth(1).unwrap().trim().to_string();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let layout = sb.path().join("oci");
    ok(run(img(&sb).args(["export", "good", "--format", "oci-archive"]).arg(sb.path().join("good.tar"))));
    let before = store_state(&sb);
    let long_tag = format!("a:{}", "t".repeat(129));
    for bad in [
        "",
        "evil\nline",
        "UPPER/../..:x@y",
        "Upper",
        "a//b",
        "a:",
        "a:.x",
        "a:-x",
        "a@sha256:0000",
        "a b",
        "-a",
        long_tag.as_str(),
        hex.as_str(),
        digest.as_str(),
        "sha256:abc",
    ] {
        let o = run(img(&sb).arg("build").arg(&root).arg(format!("--tag={bad}")));
        assert_tool_error(&o, TOOL, "reference");
        assert_eq!(stderr(&o).lines().count(), 1, "{bad:?}: {}", stderr(&o));
        let o = run(img(&sb).arg("import").arg(format!("--tag={bad}")).arg(sb.path().join("good.tar")));
        assert_tool_error(&o, TOOL, "reference");
        assert_eq!(store_state(&sb), before, "{bad:?} made something");
    }
    // The digest still means the image, and ls lines are one per image.
    ok(run(img(&sb).args(["inspect", &hex])));
    assert_eq!(ok(run(img(&sb).arg("ls"))).lines().count(), 2);
    // A name inside an archive is checked too.
    let l = Layout::new(&layout);
    l.image("Bad Name", &[(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)], |_, _| {});
    assert_tool_error(&run(img(&sb).arg("import").arg(&layout)), TOOL, "reference");
    assert_eq!(store_state(&sb), before);
    // What the grammar allows.
    for good in ["localhost:5000/a/b:v1", "reg.example.com/x_y__z.w-v:T_1.2-3", "a--b/c"] {
        ok(run(img(&sb).arg("build").arg(&root).args(["--tag", good])));
        ok(run(img(&sb).args(["inspect", good])));
    }
}

#[test]
fn name_and_name_latest_are_one_image() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let out = ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "base"])));
    assert!(out.starts_with("base:latest\t"), "{out}");
    std::fs::write(root.join("f"), "y").unwrap();
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "base:latest"])));
    let ls = ok(run(img(&sb).args(["--json", "ls"])));
    assert_eq!(ls.lines().count(), 1, "one image, replaced: {ls}");
    ok(run(img(&sb).args(["inspect", "base"])));
    assert_eq!(ok(run(img(&sb).args(["rm", "base"]))).trim(), "base:latest");
    assert_eq!(ok(run(img(&sb).args(["--json", "ls"]))), "");
    // And the other way round, import included.
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "x:latest"])));
    let ar = sb.path().join("x.tar");
    ok(run(img(&sb).args(["export", "x"]).arg(&ar)));
    let out = ok(run(img(&sb).arg("import").args(["--tag", "y"]).arg(&ar)));
    assert!(out.starts_with("y:latest\t"), "{out}");
    ok(run(img(&sb).args(["rm", "x", "y:latest"])));
    assert_eq!(ok(run(img(&sb).args(["--json", "ls"]))), "");
}

#[test]
fn config_keeps_the_command_or_fails() {
    require_root();
    let sb = Sandbox::new();
    let layer = || vec![(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)];
    let cases: [(&str, serde_json::Value); 4] = [
        ("s:1", serde_json::json!({"Entrypoint": "/bin/sh -c", "Cmd": ["echo hi"]})),
        ("s:2", serde_json::json!({"Entrypoint": ["/bin/sh"], "Cmd": ["echo", 1]})),
        ("s:3", serde_json::json!({"Entrypoint": [true]})),
        ("s:4", serde_json::json!({"Cmd": ["a\u{0}b"], "Env": ["A=x\u{0}y"]})),
    ];
    for (tag, rc) in &cases {
        let l = Layout::new(&sb.path().join(tag.replace(':', "-")));
        l.image(tag, &layer(), |_, c| c["config"] = rc.clone());
        ok(run(img(&sb).arg("import").arg(&l.dir)));
    }
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["config", "s:1"])))).unwrap();
    assert_eq!(v["entrypoint"], serde_json::json!(["/bin/sh -c"]), "{v}");
    let sh = ok(run(img(&sb).args(["config", "s:1", "--format", "shell"])));
    assert!(sh.contains("IMAGE_ENTRYPOINT=''\\''/bin/sh -c'\\'''\n"), "{sh}");
    for tag in ["s:2", "s:3"] {
        for f in ["json", "shell"] {
            let o = run(img(&sb).args(["config", tag, "--format", f]));
            assert_tool_error(&o, TOOL, "non-string");
            assert_eq!(stdout(&o), "");
        }
    }
    for f in ["env", "shell"] {
        let o = run(img(&sb).args(["config", "s:4", "--format", f]));
        assert_tool_error(&o, TOOL, "NUL");
        assert_eq!(stdout(&o), "");
    }
    ok(run(img(&sb).args(["config", "s:4"]))); // JSON escapes it
}

/// The check runs under the store lock inside the store's commit; there is no deterministic way to
/// delete a blob between `resolve` and that lock from outside, so the base layer is removed beforehand
/// (`resolve` reads only the manifest and config, so the base still resolves).
#[test]
fn commit_refuses_a_base_whose_layers_are_gone() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "base:1"])));
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", "base:1"])))).unwrap();
    let layer = v["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    std::fs::remove_file(sb.data.join("images/blobs/sha256").join(&layer)).unwrap();
    let upper = sb.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("g"), "y").unwrap();
    let before = store_state(&sb);
    let o = run(img(&sb).arg("commit").arg(&upper).args(["--from", "base:1", "--tag", "next:1"]));
    assert_tool_error(&o, TOOL, "missing");
    assert_eq!(store_state(&sb), before, "commit stored something");
    assert_tool_error(&run(img(&sb).args(["inspect", "next:1"])), TOOL, "no such image");
}

// ---------------------------------------------------------------------------------------------------
// Second review: import racing gc, the env format, SOURCE_DATE_EPOCH, read-only stores, durable commits,
// hex names against digest prefixes, `tag`, unpacked Docker 25+ archives.

/// Wait until `pid` is stopped (state T in /proc/PID/stat), so what follows happens while it is.
fn wait_stopped(pid: u32) {
    for _ in 0..1000 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = st.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if state == Some('T') {
            return;
        }
        assert_ne!(state, Some('Z'), "process {pid} ended before it could be stopped (too fast a machine?)");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("process {pid} did not stop");
}

/// An import of a layout dir takes blobs the store already has as stored; a `gc` that runs before
/// the import commits removes them (unreferenced until then). The import is stopped with SIGSTOP
/// while it copies a large layer (after it took the others as stored), gc runs, and it goes on.
#[test]
fn gc_during_an_import_does_not_fail_it() {
    use std::io::{BufRead, Read};
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let small = tar(&[tar_entry("small", b'0', b"s", "", 0o644)]);
    let big = tar(&[tar_entry("big", b'0', &vec![7u8; 64 << 20], "", 0o644)]);
    let big_hex = sha256(&big);
    l.image("race", &[(small, LAYER_TAR), (big, LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    ok(run(img(&sb).args(["rm", "race"])));
    // The store keeps manifest, config and the small layer, unreferenced, but loses the big layer, so
    // the next import takes three blobs as stored and then spends a while copying the fourth.
    std::fs::remove_file(sb.data.join("images/blobs/sha256").join(&big_hex)).unwrap();
    let mut c = img(&sb)
        .args(["-v", "import", "--tag", "race:2"])
        .arg(&l.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = c.id();
    let _cont = Defer(move || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGCONT);
    });
    let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "import ended before copying the layer: {seen}");
        seen += &line;
        if line.contains("step: copy: layer") && line.contains(&big_hex) {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGSTOP).unwrap();
    wait_stopped(pid);
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["blobs"], 3, "gc should have removed manifest, config and small layer: {rep}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGCONT).unwrap();
    err.read_to_string(&mut seen).unwrap();
    let st = c.wait().unwrap();
    assert!(st.success(), "import failed after a concurrent gc: {seen}");
    let v = ok(run(img(&sb).args(["verify", "race:2"])));
    assert_eq!(v.lines().count(), 4, "{v}");
    assert_eq!(blob_count(&sb.data.join("images")), 4);
    assert!(std::fs::read_dir(sb.data.join("images/.tmp")).unwrap().next().is_none(), "no staging left");
}

#[test]
fn config_env_lines_are_variables_and_the_documented_use_is_exact() {
    require_root();
    let sb = Sandbox::new();
    let layer = || vec![(tar(&[tar_entry("f", b'0', b"x", "", 0o644)]), LAYER_TAR)];
    let cases = [
        ("e:nl", serde_json::json!(["B=1", "A=x\ny"])),
        ("e:noeq", serde_json::json!(["NOEQ"])),
        ("e:nokey", serde_json::json!(["=v"])),
        ("e:ok", serde_json::json!(["PATH=/bin", "SP=a  *  b", "Q='\"$x;`", "EQ=a=b", "EMPTY="])),
    ];
    for (tag, env) in &cases {
        let l = Layout::new(&sb.path().join(tag.replace(':', "-")));
        l.image(tag, &layer(), |_, c| c["config"]["Env"] = env.clone());
        ok(run(img(&sb).arg("import").arg(&l.dir)));
    }
    for (tag, needle) in [("e:nl", "newline"), ("e:noeq", "KEY=VALUE"), ("e:nokey", "KEY=VALUE")] {
        let o = run(img(&sb).args(["config", tag, "--format", "env"]));
        assert_tool_error(&o, TOOL, needle);
        assert!(stderr(&o).lines().next().unwrap().contains("Env"), "{}", stderr(&o));
        assert_eq!(stdout(&o), "", "{tag}: nothing printed");
    }
    // An entry without a key is no variable in the shell form either (`env -i "$@"` took NOEQ for the
    // command); Docker keeps it and runc refuses it, so only JSON shows it, as it is.
    for tag in ["e:noeq", "e:nokey"] {
        let o = run(img(&sb).args(["config", tag, "--format", "shell"]));
        assert_tool_error(&o, TOOL, "not KEY=VALUE");
        assert_eq!(stdout(&o), "", "{tag}: nothing printed");
    }
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["config", "e:noeq"])))).unwrap();
    assert_eq!(v["env"], cases[1].1);
    ok(run(img(&sb).args(["config", "e:nl", "--format", "shell"])));
    // The other formats still carry them exactly.
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["config", "e:nl"])))).unwrap();
    assert_eq!(v["env"], cases[0].1);
    // docs/image.md's use: one variable per line, no word splitting or globbing.
    let o = run(Command::new("bash")
        .arg("-c")
        .arg(r#"set -e; mapfile -t vars < <("$0" config e:ok --format env); env -i -- "${vars[@]}" /usr/bin/env"#)
        .arg(bin(TOOL))
        .env("CBUILD_DATA", &sb.data)
        .current_dir(sb.path()));
    let got: Vec<String> = ok(o).lines().map(String::from).collect();
    let want: Vec<String> = serde_json::from_value(cases[3].1.clone()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn source_date_epoch_empty_is_unset_and_past_year_9999_is_refused() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let created = |r: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", r])))).unwrap();
        v["created"].as_str().unwrap().to_string()
    };
    // Empty means unset (reproducible-builds.org): the current time, not an error and not 1970.
    ok(run(img(&sb).env("SOURCE_DATE_EPOCH", "").arg("build").arg(&root).args(["--tag", "t:empty"])));
    let year: u32 = created("t:empty")[..4].parse().unwrap();
    assert!(year >= 2024, "{}", created("t:empty"));
    // The last second Go's RFC 3339 parser reads; skopeo reads it back.
    ok(run(img(&sb).env("SOURCE_DATE_EPOCH", "253402300799").arg("build").arg(&root).args(["--tag", "t:max"])));
    assert_eq!(created("t:max"), "9999-12-31T23:59:59Z");
    let ar = sb.path().join("max.tar");
    ok(run(img(&sb).args(["export", "t:max"]).arg(&ar)));
    let o = ok(run(Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}", ar.display()))));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["Created"], "9999-12-31T23:59:59Z", "{o}");
    // One second later, or not a number: refused, nothing stored.
    let upper = sb.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("g"), "y").unwrap();
    let before = store_state(&sb);
    for (env, flag, needle) in [
        (Some("253402300800"), None, "SOURCE_DATE_EPOCH"),
        (Some("99999999999999"), None, "9999-12-31"),
        (Some("abc"), None, "SOURCE_DATE_EPOCH"),
        (Some("-1"), None, "SOURCE_DATE_EPOCH"),
        (None, Some("253402300800"), "--mtime"),
        (Some("0"), Some("253402300800"), "--mtime"),
    ] {
        for verb in ["build", "commit"] {
            let mut c = img(&sb);
            c.env_remove("SOURCE_DATE_EPOCH");
            if let Some(e) = env {
                c.env("SOURCE_DATE_EPOCH", e);
            }
            if verb == "build" {
                c.arg("build").arg(&root);
            } else {
                c.arg("commit").arg(&upper).args(["--from", "t:max"]);
            }
            c.args(["--tag", "t:bad"]);
            if let Some(f) = flag {
                c.args(["--mtime", f]);
            }
            let o = run(&mut c);
            assert_tool_error(&o, TOOL, needle);
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
            assert_eq!(store_state(&sb), before, "{verb} {env:?} {flag:?} stored something");
        }
    }
}

/// Every file below `dir`, with its type, for "nothing was created" checks.
fn listing(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let is_dir = e.file_type().unwrap().is_dir();
            v.push(format!("{}{}", p.strip_prefix(dir).unwrap().display(), if is_dir { "/" } else { "" }));
            if is_dir {
                stack.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn reading_verbs_create_nothing_and_work_on_a_read_only_store() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let store = sb.path().join("store");
    let with_store = || img_at(&sb, &store);
    let out = ok(run(with_store().arg("build").arg(&root).args(["--tag", "r:1"])));
    let hex = out.split('\t').nth(1).unwrap().trim().trim_start_matches("sha256:").to_string();
    std::fs::remove_dir(store.join(".tmp")).unwrap();
    std::fs::remove_file(store.join(".lock")).unwrap();
    let before = listing(&store);
    let reads = |n: &str| -> Vec<Vec<String>> {
        let o = |x: &str| sb.path().join(format!("{n}-{x}")).to_string_lossy().into_owned();
        vec![
            vec!["ls".into()],
            vec!["--json".into(), "ls".into()],
            vec!["inspect".into(), "r:1".into()],
            vec!["inspect".into(), hex[..12].to_string()],
            vec!["config".into(), "r:1".into()],
            vec!["config".into(), "r:1".into(), "--format".into(), "env".into()],
            vec!["config".into(), "r:1".into(), "--format".into(), "shell".into()],
            vec!["verify".into(), "r:1".into()],
            vec!["unpack".into(), "r:1".into(), o("unpack")],
            vec!["layers".into(), "r:1".into()],
            vec!["export".into(), "r:1".into(), o("oci.tar")],
            vec!["export".into(), "--format".into(), "docker-archive".into(), "r:1".into(), o("docker.tar")],
        ]
    };
    for args in reads("rw") {
        ok(run(with_store().args(&args)));
        assert_eq!(listing(&store), before, "{args:?} created something in the store");
    }
    // The same on a read-only bind mount of the store.
    let o = run(Command::new("mount").arg("--bind").arg(&store).arg(&store));
    assert!(o.status.success(), "{}", stderr(&o));
    let s2 = store.clone();
    let _m = Defer(move || {
        let _ = nix::mount::umount2(&s2, nix::mount::MntFlags::MNT_DETACH);
    });
    let o = run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&store));
    assert!(o.status.success(), "{}", stderr(&o));
    for args in reads("ro") {
        ok(run(with_store().args(&args)));
    }
    let d = sb.path().join("ro-docker.tar");
    ok(run(img(&sb).args(["import", "--tag", "back"]).arg(&d)));
    // A verb that writes fails cleanly.
    assert_tool_error(&run(with_store().args(["tag", "r:1", "r:2"])), TOOL, "Read-only file system");
    // And the default store is not created by a reader.
    let fresh = Sandbox::new();
    ok(run(img(&fresh).arg("ls")));
    assert_tool_error(&run(img(&fresh).args(["inspect", "x"])), TOOL, "no such image");
    assert_tool_error(&run(img(&fresh).args(["rm", "x"])), TOOL, "no such image");
    assert_tool_error(&run(img(&fresh).args(["tag", "x", "y"])), TOOL, "no such image");
    assert_eq!(listing(&fresh.data), Vec::<String>::new(), "a reader created the store");
}

/// The syscalls of one command under strace: ("sync", path) and ("rename", "from -> to"), in order.
fn traced_syncs(cmd: &mut Command, log: &Path) -> Vec<(String, String)> {
    assert!(Path::new("/usr/bin/strace").exists(), "strace is needed (apt-get install strace)");
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o"]).arg(log);
    c.arg(prog).args(args);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    ok(run(&mut c));
    let quoted = |l: &str| -> Vec<String> { l.split('"').skip(1).step_by(2).map(String::from).collect() };
    let mut ev = Vec::new();
    for l in std::fs::read_to_string(log).unwrap().lines() {
        if l.contains(" = -1") {
            continue;
        }
        if l.contains("fsync(") || l.contains("fdatasync(") {
            let path = l.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(p, _)| p.to_string());
            ev.push(("sync".to_string(), path.unwrap_or_default()));
        } else if l.contains("rename") {
            let q = quoted(l);
            if q.len() == 2 {
                ev.push(("rename".to_string(), format!("{} -> {}", q[0], q[1])));
            }
        }
    }
    ev
}

#[test]
fn a_committed_image_is_durable_and_only_new_blobs_are_synced() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let store = sb.path().join("store");
    let blobs = format!("{}/blobs/sha256", store.display());
    let index = format!("{}/index.json", store.display());
    let build = |tag: &str| {
        let mut c = img_at(&sb, &store);
        c.arg("build").arg(&root).args(["--tag", tag, "--mtime", "0"]);
        c
    };
    ok(run(&mut build("warm"))); // the store exists: what follows is one commit, not the layout's creation
    std::fs::write(root.join("f"), "changed").unwrap();
    let ev = traced_syncs(&mut build("d:1"), &sb.path().join("trace1"));
    let renames: Vec<(usize, String, String)> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.0 == "rename")
        .map(|(i, e)| {
            let (a, b) = e.1.split_once(" -> ").unwrap();
            (i, a.to_string(), b.to_string())
        })
        .collect();
    let into_blobs: Vec<_> = renames.iter().filter(|r| r.2.starts_with(&blobs)).collect();
    assert_eq!(into_blobs.len(), 3, "layer, config, manifest: {ev:#?}");
    for (i, from, to) in &into_blobs {
        assert!(
            ev[..*i].iter().any(|e| e.0 == "sync" && &e.1 == from),
            "{to} renamed before its content was synced: {ev:#?}"
        );
    }
    let last_blob = into_blobs.iter().map(|r| r.0).max().unwrap();
    let idx = renames.iter().find(|r| r.2 == index).expect("index.json replaced").0;
    assert!(
        ev[last_blob..idx].iter().any(|e| e.0 == "sync" && e.1 == blobs),
        "the blobs dir is not synced between the renames and index.json: {ev:#?}"
    );
    assert!(
        ev[idx..].iter().any(|e| e.0 == "sync" && e.1 == store.to_string_lossy()),
        "the store dir is not synced after index.json's rename: {ev:#?}"
    );
    // The same build again: every blob is there already, so none is synced or renamed.
    let ev = traced_syncs(&mut build("d:2"), &sb.path().join("trace2"));
    let tmp = format!("{}/.tmp/", store.display());
    assert!(
        !ev.iter().any(|e| (e.0 == "sync" && e.1.starts_with(&tmp)) || e.1.contains(&format!("-> {blobs}"))),
        "blobs already stored were synced or renamed again: {ev:#?}"
    );
    assert!(ev.iter().any(|e| e.0 == "rename" && e.1.ends_with(&format!("-> {index}"))));
}

#[test]
fn a_hex_name_that_is_also_a_digest_prefix_is_ambiguous() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), "b").unwrap();
    let digest_of = |out: String| out.split('\t').nth(1).unwrap().trim().to_string();
    let b = digest_of(ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "b:1"]))));
    let prefix = b.trim_start_matches("sha256:")[..12].to_string();
    std::fs::write(root.join("f"), "a").unwrap();
    // Legal as in Docker (only 64 hex digits are refused), but it is also B's digest prefix.
    let a = digest_of(ok(run(img(&sb).arg("build").arg(&root).args(["--tag", &prefix]))));
    assert_ne!(a, b);
    let digest = |r: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", r])))).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    let before = store_state(&sb);
    for verb in [&["inspect"][..], &["rm"], &["config"], &["tag"]] {
        let mut c = img(&sb);
        c.args(verb).arg(&prefix);
        if verb[0] == "tag" {
            c.arg("other:1");
        }
        let o = run(&mut c);
        assert_tool_error(&o, TOOL, "ambiguous");
        assert!(stderr(&o).contains(&format!("sha256:{prefix}")), "the hint names the digest form: {}", stderr(&o));
        assert_eq!(store_state(&sb), before, "{verb:?} changed the store");
    }
    // The explicit forms reach either image.
    assert_eq!(digest(&format!("sha256:{prefix}")), b);
    assert_eq!(digest(&format!("{prefix}:latest")), a);
    assert_eq!(digest(&a.trim_start_matches("sha256:")[..12]), a);
    // A name that is the digest prefix of its own image is not ambiguous.
    let own = a.trim_start_matches("sha256:")[..14].to_string();
    ok(run(img(&sb).args(["tag", &format!("{prefix}:latest"), &own])));
    assert_eq!(digest(&own), a);
}

#[test]
fn tag_names_the_same_manifest_again() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let out = ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "x:1"])));
    let d = out.split('\t').nth(1).unwrap().trim().to_string();
    let blobs = blob_count(&sb.data.join("images"));
    let digest = |r: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "inspect", r])))).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(ok(run(img(&sb).args(["tag", "x:1", "y:2"]))), format!("y:2\t{d}\n"));
    assert_eq!(ok(run(img(&sb).args(["tag", "x:1", "y"]))), format!("y:latest\t{d}\n"));
    let hex = d.trim_start_matches("sha256:");
    ok(run(img(&sb).args(["tag", &hex[..12], "localhost:5000/z/w:v1"])));
    // `x` means x:latest, which does not exist.
    assert_tool_error(&run(img(&sb).args(["tag", "x", "w:1"])), TOOL, "no such image");
    let v: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(["--json", "tag", "y", "w:1"])))).unwrap();
    assert_eq!(v, serde_json::json!({"ref": "w:1", "digest": d, "source": "y"}));
    for r in ["y:2", "y:latest", "localhost:5000/z/w:v1", "w:1"] {
        assert_eq!(digest(r), d, "{r}");
    }
    assert_eq!(blob_count(&sb.data.join("images")), blobs, "no blob copied");
    assert_eq!(ok(run(img(&sb).args(["--json", "ls"]))).lines().count(), 5);
    // An existing name moves to the new image (docker tag does the same).
    std::fs::write(root.join("f"), "other").unwrap();
    let out = ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "o:1"])));
    let od = out.split('\t').nth(1).unwrap().trim().to_string();
    ok(run(img(&sb).args(["tag", "o:1", "y:2"])));
    assert_eq!(digest("y:2"), od);
    assert_eq!(digest("x:1"), d);
    assert_eq!(ok(run(img(&sb).args(["--json", "ls"]))).lines().count(), 6);
    // Removing one name keeps the others and the blobs.
    ok(run(img(&sb).args(["rm", "w:1"])));
    assert_eq!(digest("x:1"), d);
    // Failures: one line, exit 125, nothing changed.
    let before = store_state(&sb);
    let hex64 = hex.to_string();
    for (args, needle) in [
        (vec!["tag", "nosuch:1", "q:1"], "no such image"),
        (vec!["tag", "x:1", "Bad/Name"], "reference"),
        (vec!["tag", "x:1", "a@sha256:0000"], "reference"),
        (vec!["tag", "x:1", hex64.as_str()], "reference"),
        (vec!["tag", "x:1", "sha256:abc"], "reference"),
        (vec!["tag", "x:1", ""], "reference"),
        (vec!["tag", "x:1"], "parse"),
        (vec!["tag", "x:1", "a:1", "b:1"], "parse"),
    ] {
        let o = run(img(&sb).args(&args));
        assert_tool_error(&o, TOOL, needle);
        assert!(stderr(&o).lines().count() <= 2, "{args:?}: {}", stderr(&o));
        assert_eq!(store_state(&sb), before, "{args:?} changed the store");
    }
    // No store: nothing is created for a failing tag.
    let nowhere = sb.path().join("nowhere");
    assert_tool_error(&run(img(&sb).arg("--store").arg(&nowhere).args(["tag", "x:1", "y:1"])), TOOL, "no such image");
    assert!(!nowhere.exists());
    let help = ok(run(img(&sb).args(["tag", "--help"])));
    assert!(help.contains("SOURCE") && help.contains("TARGET") && help.contains("no blob is copied"), "{help}");
    assert!(ok(run(img(&sb).arg("--help"))).contains("tag"));
}

/// A Docker 25+ `docker save` layout: OCI blobs, index.json, and a manifest.json pointing into
/// blobs/sha256/, plus a legacy-style symlink that a careless reader would follow out of it.
fn docker25_layout(dir: &Path) -> Layout {
    let l = Layout::new(dir);
    let layer = tar(&[tar_entry("hello", b'0', b"from docker 25", "", 0o644)]);
    let md = l.image("latest", &[(layer, LAYER_TAR)], |_, _| {});
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(l.dir.join("blobs/sha256").join(md.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let cfg = m["config"]["digest"].as_str().unwrap().replace("sha256:", "blobs/sha256/");
    let lay = m["layers"][0]["digest"].as_str().unwrap().replace("sha256:", "blobs/sha256/");
    let man = serde_json::json!([{"Config": cfg, "RepoTags": ["hello:25"], "Layers": [lay]}]);
    std::fs::write(l.dir.join("manifest.json"), serde_json::to_vec(&man).unwrap()).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", l.dir.join("layer.tar")).unwrap();
    l
}

#[test]
fn an_unpacked_docker25_save_imports_as_its_tar_does() {
    require_root();
    let sb = Sandbox::new();
    let l = docker25_layout(&sb.path().join("d25"));
    let ar = sb.path().join("d25.tar");
    sh_ok(&format!("tar -C {} -cf {} .", l.dir.display(), ar.display()));
    let from_dir = ok(run(img(&sb).arg("import").arg(&l.dir)));
    assert!(from_dir.starts_with("hello:25\t"), "{from_dir}");
    let d = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "hello:25"]).arg(&d)));
    assert_eq!(std::fs::read_to_string(d.join("hello")).unwrap(), "from docker 25");
    // The tar gives the same image (names and manifest digest).
    let other = Sandbox::new();
    assert_eq!(ok(run(img(&other).arg("import").arg(&ar))), from_dir);
    // Imported again from the dir: the stored blobs are reused.
    assert_eq!(
        ok(run(img(&sb).args(["import", "--tag", "again"]).arg(&l.dir))).split('\t').nth(1),
        from_dir.split('\t').nth(1)
    );
    // In a directory, manifest.json is followed only into blobs/sha256/<digest>, verified by name.
    let before = store_state(&sb);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(l.dir.join("manifest.json")).unwrap()).unwrap();
    let cfg = m[0]["Config"].as_str().unwrap().to_string();
    for (layers, needle) in [
        (serde_json::json!(["layer.tar"]), "blobs/sha256"),
        (serde_json::json!(["blobs/sha256/../../layer.tar"]), "blobs/sha256"),
        (serde_json::json!([cfg.clone()]), "diff_id"),
    ] {
        let man = serde_json::json!([{"Config": cfg, "RepoTags": ["evil:1"], "Layers": layers}]);
        std::fs::write(l.dir.join("manifest.json"), serde_json::to_vec(&man).unwrap()).unwrap();
        let o = run(img(&sb).arg("import").arg(&l.dir));
        assert_tool_error(&o, TOOL, needle);
        assert_eq!(store_state(&sb), before, "{layers}: stored something");
    }
    // A blob whose content is not its name.
    let cfg_path = l.dir.join(&cfg);
    let good = std::fs::read(&cfg_path).unwrap();
    let mut bad = good.clone();
    bad.push(b' ');
    std::fs::remove_file(&cfg_path).unwrap();
    std::fs::write(&cfg_path, &bad).unwrap();
    let man = serde_json::json!([{"Config": cfg, "RepoTags": ["evil:1"], "Layers": m[0]["Layers"]}]);
    std::fs::write(l.dir.join("manifest.json"), serde_json::to_vec(&man).unwrap()).unwrap();
    let empty = Sandbox::new();
    assert_tool_error(&run(img(&empty).arg("import").arg(&l.dir)), TOOL, "content has digest");
}

/// Found by a review of hostile input (session 11): a GNU sparse entry keeps its holes and its declared
/// size counts against `--max-layer-size`; a hard link to a file its own layer whites out is refused by
/// `layers` as by `unpack` (not turned into a second whiteout); an archive's long names are refused
/// rather than held; an error about a field with a line break stays one line; gc leaves a staging dir
/// whose lock is not made yet.
#[test]
fn sparse_files_whiteout_links_long_names_and_one_line_errors() {
    require_root();
    let sb = Sandbox::new();
    // A 1 GiB sparse file with 4 KiB of data, as GNU tar writes it.
    let src = sb.path().join("sparse-src");
    std::fs::create_dir_all(&src).unwrap();
    sh_ok(&format!(
        "truncate -s 1G {0}/big && printf data | dd of={0}/big bs=4096 seek=1000 conv=notrunc status=none",
        src.display()
    ));
    let sp = sb.path().join("sp.tar");
    sh_ok(&format!("tar --format=gnu --sparse -C {} -cf {} big", src.display(), sp.display()));
    let l = Layout::new(&sb.path().join("oci-sp"));
    l.image("sp", &[(std::fs::read(&sp).unwrap(), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let u = sb.path().join("u");
    ok(run(img(&sb).args(["unpack", "sp"]).arg(&u)));
    let md = std::fs::metadata(u.join("big")).unwrap();
    assert_eq!(md.len(), 1 << 30);
    assert!(std::os::unix::fs::MetadataExt::blocks(&md) * 512 < 1 << 20, "holes written as zeros: {md:?}");
    let mut data = vec![0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(u.join("big")).unwrap(), &mut data, 4096 * 1000)
        .unwrap();
    assert_eq!(&data, b"data");
    let u2 = sb.path().join("u2");
    let o = run(img(&sb).args(["unpack", "--max-layer-size", "1048576", "sp"]).arg(&u2));
    assert_tool_error(&o, TOOL, "sparse files larger than the limit of 1048576 bytes");
    assert!(!u2.exists());

    // l1: a, b; l2: a whited out, then b a hard link to a.
    let l = Layout::new(&sb.path().join("oci-hl"));
    let l1 = tar(&[tar_entry("a", b'0', b"a", "", 0o644), tar_entry("b", b'0', b"b", "", 0o644)]);
    let l2 = tar(&[tar_entry(".wh.a", b'0', b"", "", 0o644), tar_entry("b", b'1', b"", "a", 0o644)]);
    l.image("hl", &[(l1, LAYER_TAR), (l2, LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    for args in [vec!["unpack", "hl", sb.path().join("u3").to_str().unwrap()], vec!["layers", "hl"]] {
        let o = run(img(&sb).args(&args));
        assert_tool_error(&o, TOOL, "hardlink target: No such file");
    }

    // An archive entry named with 5000 bytes: refused, nothing held or staged.
    let long = Layout::new(&sb.path().join("oci-long"));
    long.image("long", &[(tar(&[tar_entry("f", b'0', b"f", "", 0o644)]), LAYER_TAR)], |_, _| {});
    let arch = sb.path().join("long.tar");
    let name = format!("x{}", "y".repeat(5000));
    std::fs::write(long.dir.join("n"), "").unwrap();
    sh_ok(&format!(
        "cd {} && tar --format=pax -cf {} . --transform 's|^./n$|{name}|'",
        long.dir.display(),
        arch.display()
    ));
    ok(run(img(&sb).arg("gc")));
    let before = store_state(&sb);
    let o = run(img(&sb).arg("import").arg(&arch));
    assert_tool_error(&o, TOOL, "name or link target longer than 4096 bytes");
    assert_eq!(store_state(&sb), before);

    // A digest with a line break: one line.
    let bad = Layout::new(&sb.path().join("oci-nl"));
    std::fs::write(
        bad.dir.join("index.json"),
        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:ab\\ncd\",\"size\":1}]}",
    )
    .unwrap();
    let o = run(img(&sb).arg("import").arg(&bad.dir));
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().filter(|l| !l.starts_with("hint: ")).count(), 1, "{}", stderr(&o));

    // A staging dir made an instant before its lock file: gc leaves it.
    let tmp = sb.data.join("images/.tmp/999999-0");
    std::fs::create_dir_all(&tmp).unwrap();
    ok(run(img(&sb).arg("gc")));
    assert!(tmp.exists(), "gc removed a staging dir whose lock was not made yet");
    assert!(!tmp.join("lock").exists(), "gc made a lock file");
    std::fs::remove_dir(&tmp).unwrap();
}

/// Rootless (not root): a later layer adds to and whites out in a directory an earlier layer made
/// read-only (0555, as Fedora's /usr/bin), as `umoci unpack --rootless` allows; the directory keeps its
/// mode. In both forms: `unpack` and `layers`.
#[test]
fn rootless_layers_change_read_only_directories() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let l1 = tar(&[
        tar_entry("usr/", b'5', b"", "", 0o755),
        tar_entry("usr/bin/", b'5', b"", "", 0o555),
        tar_entry("usr/bin/old", b'0', b"old", "", 0o755),
        tar_entry("usr/bin/keep", b'0', b"keep", "", 0o755),
    ]);
    let l2 = tar(&[tar_entry("usr/bin/new", b'0', b"new", "", 0o755)]);
    let l3 = tar(&[tar_entry("usr/bin/.wh.old", b'0', b"", "", 0o644)]);
    l.image("ro", &[(l1, LAYER_TAR), (l2, LAYER_TAR), (l3, LAYER_TAR)], |_, _| {});
    let work = sb.path().join("work");
    std::fs::create_dir(&work).unwrap();
    sh_ok(&format!(
        "chmod -R a+rX {} && chown -R 1000:1000 {} {}",
        sb.path().display(),
        work.display(),
        sb.data.display()
    ));
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"]).arg(bin(TOOL)).args(args);
        c.env("CBUILD_DATA", &sb.data).env("HOME", &work).current_dir(&work);
        run(&mut c)
    };
    ok(as_user(&["import", "--tag", "ro", l.dir.to_str().unwrap()]));
    ok(as_user(&["unpack", "ro", "u"]));
    let bin_dir = work.join("u/usr/bin");
    let mut names: Vec<String> =
        std::fs::read_dir(&bin_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["keep", "new"]);
    assert_eq!(std::fs::metadata(&bin_dir).unwrap().permissions().mode() & 0o7777, 0o555);
    let dirs = ok(as_user(&["layers", "ro"]));
    let top = dirs.lines().next().unwrap();
    let st = std::fs::symlink_metadata(Path::new(top).join("usr/bin/old")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()), "the top layer whites out old");
    for d in dirs.lines() {
        let m = std::fs::metadata(Path::new(d).join("usr/bin")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, 0o555, "{d}/usr/bin");
    }
}

// ---------------------------------------------------------------------------------------------------
// Stop signals (INT, TERM, HUP, QUIT, USR1, USR2): held while a temporary file or an unpacked tree
// exists, so one that arrives leaves nothing behind; a runtime forwards all six, and Ctrl-C reaches the
// whole process group.

/// Interrupted: exit 125 and exactly one line, `cbuild-image: <want>: interrupted by <name>`.
#[track_caller]
fn assert_interrupted(o: &Output, want: &str, name: &str) {
    let line = format!("{TOOL}: {want}: interrupted by {name}");
    assert_eq!(o.status.code(), Some(125), "{:?}: {}", o.status, stderr(o));
    assert_eq!(stderr(o), format!("{line}\n"));
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A two-layer image `sig` in a store of its own.
fn signal_image(sb: &Sandbox) {
    let l = Layout::new(&sb.path().join("oci"));
    let l1 = tar(&[tar_entry("a/", b'5', b"", "", 0o755), tar_entry("a/f", b'0', b"one", "", 0o644)]);
    let l2 = tar(&[tar_entry("b", b'0', b"two", "", 0o644)]);
    l.image("sig", &[(l1, LAYER_GZIP), (l2, LAYER_TAR)], |_, _| {});
    ok(run(img(sb).arg("import").arg(&l.dir)));
}

/// `unpack` looks for a stop signal before every entry and at the end: one that is pending undoes it as
/// an error does (the DIR it made goes, the empty DIR it was given is emptied again). One the caller
/// ignores does not count.
#[test]
fn a_stop_signal_undoes_unpack() {
    require_root();
    let sb = Sandbox::new();
    signal_image(&sb);
    let new = sb.path().join("new");
    let o = run(with_pending_signal(img(&sb).args(["unpack", "sig"]).arg(&new), libc::SIGUSR2, false));
    assert_interrupted(&o, &format!("unpack: {}", new.display()), "SIGUSR2");
    assert!(!new.exists(), "the DIR unpack made is left");
    let given = sb.path().join("given");
    std::fs::create_dir(&given).unwrap();
    let o = run(with_pending_signal(img(&sb).args(["unpack", "sig"]).arg(&given), libc::SIGINT, false));
    assert_interrupted(&o, &format!("unpack: {}", given.display()), "SIGINT");
    assert!(names(&given).is_empty(), "the given DIR is left filled: {:?}", names(&given));
    // Ignored (a background job of a non-interactive shell ignores SIGINT): the unpack is done.
    ok(run(with_pending_signal(img(&sb).args(["unpack", "sig"]).arg(&given), libc::SIGINT, true)));
    assert_eq!(names(&given), ["a", "b"]);
    assert_eq!(std::fs::read_to_string(given.join("a/f")).unwrap(), "one");
}

/// A stop signal sent while `unpack` works (not blocked by the caller, as from a shell or a runtime):
/// it stops within an entry, removes the half-filled DIR, prints its line and then dies by the signal
/// (128+N in a shell), not 125.
#[test]
fn a_stop_signal_mid_unpack_removes_the_tree_and_ends_the_process() {
    use std::os::unix::process::ExitStatusExt;
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    // Enough entries that the unpack is still going when the first one shows (seconds in a debug build).
    let mut entries = vec![tar_entry("d/", b'5', b"", "", 0o755)];
    entries.extend((0..40_000).map(|i| tar_entry(&format!("d/f{i}"), b'0', b"x", "", 0o644)));
    l.image("many", &[(tar(&entries), LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dir = sb.path().join("u");
    let mut child = img(&sb)
        .args(["unpack", "many"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !dir.join("d").exists() {
        assert!(child.try_wait().unwrap().is_none(), "unpack ended before it was signalled");
        assert!(t0.elapsed().as_secs() < 30, "unpack made nothing in 30 s");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(stderr(&o), format!("{TOOL}: unpack: {}: interrupted by SIGTERM\n", dir.display()));
    assert!(!dir.exists(), "the half-filled DIR is left");
    assert!(sent.elapsed().as_secs() < 10, "took {:?} to stop", sent.elapsed());
}

/// `export FILE`: a stop signal pending before the rename removes the temporary; FILE is neither made
/// nor replaced (an old FILE keeps its content). Both formats; an ignored one does not count.
#[test]
fn a_stop_signal_undoes_export() {
    require_root();
    let sb = Sandbox::new();
    signal_image(&sb);
    let dir = sb.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let (new, old) = (dir.join("new.tar"), dir.join("old.tar"));
    std::fs::write(&old, "old").unwrap();
    for (file, format, sig, name) in [
        (&new, "oci-archive", libc::SIGTERM, "SIGTERM"),
        (&old, "docker-archive", libc::SIGUSR1, "SIGUSR1"),
        (&old, "oci-archive", libc::SIGQUIT, "SIGQUIT"),
    ] {
        let mut c = img(&sb);
        c.args(["export", "--format", format, "sig"]).arg(file);
        let o = run(with_pending_signal(&mut c, sig, false));
        assert_interrupted(&o, &format!("export: {}", file.display()), name);
        assert_eq!(names(&dir), ["old.tar"], "export ({format}, {name}) left something");
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "old");
    }
    let mut c = img(&sb);
    c.args(["export", "sig"]).arg(&new);
    ok(run(with_pending_signal(&mut c, libc::SIGHUP, true)));
    assert_eq!(names(&dir), ["new.tar", "old.tar"]);
    assert!(std::fs::metadata(&new).unwrap().len() > 1024);
}

/// index.json's temporaries in the store dir.
fn index_temps(sb: &Sandbox) -> Vec<String> {
    names(&sb.data.join("images")).into_iter().filter(|n| n.starts_with("index.tmp")).collect()
}

/// index.json is written to a temporary and renamed, the stop signals held in between (an fdatasync:
/// milliseconds). One pending before the rename takes the write back: `tag`, `rm` and `build` fail with
/// `write: <store>/index.json: interrupted by SIGx`, index.json is unchanged and no temporary is left
/// (what `build` had stored by then is unreferenced: gc's). One the caller ignores does not count.
#[test]
fn a_stop_signal_undoes_an_index_write() {
    require_root();
    let sb = Sandbox::new();
    signal_image(&sb);
    let index = sb.data.join("images/index.json");
    let want = format!("write: {}", index.display());
    let before = store_state(&sb);
    let o = run(with_pending_signal(img(&sb).args(["tag", "sig", "other"]), libc::SIGHUP, false));
    assert_interrupted(&o, &want, "SIGHUP");
    let o = run(with_pending_signal(img(&sb).args(["rm", "sig"]), libc::SIGUSR2, false));
    assert_interrupted(&o, &want, "SIGUSR2");
    let root = sb.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "box\n").unwrap();
    let mut c = img(&sb);
    c.arg("build").arg(&root).args(["--tag", "built"]);
    let o = run(with_pending_signal(&mut c, libc::SIGUSR1, false));
    assert_interrupted(&o, &want, "SIGUSR1");
    assert!(index_temps(&sb).is_empty(), "{:?}", index_temps(&sb));
    assert!(names(&sb.data.join("images/.tmp")).is_empty(), "build's staging dir is left");
    ok(run(img(&sb).arg("gc")));
    assert_eq!(store_state(&sb), before, "the store changed");
    // Ignored: done.
    ok(run(with_pending_signal(img(&sb).args(["tag", "sig", "other"]), libc::SIGINT, true)));
    assert!(ok(run(img(&sb).arg("ls"))).contains("other:latest"));
    assert!(index_temps(&sb).is_empty());
}

/// A SIGKILL (which nothing holds off) during an index.json write leaves its temporary: gc, which holds
/// the store lock every index.json write takes, removes it.
#[test]
fn gc_removes_an_index_temporary_a_killed_writer_left() {
    require_root();
    let sb = Sandbox::new();
    signal_image(&sb);
    let before = store_state(&sb);
    let left = sb.data.join("images/index.tmp999999-0");
    std::fs::write(&left, "{").unwrap();
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["temp"], 1, "{rep}");
    assert!(!left.exists());
    assert!(sb.data.join("images/oci-layout").is_file() && sb.data.join("images/index.json").is_file());
    assert_eq!(store_state(&sb), before);
}

// ---------------------------------------------------------------------------------------------------
// Review round 3: the overlay form at the layer root and where nothing lower shows, gc and the ways a
// path can be spelled, what a failed unpack leaves on the DIR it was given, rootless trees with
// directories their owner cannot enter.

/// A whiteout device at `p` (overlayfs's 0/0 character device).
fn is_whiteout(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// A layer whose root is opaque (`./.wh..wh..opq`) hides everything the lower layers have but its own
/// entries. overlayfs ignores the opaque xattr on a lower layer's root, so the overlay form whites out
/// each name the lower layers show at the top instead: a file the image deleted must not come back in
/// the mount. Entries of the layer before the marker (`c/`) and after it (`a/new`, `new`) stay.
#[test]
fn a_root_opaque_marker_hides_the_lower_layers_in_the_overlay_form_too() {
    require_root();
    let (_sb, paths, lowers) = whiteout_case(
        &["a", "c"],
        &[
            tar_entry("c/", b'5', b"", "", 0o755),
            tar_entry("c/mine", b'0', b"mine", "", 0o644),
            tar_entry("./.wh..wh..opq", b'0', b"", "", 0o644),
            tar_entry("a/new", b'0', b"new", "", 0o644),
            tar_entry("new", b'0', b"new", "", 0o644),
        ],
    );
    assert_paths(&paths, &["a", "a/new", "c", "c/mine", "new"]);
    let top = &lowers[0];
    for n in ["foo", "real"] {
        assert!(is_whiteout(&top.join(n)), "{n} is not whited out in the top layer");
    }
    for d in ["a", "c"] {
        assert_eq!(xattrs(&top.join(d)), vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())], "{d}");
    }
}

/// The overlay form makes a whiteout only where a lower layer shows something, and an opaque directory
/// only over a lower directory: a whiteout in a directory the same layer makes opaque (before or after
/// the marker), or whose parent no lower layer has, would be listed by overlayfs as an entry that cannot
/// be stat'ed, and its parent made in the layer would show as a directory `unpack` does not have (`a/b`,
/// made for a whiteout before `a` turned opaque, goes too).
#[test]
fn the_overlay_form_makes_no_whiteout_or_directory_over_nothing() {
    require_root();
    let (_sb, paths, lowers) = whiteout_case(
        &["a", "c"],
        &[
            tar_entry("a/b/.wh.old", b'0', b"", "", 0o644),
            tar_entry("a/.wh.keep", b'0', b"", "", 0o644),
            tar_entry("a/.wh..wh..opq", b'0', b"", "", 0o644),
            tar_entry("c/.wh..wh..opq", b'0', b"", "", 0o644),
            tar_entry("c/.wh.old", b'0', b"", "", 0o644),
            tar_entry("nope/.wh.x", b'0', b"", "", 0o644),
            tar_entry("nope2/.wh..wh..opq", b'0', b"", "", 0o644),
            tar_entry("real/.wh.none", b'0', b"", "", 0o644),
        ],
    );
    assert_paths(&paths, &["a", "c", "foo", "real", "real/x"]);
    let top = &lowers[0];
    assert_eq!(names(top), ["a", "c"], "the top layer holds more than the two opaque dirs");
    for d in ["a", "c"] {
        assert!(names(&top.join(d)).is_empty(), "{d} in the top layer: {:?}", names(&top.join(d)));
        assert_eq!(xattrs(&top.join(d)), vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())], "{d}");
    }
}

/// A whiteout below a lower file (`foo/.wh.x`) has nothing to hide: `unpack` goes on, as umoci does,
/// and the overlay form makes nothing.
#[test]
fn a_whiteout_below_a_lower_file_hides_nothing() {
    require_root();
    let (_sb, paths, lowers) = whiteout_case(&[], &[tar_entry("foo/.wh.x", b'0', b"", "", 0o644)]);
    assert_paths(&paths, &["a", "a/b", "a/b/old", "a/keep", "c", "c/old", "foo", "real", "real/x"]);
    assert!(names(&lowers[0]).is_empty(), "{:?}", names(&lowers[0]));
}

/// A layer dir an overlay mount uses is kept whatever way the mount spelled its path: through a
/// symlink to the data dir, with `.` and `..`, relative to the mounter's directory, or a directory
/// inside the layer. Once no mount uses it, it goes.
#[test]
fn gc_keeps_layer_dirs_a_mount_names_through_another_spelling() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let layer = tar(&[tar_entry("d/", b'5', b"", "", 0o755), tar_entry("d/f", b'0', b"x", "", 0o644)]);
    l.image("sp", &[(layer, LAYER_TAR)], |_, _| {});
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dir = PathBuf::from(ok(run(img(&sb).args(["layers", "sp"]))).trim());
    let hex = dir.file_name().unwrap().to_str().unwrap().to_string();
    let link = sb.path().join("link");
    std::os::unix::fs::symlink(&sb.data, &link).unwrap();
    let via_link = ok(run(img(&sb).env("CBUILD_DATA", &link).args(["layers", "sp"])));
    assert_eq!(via_link.trim(), link.join("layers").join(&hex).to_str().unwrap());
    ok(run(img(&sb).args(["rm", "sp"])));
    let empty = sb.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // A symlink to the layer dir itself: nothing in the mount's path names the layer.
    let alias = sb.path().join("alias");
    std::os::unix::fs::symlink(&dir, &alias).unwrap();
    let spellings = [
        alias.to_str().unwrap().to_string(),
        via_link.trim().to_string(),
        format!("{}/./data/../data/layers/{hex}", sb.path().display()),
        format!("{}/d", dir.display()),
        format!("./layers/{hex}"),
    ];
    for (i, lower) in spellings.iter().enumerate() {
        let mnt = sb.path().join(format!("mnt{i}"));
        std::fs::create_dir(&mnt).unwrap();
        // From the data dir, so the relative spelling resolves; gc runs elsewhere.
        let _m = mount_from(&sb.data, lower, &empty, &mnt);
        let rep: serde_json::Value = gc_report(&sb);
        assert_eq!((rep["kept_mounted"].as_u64(), rep["layer_dirs"].as_u64()), (Some(1), Some(0)), "{lower}: {rep}");
        assert!(dir.join("d/f").is_file(), "gc removed the layer dir the mount of {lower} uses");
    }
    // A mount elsewhere whose path is not UTF-8 hid the whole mount table of its namespace from gc.
    {
        use std::os::unix::ffi::OsStringExt;
        let mut odd = sb.path().as_os_str().to_owned().into_vec();
        odd.extend_from_slice(b"/odd-\xff");
        let odd = PathBuf::from(std::ffi::OsString::from_vec(odd));
        std::fs::create_dir(&odd).unwrap();
        nix::mount::mount(Some("t"), &odd, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
        let _o = Defer(|| {
            let _ = nix::mount::umount2(&odd, nix::mount::MntFlags::MNT_DETACH);
        });
        let mnt = sb.path().join("mnt-odd");
        std::fs::create_dir(&mnt).unwrap();
        sh_ok(&format!("mount -t overlay overlay -o lowerdir={}:{} {}", dir.display(), empty.display(), mnt.display()));
        let _m = Defer(|| {
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
        });
        let rep: serde_json::Value = gc_report(&sb);
        assert_eq!(rep["kept_mounted"].as_u64(), Some(1), "beside a mount that is not UTF-8: {rep}");
        assert!(dir.join("d/f").is_file());
    }
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!((rep["kept_mounted"].as_u64(), rep["layer_dirs"].as_u64()), (Some(0), Some(1)), "{rep}");
    assert!(!dir.exists());
}

/// An `unpack` into an empty DIR that fails after a layer whose root entry (`./`) sets an owner and a
/// mode gives DIR back as it was: empty, with its own owner, mode and times.
#[test]
fn a_failed_unpack_gives_the_empty_dir_back_its_owner_mode_and_times() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let l1 = tar(&[owned(tar_entry("./", b'5', b"", "", 0o1777), 1234, 1234), tar_entry("x", b'0', b"x", "", 0o644)]);
    let l2 = tar(&[tar_entry("y", b'0', b"y", "", 0o644)]);
    let wrong = format!("sha256:{}", "1".repeat(64));
    l.image("rm", &[(l1, LAYER_GZIP), (l2, LAYER_GZIP)], |_, c| c["rootfs"]["diff_ids"][1] = serde_json::json!(wrong));
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dest = sb.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    sh_ok(&format!("chmod 0700 {0} && chown 0:0 {0} && touch -d @1500000000 {0}", dest.display()));
    let before = std::fs::symlink_metadata(&dest).unwrap();
    assert_tool_error(&run(img(&sb).args(["unpack", "rm"]).arg(&dest)), TOOL, "the config's diff_id is");
    let after = std::fs::symlink_metadata(&dest).unwrap();
    assert!(names(&dest).is_empty(), "{:?}", names(&dest));
    assert_eq!(
        (after.mode() & 0o7777, after.uid(), after.gid(), after.mtime()),
        (before.mode() & 0o7777, before.uid(), before.gid(), before.mtime()),
        "DIR keeps the image's root metadata"
    );
}

/// Rootless: directories an image makes 0000, with directories inside, that a later layer adds to. The
/// owner cannot enter them, but may chmod them: extraction makes the way u+rwx for the layer and puts
/// the modes back (as `umoci unpack --rootless` does: the same tree), and removing such a tree (the
/// undo of a failed `unpack` or `layers`, `gc`) opens it up first.
#[test]
fn rootless_extraction_undo_and_gc_enter_directories_without_permissions() {
    require_root();
    let sb = Sandbox::new();
    let closed = |top: &str, file: &str| {
        vec![
            tar_entry(&format!("{top}/"), b'5', b"", "", 0),
            tar_entry(&format!("{top}/b/"), b'5', b"", "", 0),
            tar_entry(&format!("{top}/b/{file}"), b'0', b"x", "", 0o644),
        ]
    };
    let mut l1 = closed("a", "x");
    l1.push(tar_entry("c", b'0', b"c", "", 0o644));
    let (l1, l2) = (tar(&l1), tar(&[tar_entry("a/b/y", b'0', b"y", "", 0o644)]));
    let good = Layout::new(&sb.path().join("oci-good"));
    good.image("good", &[(l1.clone(), LAYER_GZIP), (l2, LAYER_GZIP)], |_, _| {});
    // The second layer, with closed dirs of its own, does not match its diff_id: extracted, then undone.
    let bad = Layout::new(&sb.path().join("oci-bad"));
    let wrong = format!("sha256:{}", "1".repeat(64));
    bad.image("bad", &[(l1, LAYER_GZIP), (tar(&closed("d", "f")), LAYER_GZIP)], |_, c| {
        c["rootfs"]["diff_ids"][1] = serde_json::json!(wrong)
    });
    let work = sb.path().join("work");
    std::fs::create_dir(&work).unwrap();
    sh_ok(&format!(
        "chmod -R a+rX {} && chown -R 1000:1000 {} {}",
        sb.path().display(),
        work.display(),
        sb.data.display()
    ));
    let as_user = |prog: &Path, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"]).arg(prog).args(args);
        c.env("CBUILD_DATA", &sb.data).env("HOME", &work).current_dir(&work);
        run(&mut c)
    };
    let me = bin(TOOL);
    ok(as_user(&me, &["import", good.dir.to_str().unwrap()]));
    ok(as_user(&me, &["import", bad.dir.to_str().unwrap()]));

    ok(as_user(&me, &["unpack", "good", "u"]));
    let l = format!("{}:good", good.dir.display());
    ok(as_user(Path::new("/usr/bin/umoci"), &["unpack", "--rootless", "--image", &l, "ub"]));
    let (mut got, mut want) = (tree(&work.join("u"), &FULL), tree(&work.join("ub/rootfs"), &FULL));
    got.remove(".");
    want.remove(".");
    assert_eq!((got["a"].mode, got["a/b"].mode), (0, 0), "the closed dirs are put back to 0000");
    assert_same_tree(&want, &got, "rootless unpack vs umoci unpack --rootless");

    // A failed unpack removes what it made, into a new DIR and into an empty one.
    assert_tool_error(&as_user(&me, &["unpack", "bad", "nu"]), TOOL, "the config's diff_id is");
    assert!(!work.join("nu").exists(), "the undo left the new DIR");
    std::fs::create_dir(work.join("given")).unwrap();
    sh_ok(&format!("chown 1000:1000 {}", work.join("given").display()));
    assert_tool_error(&as_user(&me, &["unpack", "bad", "given"]), TOOL, "the config's diff_id is");
    assert!(names(&work.join("given")).is_empty(), "the undo left {:?}", names(&work.join("given")));

    // A failed `layers` leaves no temporary; gc then removes layer dirs with closed dirs inside.
    assert_tool_error(&as_user(&me, &["layers", "bad"]), TOOL, "the config's diff_id is");
    ok(as_user(&me, &["layers", "good"]));
    let layers = sb.data.join("layers");
    assert!(names(&layers).iter().all(|n| !n.starts_with(".tmp-")), "{:?}", names(&layers));
    ok(as_user(&me, &["rm", "good", "bad"]));
    let rep: serde_json::Value = serde_json::from_str(&ok(as_user(&me, &["--json", "gc"]))).unwrap();
    assert_eq!(rep["layer_dirs"], 2, "{rep}");
    assert_eq!(names(&layers), [".locks"]);
}

/// Rootless: a later layer adds to a 0000 directory of a lower one (its direct parent, which the owner
/// may write once it is opened up but not read): the directory ends 0000, in both forms, as with
/// `umoci unpack --rootless`, not 0300.
#[test]
fn rootless_extraction_puts_a_shut_directory_back_to_0000() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let l1 = tar(&[tar_entry("a/", b'5', b"", "", 0), tar_entry("a/x", b'0', b"x", "", 0o644)]);
    let l2 = tar(&[tar_entry("a/y", b'0', b"y", "", 0o644)]);
    l.image("shut", &[(l1, LAYER_TAR), (l2, LAYER_TAR)], |_, _| {});
    let work = sb.path().join("work");
    std::fs::create_dir(&work).unwrap();
    sh_ok(&format!(
        "chmod -R a+rX {} && chown -R 1000:1000 {} {}",
        sb.path().display(),
        work.display(),
        sb.data.display()
    ));
    let as_user = |prog: &Path, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"]).arg(prog).args(args);
        c.env("CBUILD_DATA", &sb.data).env("HOME", &work).current_dir(&work);
        run(&mut c)
    };
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    ok(as_user(&bin(TOOL), &["import", l.dir.to_str().unwrap()]));
    ok(as_user(&bin(TOOL), &["unpack", "shut", "u"]));
    let img_ref = format!("{}:shut", l.dir.display());
    ok(as_user(Path::new("/usr/bin/umoci"), &["unpack", "--rootless", "--image", &img_ref, "ub"]));
    assert_eq!(mode(&work.join("ub/rootfs/a")), 0, "umoci's");
    assert_eq!(mode(&work.join("u/a")), 0, "unpack's");
    assert_eq!(names(&work.join("u/a")), ["x", "y"]);
    for d in ok(as_user(&bin(TOOL), &["layers", "shut"])).lines() {
        assert_eq!(mode(&Path::new(d).join("a")), 0, "{d}/a");
    }
}

/// `gc` only tidies a store that exists: on a missing one (the default, or a mistyped `--store`) it
/// removes nothing and makes nothing, not even the lock.
#[test]
fn gc_of_a_missing_store_creates_nothing() {
    require_root();
    let sb = Sandbox::new();
    let other = sb.path().join("other");
    for args in [vec!["--json", "gc"], vec!["--json", "--store", other.to_str().unwrap(), "gc"]] {
        let rep: serde_json::Value = serde_json::from_str(&ok(run(img(&sb).args(&args)))).unwrap();
        assert_eq!(
            rep,
            serde_json::json!({"blobs": 0, "bytes": 0, "layer_dirs": 0, "temp": 0, "kept_mounted": 0, "kept_unknown": 0})
        );
    }
    assert_eq!(listing(&sb.data), Vec::<String>::new(), "gc created the store");
    assert!(!other.exists(), "gc created the --store");
}

/// The kernel shows a relative layer path as it was given (`lowerdir=.`, `lowerdir+=alias`), relative to
/// the mounter's directory of the time. Matched by name, `.` or a symlink named otherwise left the
/// layer dir unprotected: gc removed it under the mount.
#[test]
fn gc_keeps_layer_dirs_a_mount_names_by_relative_paths() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "rel"])));
    let dir = PathBuf::from(ok(run(img(&sb).args(["layers", "rel"]))).trim());
    let hex = dir.file_name().unwrap().to_str().unwrap().to_string();
    ok(run(img(&sb).args(["rm", "rel"])));
    std::os::unix::fs::symlink(&dir, sb.path().join("alias")).unwrap();
    let empty = sb.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (layers, top) = (sb.data.join("layers"), sb.path().to_path_buf());
    for (from, lower) in [(&dir, "."), (&top, "alias"), (&layers, &*hex), (&layers, "../layers/./HEX")] {
        let lower = lower.replace("HEX", &hex);
        let mnt = sb.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let _m = mount_from(from, &lower, &empty, &mnt);
        let rep: serde_json::Value = gc_report(&sb);
        assert_eq!((rep["kept_mounted"].as_u64(), rep["layer_dirs"].as_u64()), (Some(1), Some(0)), "{lower}: {rep}");
        assert!(dir.join("f").is_file(), "gc removed the layer dir mounted as {lower} from {}", from.display());
    }
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(1), "{rep}");
}

/// A `--store` elsewhere extracts into the same `<data>/layers`: gc of the default store must keep what
/// that store's images need (it removed them, and the dirs `layers` had just printed were gone), and
/// forget the store once it is gone.
#[test]
fn gc_of_the_default_store_keeps_the_layer_dirs_of_another_store() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let other = sb.path().join("other");
    let with_other = || img_at(&sb, &other);
    ok(run(with_other().arg("build").arg(&root).args(["--tag", "o"])));
    let dir = PathBuf::from(ok(run(with_other().args(["layers", "o"]))).trim());
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "d", "--mtime", "1"])));
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(0), "{rep}");
    assert!(dir.join("f").is_file(), "gc of the default store removed a layer dir another store uses");
    // Unreferenced in the other store too: now it goes.
    ok(run(with_other().args(["rm", "o"])));
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(1), "{rep}");
    assert!(!dir.exists());
    // A store that is gone is forgotten.
    ok(run(with_other().arg("build").arg(&root).args(["--tag", "o"])));
    ok(run(with_other().args(["layers", "o"])));
    std::fs::remove_dir_all(&other).unwrap();
    let rep: serde_json::Value = gc_report(&sb);
    assert_eq!(rep["layer_dirs"].as_u64(), Some(1), "{rep}");
    assert_eq!(names(&sb.data.join("layers").join(".stores")), Vec::<String>::new());
}

/// gc of the default store never waits on another store it reads: not on its own store registered
/// under a second path (a bind mount of the data dir: locked already, the wait was forever), nor on a
/// store whose `.lock` is a FIFO (whoever owns that directory could hang root's gc); such a store keeps
/// every layer dir instead (`kept_unknown`), until it reads again.
#[test]
fn gc_never_waits_on_another_store() {
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    let gc = || {
        let mut c = Command::new("timeout");
        c.arg("20").arg(bin(TOOL)).env("CBUILD_DATA", &sb.data).args(["--json", "gc"]);
        let o = run(&mut c);
        assert!(o.status.success(), "gc: exit {:?}: {}", o.status, stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "d"])));
    // The data dir again, through a bind mount: the default store under another name.
    let bound = sb.path().join("bound");
    std::fs::create_dir(&bound).unwrap();
    sh_ok(&format!("mount --bind {} {}", sb.data.display(), bound.display()));
    let _m = Defer(|| {
        let _ = nix::mount::umount2(&bound, nix::mount::MntFlags::MNT_DETACH);
    });
    ok(run(img_at(&sb, &bound.join("images")).args(["layers", "d"])));
    assert_eq!(gc()["layer_dirs"].as_u64(), Some(0));
    // A store whose lock is a FIFO: read no further, keep every layer dir.
    let other = sb.path().join("other");
    ok(run(img_at(&sb, &other).arg("build").arg(&root).args(["--tag", "o", "--mtime", "1"])));
    ok(run(img_at(&sb, &other).args(["layers", "o"])));
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "x", "--mtime", "2"])));
    let x = PathBuf::from(ok(run(img(&sb).args(["layers", "x"]))).trim());
    ok(run(img(&sb).args(["rm", "x"])));
    std::fs::remove_file(other.join(".lock")).unwrap();
    nix::unistd::mkfifo(&other.join(".lock"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let rep = gc();
    // x's, and o's (what that store needs is unknown).
    assert_eq!((rep["layer_dirs"].as_u64(), rep["kept_unknown"].as_u64()), (Some(0), Some(2)), "{rep}");
    assert!(x.is_dir());
    std::fs::remove_file(other.join(".lock")).unwrap();
    std::fs::write(other.join(".lock"), "").unwrap();
    let rep = gc();
    assert_eq!((rep["layer_dirs"].as_u64(), rep["kept_unknown"].as_u64()), (Some(1), Some(0)), "{rep}");
    assert!(!x.exists());
}

/// A layer list in cbuild-overlay's aux dir (a mount whose lowerdir holds fd numbers: its options did
/// not fit a page) is bytes: one lower dir whose name is not UTF-8 made gc lose the whole list, and
/// remove the image's layer dir under the mount.
#[test]
fn gc_reads_an_overlay_layer_list_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let root = one_file_root(&sb);
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "e"])));
    let layer = PathBuf::from(ok(run(img(&sb).args(["layers", "e"]))).trim());
    let lowers = sb.path().join("lowers");
    let odd = lowers.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    std::fs::create_dir_all(&odd).unwrap();
    let mnt = sb.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut c = Command::new(bin("cbuild-overlay"));
    c.env("CBUILD_STATE", &sb.state).args(["mount", "--legacy-api", "--lower"]).arg(&odd);
    // Long names, so that the options outgrow a page and the layers go by fd number and the list.
    for i in 0..30 {
        let d = lowers.join(format!("{i:0>150}"));
        std::fs::create_dir(&d).unwrap();
        c.arg("--lower").arg(&d);
    }
    c.arg("--lower").arg(&layer).arg(&mnt);
    ok(run(&mut c));
    let _m = Defer(|| {
        let _ = Command::new(bin("cbuild-overlay")).env("CBUILD_STATE", &sb.state).arg("umount").arg(&mnt).status();
        let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
    });
    let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!opts.contains(&*layer.to_string_lossy()), "the layer is named by fd number, not by path");
    ok(run(img(&sb).args(["rm", "e"])));
    let rep = gc_report(&sb);
    assert_eq!((rep["kept_mounted"].as_u64(), rep["layer_dirs"].as_u64()), (Some(1), Some(0)), "{rep}");
    assert!(layer.join("f").is_file(), "gc removed a layer dir a mount uses");
}

/// When a failed `unpack` cannot undo what it made (an append-only DIR keeps its entries), the
/// contract's error line still comes first, the undo's failure after it as the hint.
#[test]
fn a_failed_unpack_whose_undo_fails_reports_the_error_first() {
    require_root();
    let sb = Sandbox::new();
    let l = Layout::new(&sb.path().join("oci"));
    let wrong = format!("sha256:{}", "1".repeat(64));
    let layer = tar(&[tar_entry("x", b'0', b"x", "", 0o644)]);
    l.image("und", &[(layer, LAYER_GZIP)], |_, c| c["rootfs"]["diff_ids"][0] = serde_json::json!(wrong));
    ok(run(img(&sb).arg("import").arg(&l.dir)));
    let dest = sb.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    sh_ok(&format!("chattr +a {}", dest.display()));
    let d = dest.clone();
    let _unlock = Defer(move || {
        let _ = run(Command::new("chattr").arg("-a").arg(&d));
    });
    let o = run(img(&sb).args(["unpack", "und"]).arg(&dest));
    assert_tool_error(&o, TOOL, "the config's diff_id is");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("cbuild-image: verify: "), "the error line first: {err}");
    assert!(lines[1].starts_with("hint: ") && lines[1].contains(dest.to_str().unwrap()), "{err}");
}

/// Regression: a gc that came between an import's (or build's) creating its staging dir's lock file and
/// locking it found the lock free, took the dir for a killed import's and removed it; the import then
/// locked the removed file and failed writing into a dir that was gone (exit 125, "No such file or
/// directory"). Now a staging lock won on a file no longer at its path makes another dir. Here the
/// build's first flock (its staging lock, on a store that exists) waits 1.5 s under strace while gc runs.
#[test]
fn gc_between_a_staging_dirs_lock_file_and_its_flock_does_not_fail_the_build() {
    require_root();
    let sb = Sandbox::new();
    let root = sb.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), "x\n").unwrap();
    ok(run(img(&sb).arg("build").arg(&root).args(["--tag", "first:1"])));
    let mut build = Command::new("strace");
    build
        .args(["-o", "/dev/null", "-e", "trace=flock", "-e", "inject=flock:delay_enter=1500000:when=1", "--"])
        .arg(bin(TOOL))
        .arg("build")
        .arg(&root)
        .args(["--tag", "second:1"])
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let build = build.spawn().unwrap();
    wait_until_traced_at(&build, libc::SYS_flock);
    let report = gc_report(&sb);
    assert!(report["temp"].as_u64().unwrap() >= 1, "gc took the staging dir: {report}");
    let o = build.wait_with_output().unwrap();
    assert!(o.status.success(), "the build: {}", stderr(&o));
    ok(run(img(&sb).args(["config", "second:1"])));
}
