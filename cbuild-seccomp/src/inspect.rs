//! `inspect PID`: the seccomp state the kernel reports in /proc/PID/status.

use crate::{Error, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub pid: u32,
    /// `disabled`, `strict` or `filter`.
    pub mode: &'static str,
    /// Filters attached to the process (kernel ≥ 5.9), stacked ones counted separately.
    pub filters: Option<u32>,
    pub no_new_privs: bool,
}

pub fn inspect(pid: u32) -> Result<State> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::new("inspect", &path, e))?;
    parse(pid, &text).ok_or_else(|| Error::new("inspect", path, "no Seccomp line (kernel without CONFIG_SECCOMP?)"))
}

pub fn parse(pid: u32, status: &str) -> Option<State> {
    let field = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
    };
    let mode = match field("Seccomp")?.as_str() {
        "0" => "disabled",
        "1" => "strict",
        "2" => "filter",
        _ => return None,
    };
    Some(State {
        pid,
        mode,
        filters: field("Seccomp_filters").and_then(|v| v.parse().ok()),
        no_new_privs: field("NoNewPrivs").as_deref() == Some("1"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        let s = super::parse(7, "Name:\tsh\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n").unwrap();
        assert_eq!((s.mode, s.filters, s.no_new_privs), ("filter", Some(3), true));
        assert!(super::parse(7, "Name:\tsh\n").is_none());
    }
}
