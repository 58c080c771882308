//! The profile formats, as JSON.
//!
//! Docker's format (moby/profiles `seccomp.Seccomp`) is a superset of OCI's `linux.seccomp`: both have
//! `defaultAction`, `defaultErrnoRet`, `architectures`, `flags` and `syscalls[].{names,action,errnoRet,
//! args}`; Docker adds `archMap`, `syscalls[].name`, `includes`/`excludes` and comments. So one set of
//! types reads both, and a whole OCI `config.json` is recognised by its `linux` (or `ociVersion`) key.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<Syscall>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Arg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
    pub op: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `includes`/`excludes`: a rule applies when all `includes` hold and no `excludes` does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// Which JSON document the input was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A Docker profile or a bare OCI `linux.seccomp` object.
    Profile,
    /// A whole OCI runtime `config.json`; the profile is its `linux.seccomp`.
    OciConfig,
}

/// Parse `text` (from `origin`, for error messages). `oci` forces the config.json reading.
pub fn parse(text: &str, origin: &str, oci: bool) -> Result<(Profile, Format)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::new("parse", origin, format!("invalid JSON: {e}")))?;
    let is_config = oci || value.get("ociVersion").is_some() || value.get("linux").is_some();
    let (doc, format) = if is_config {
        let seccomp = value
            .get("linux")
            .and_then(|l| l.get("seccomp"))
            .ok_or_else(|| Error::new("parse", origin, "OCI config has no linux.seccomp"))?;
        (seccomp.clone(), Format::OciConfig)
    } else {
        (value, Format::Profile)
    };
    // Decode from the text again for a plain profile so type errors carry the line and column.
    let profile: Profile = match format {
        Format::Profile => serde_json::from_str(text),
        Format::OciConfig => serde_json::from_value(doc),
    }
    .map_err(|e| Error::new("parse", origin, format!("invalid profile: {e}")))?;
    Ok((profile, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let e = parse("{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  oops\n}", "p.json", false).unwrap_err();
        assert!(e.reason.contains("line 3 column 3"), "{}", e.reason);
    }

    #[test]
    fn oci_config_detected() {
        let cfg = r#"{"ociVersion":"1.0.2","linux":{"seccomp":{"defaultAction":"SCMP_ACT_ERRNO",
            "architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}}}"#;
        let (p, f) = parse(cfg, "config.json", false).unwrap();
        assert_eq!(f, Format::OciConfig);
        assert_eq!(p.syscalls.unwrap()[0].names.as_ref().unwrap()[0], "getpid");
        assert!(parse(r#"{"ociVersion":"1.0.2","linux":{}}"#, "c", false).is_err());
    }

    #[test]
    fn type_error_has_position() {
        let e = parse("{\"defaultAction\": 5}", "p", false).unwrap_err();
        assert!(e.reason.contains("line 1"), "{}", e.reason);
    }
}
