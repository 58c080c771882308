//! `cbuild-ns inspect PID`: what the kernel says about a process's isolation, in one place — its
//! namespaces (and whether each is the host's), the NSpid chain, ID maps, capabilities by name, seccomp,
//! no_new_privs, cgroup and root.

use crate::capabilities;
use crate::error::{Context, Error, Result, Step};
use crate::namespaces::{self, NsType};
use serde_json::{json, Value};

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')).map(str::trim))
}

fn map_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() == 3).then(|| json!({"inside": f[0], "outside": f[1], "count": f[2]}))
        })
        .collect()
}

pub fn inspect(pid: i32) -> Result<Value> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ctx(Step::Inspect, format!("pid {pid}"))?;
    let mut nss = vec![];
    for ty in namespaces::ALL {
        let ino = namespaces::inode(&ty.proc_path(pid)).ok();
        // "The host" is PID 1's namespace when we may read it (comparing with our own would call a
        // namespace shared just because the inspector itself runs in a container); else our own.
        let host = namespaces::inode(&NsType::proc_path(ty, 1))
            .or_else(|_| namespaces::inode(std::path::Path::new(&format!("/proc/self/ns/{}", ty.proc_name()))))
            .ok();
        nss.push(json!({
            "type": ty.proc_name(),
            "inode": ino,
            "host": ino.is_some() && ino == host,
        }));
    }
    let nspid: Vec<u64> = status_field(&status, "NSpid")
        .map(|s| s.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let caps = |key: &str| -> Value {
        let mask = status_field(&status, key).and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0);
        json!({"mask": format!("{mask:016x}"), "names": capabilities::decode(mask)})
    };
    let seccomp_mode = match status_field(&status, "Seccomp") {
        Some("0") => "disabled",
        Some("1") => "strict",
        Some("2") => "filter",
        _ => "unknown",
    };
    let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).unwrap_or_default();
    Ok(json!({
        "pid": pid,
        "name": status_field(&status, "Name"),
        "namespaces": nss,
        "nspid": nspid,
        "uid_map": map_lines(&read("uid_map")),
        "gid_map": map_lines(&read("gid_map")),
        "uids": status_field(&status, "Uid"),
        "gids": status_field(&status, "Gid"),
        "capabilities": {
            "effective": caps("CapEff"),
            "permitted": caps("CapPrm"),
            "inheritable": caps("CapInh"),
            "bounding": caps("CapBnd"),
            "ambient": caps("CapAmb"),
        },
        "seccomp": {
            "mode": seccomp_mode,
            "filters": status_field(&status, "Seccomp_filters").and_then(|s| s.parse::<u64>().ok()),
        },
        "no_new_privs": status_field(&status, "NoNewPrivs") == Some("1"),
        "cgroup": read("cgroup").lines().map(str::to_string).collect::<Vec<_>>(),
        "root": std::fs::read_link(format!("{base}/root")).ok(),
    }))
}

/// The human form: one fact per line.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    out.push_str(&format!("pid          {}  ({})\n", v["pid"], s(&v["name"])));
    let chain: Vec<String> = v["nspid"].as_array().into_iter().flatten().map(|x| x.to_string()).collect();
    out.push_str(&format!("nspid        {}  (host → innermost)\n", chain.join(" → ")));
    out.push_str("namespaces\n");
    for ns in v["namespaces"].as_array().into_iter().flatten() {
        let shared = if ns["host"].as_bool() == Some(true) { "host" } else { "own" };
        out.push_str(&format!("  {:<7} {:<12} {}\n", s(&ns["type"]), s(&ns["inode"]), shared));
    }
    for (k, label) in [("uid_map", "uid_map"), ("gid_map", "gid_map")] {
        let m: Vec<String> = v[k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{} {} {}", r["inside"], r["outside"], r["count"]))
            .collect();
        out.push_str(&format!("{label:<12} {}\n", m.join("; ")));
    }
    for set in ["effective", "permitted", "bounding", "ambient"] {
        let c = &v["capabilities"][set];
        let names: Vec<String> = c["names"].as_array().into_iter().flatten().map(s).collect();
        let shown = if names.is_empty() { "(none)".to_string() } else { names.join(",") };
        out.push_str(&format!("cap {set:<9} {}  {}\n", s(&c["mask"]), shown));
    }
    out.push_str(&format!("seccomp      {} ({} filters)\n", s(&v["seccomp"]["mode"]), s(&v["seccomp"]["filters"])));
    out.push_str(&format!("no_new_privs {}\n", v["no_new_privs"]));
    for c in v["cgroup"].as_array().into_iter().flatten() {
        out.push_str(&format!("cgroup       {}\n", s(c)));
    }
    out.push_str(&format!("root         {}\n", s(&v["root"])));
    out
}

/// Refuse a PID that is not a number before touching /proc.
pub fn parse_pid(s: &str) -> Result<i32> {
    s.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| Error::new(Step::Args, s, "not a PID"))
}
