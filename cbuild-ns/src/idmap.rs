//! User-namespace ID maps: parsing `--uid-map`/`--gid-map`, `--map-root-user`, `--map-auto` (from
//! /etc/subuid and /etc/subgid, as podman does), and writing them for a child process — directly when the
//! kernel lets us, through the setuid newuidmap/newgidmap helpers when it does not (an ordinary user mapping
//! more than its own ID).

use crate::error::{Context, Error, Result, Step};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// `INSIDE:OUTSIDE:COUNT` (COUNT defaults to 1).
pub fn parse_range(s: &str) -> std::result::Result<Range, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str| p.parse::<u32>().map_err(|_| format!("{p:?} is not a number"));
    let (inside, outside, count) = match parts.as_slice() {
        [i, o] => (num(i)?, num(o)?, 1),
        [i, o, c] => (num(i)?, num(o)?, num(c)?),
        _ => return Err("want INSIDE:OUTSIDE[:COUNT]".into()),
    };
    if count == 0 {
        return Err("COUNT must be at least 1".into());
    }
    if inside.checked_add(count - 1).is_none() || outside.checked_add(count - 1).is_none() {
        return Err("range overflows 32 bits".into());
    }
    Ok(Range { inside, outside, count })
}

/// Reject overlapping ranges before the kernel does, with a message that names them.
pub fn check(map: &[Range], what: &str) -> Result<()> {
    if map.len() > 340 {
        return Err(Error::new(Step::Args, what, "more than 340 ranges"));
    }
    for (i, a) in map.iter().enumerate() {
        for b in &map[i + 1..] {
            let overlap = |x0: u32, y0: u32, n: u32, m: u32| x0 < y0.saturating_add(m) && y0 < x0.saturating_add(n);
            if overlap(a.inside, b.inside, a.count, b.count) || overlap(a.outside, b.outside, a.count, b.count) {
                return Err(Error::new(Step::Args, what, "ranges overlap"));
            }
        }
    }
    Ok(())
}

fn format_map(map: &[Range]) -> String {
    map.iter().map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count)).collect()
}

/// The first subordinate range of `user` (name or uid) in /etc/subuid or /etc/subgid.
pub fn subid_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who == name || who == id.to_string() {
            Some((start.trim().parse().ok()?, count.trim().parse().ok()?))
        } else {
            None
        }
    })
}

/// Maps for `--map-auto`: 0 → the caller, 1..=N → its subordinate range.
pub fn auto_map(outer: u32, user: &str, file: &str) -> Result<Vec<Range>> {
    let (start, count) = subid_range(file, user, outer)
        .ok_or_else(|| Error::new(Step::Args, file, format!("no subordinate range for {user}")))
        .map_err(|e| {
            e.hint(format!("add one: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"))
        })?;
    Ok(vec![Range { inside: 0, outside: outer, count: 1 }, Range { inside: 1, outside: start, count }])
}

/// Whether the kernel will take this map written by us: always as real root; otherwise only a single
/// range mapping exactly our own ID (user_namespaces(7)).
fn direct_ok(map: &[Range], own: u32) -> bool {
    nix::unistd::geteuid().is_root() || (map.len() == 1 && map[0].count == 1 && map[0].outside == own)
}

/// Write the maps of `pid`. The gid map needs `setgroups` denied first when written by an unprivileged
/// process (otherwise the child could drop groups that deny it access: CVE-2014-8989).
pub fn write_maps(pid: i32, uid_map: &[Range], gid_map: &[Range]) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if !uid_map.is_empty() {
        write_one(pid, "uid_map", "newuidmap", uid_map, direct_ok(uid_map, uid), Step::UidMap)?;
    }
    if !gid_map.is_empty() {
        let direct = direct_ok(gid_map, gid);
        if direct && !nix::unistd::geteuid().is_root() {
            let path = format!("/proc/{pid}/setgroups");
            crate::log::step(Step::Setgroups, &path);
            std::fs::write(&path, "deny").ctx(Step::Setgroups, &path)?;
        }
        write_one(pid, "gid_map", "newgidmap", gid_map, direct, Step::GidMap)?;
    }
    Ok(())
}

fn write_one(pid: i32, file: &str, helper: &str, map: &[Range], direct: bool, step: Step) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    if direct {
        crate::log::step(step, format!("{path}: {}", format_map(map).trim_end().replace('\n', ", ")));
        return std::fs::write(&path, format_map(map)).map_err(|e| {
            Error::io(step, &path, &e).hint("the outside IDs must be mapped in the parent namespace and not overlap")
        });
    }
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for r in map {
        cmd.args([r.inside.to_string(), r.outside.to_string(), r.count.to_string()]);
    }
    crate::log::step(step, format!("{helper} {pid} {}", format_map(map).trim_end().replace('\n', " ")));
    let out = cmd.output().map_err(|e| {
        Error::io(step, helper, &e).hint("install the uidmap package (newuidmap/newgidmap) for rootless maps")
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("failed").to_string();
        return Err(Error::new(step, helper, msg).hint("check /etc/subuid and /etc/subgid for this user"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(parse_range("0:1000:1").unwrap(), Range { inside: 0, outside: 1000, count: 1 });
        assert_eq!(parse_range("0:1000").unwrap().count, 1);
        assert!(parse_range("0:1000:0").is_err());
        assert!(parse_range("a:1:1").is_err());
        assert!(parse_range("4294967295:0:2").is_err());
    }

    #[test]
    fn rejects_overlap() {
        let a = Range { inside: 0, outside: 1000, count: 10 };
        let b = Range { inside: 5, outside: 5000, count: 10 };
        assert!(check(&[a, b], "uid").is_err());
        let c = Range { inside: 10, outside: 5000, count: 10 };
        assert!(check(&[a, c], "uid").is_ok());
    }
}
