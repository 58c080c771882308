//! What `ls`, `inspect` and `config` print: a table for people, JSON with `--json`, and for `config` the
//! forms a runtime script consumes (`env` lines, `shell` assignments to `eval`).

use crate::image::Image;
use crate::{Error, Result};
use serde_json::{json, Value};

pub fn human_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

pub fn ls_json(img: &Image) -> Value {
    json!({
        "ref": img.reference,
        "digest": img.manifest_digest.as_str(),
        "layers": img.layers.len(),
        "size": img.size(),
        "created": img.config.get("created"),
    })
}

pub fn inspect_json(img: &Image, extracted: impl Fn(&crate::digest::Digest) -> bool) -> Value {
    let layers: Vec<Value> = img
        .layers
        .iter()
        .map(|l| {
            json!({
                "digest": l.digest.as_str(),
                "media_type": l.media_type,
                "size": l.size,
                "diff_id": l.diff_id.as_str(),
                "chain_id": l.chain_id.as_str(),
                "extracted": extracted(&l.chain_id),
            })
        })
        .collect();
    json!({
        "ref": img.reference,
        "digest": img.manifest_digest.as_str(),
        "media_type": img.manifest.media_type().as_ref().map(|m| m.to_string()),
        "size": img.size(),
        "config_digest": img.config_digest.as_str(),
        "created": img.config.get("created"),
        "architecture": img.config.get("architecture"),
        "os": img.config.get("os"),
        "config": img.runtime(),
        "layers": layers,
        "manifest": serde_json::to_value(&img.manifest).unwrap_or(Value::Null),
        "history": img.config.get("history").cloned().unwrap_or(json!([])),
    })
}

pub fn inspect_human(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut o = String::new();
    o += &format!("Ref:          {}\n", v.get("ref").and_then(Value::as_str).unwrap_or("<none>"));
    o += &format!("Digest:       {}\n", s("digest"));
    o += &format!("Config:       {}\n", s("config_digest"));
    o += &format!("Created:      {}\n", s("created"));
    o += &format!("Platform:     {}/{}\n", s("os"), s("architecture"));
    o += &format!("Size:         {}\n", human_size(v["size"].as_u64().unwrap_or(0)));
    let c = &v["config"];
    for (label, key) in
        [("Entrypoint", "Entrypoint"), ("Cmd", "Cmd"), ("Env", "Env"), ("WorkingDir", "WorkingDir"), ("User", "User")]
    {
        if let Some(x) = c.get(key).filter(|x| !x.is_null()) {
            o += &format!("{:<14}{}\n", format!("{label}:"), x);
        }
    }
    o += "Layers:\n";
    o += &format!("  {:<19} {:>10}  {:<8}  {:<19}  EXTRACTED\n", "DIGEST", "SIZE", "TYPE", "CHAIN_ID");
    for l in v["layers"].as_array().into_iter().flatten() {
        let mt = l["media_type"].as_str().unwrap_or("");
        let kind = if mt.ends_with("gzip") {
            "gzip"
        } else if mt.ends_with("zstd") {
            "zstd"
        } else {
            "tar"
        };
        o += &format!(
            "  {:<19} {:>10}  {:<8}  {:<19}  {}\n",
            &l["digest"].as_str().unwrap_or("")[..19],
            human_size(l["size"].as_u64().unwrap_or(0)),
            kind,
            &l["chain_id"].as_str().unwrap_or("")[..19],
            if l["extracted"].as_bool() == Some(true) { "yes" } else { "no" }
        );
    }
    o += "History:\n";
    for h in v["history"].as_array().into_iter().flatten() {
        let by = h.get("created_by").and_then(Value::as_str).unwrap_or("");
        let empty = if h.get("empty_layer").and_then(Value::as_bool) == Some(true) { " (no layer)" } else { "" };
        o += &format!("  {}  {by}{empty}\n", h.get("created").and_then(Value::as_str).unwrap_or(""));
    }
    o
}

/// Quote a word for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A list field of the image config (`Entrypoint`, `Cmd`, `Env`). Absent or null is empty; a string is a
/// one-element list (as Docker reads it); anything else that is not a list of strings is an error, so
/// the command is never silently changed.
fn strings(c: &Value, key: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::new("config", key, why);
    match c.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(String::from).ok_or_else(|| bad(&format!("non-string element {x}"))))
            .collect(),
        Some(v) => Err(bad(&format!("neither a list of strings nor a string: {v}"))),
    }
}

/// A string field of the image config (`WorkingDir`, `User`): absent or null is empty.
fn one(c: &Value, key: &str) -> Result<String> {
    match c.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(Error::new("config", key, format!("not a string: {v}"))),
    }
}

/// Text output cannot carry a NUL byte (a shell or env file would cut the value there).
fn no_nul(out: String, format: &str) -> Result<String> {
    if out.contains('\0') {
        return Err(Error::new("config", format!("--format {format}"), "a value contains a NUL byte"));
    }
    Ok(out)
}

/// The image's Env, each entry a variable. Docker keeps an entry without `=` (or with an empty key) in
/// the image as it is; as it starts a container its daemon drops a NAME alone (moby's
/// ReplaceOrAppendEnvValues reads it as "unset NAME") and runc refuses an empty key. The formats a
/// process environment is built from refuse both here, rather than hand `env -i "$@"` a command in
/// place of a variable; with `bare`, the shell form keeps a NAME alone for a runtime that unsets it
/// (`cbuild-ns --env NAME`). Only `json` carries them all, as `docker inspect` shows them.
fn variables(c: &Value, format: &str, bare: bool) -> Result<Vec<String>> {
    let mut env = strings(c, "Env")?;
    if bare {
        // An empty entry is a NAME alone whose name is empty: unsetting nothing, Docker's daemon drops it.
        env.retain(|e| !e.is_empty());
    }
    let bad = |e: &&String| match e.split_once('=') {
        Some((k, _)) => k.is_empty(),
        None => !bare,
    };
    if let Some(e) = env.iter().find(bad) {
        return Err(Error::new(
            "config",
            format!("Env {e:?}"),
            format!(
                "not KEY=VALUE, which --format {format} cannot carry (Docker's daemon drops a NAME alone, unsetting NAME; its runc refuses an empty name)"
            ),
        )
        .hint(if format == "shell" && !bare && !e.is_empty() && !e.contains('=') {
            "--bare-env keeps a NAME alone; --format json shows the entries as they are"
        } else {
            "--format json shows the entries as they are"
        }));
    }
    Ok(env)
}

/// `config --format env`: the image's Env, one `KEY=VALUE` per line (an env file, or `mapfile -t`).
/// A line is a variable, so an entry that a reader would take for something else is refused rather
/// than printed: a newline would read back as two variables, and an entry without `=` (or with an
/// empty key) is a host variable to `docker run --env-file` and the command to `env`.
pub fn config_env(c: &Value) -> Result<String> {
    let mut o = String::new();
    for e in variables(c, "env", false)? {
        if e.contains('\n') {
            let key = e.split('=').next().unwrap_or("");
            return Err(Error::new(
                "config",
                format!("Env {key:?}"),
                "the entry holds a newline, which --format env cannot carry",
            )
            .hint("use --format shell or --format json"));
        }
        o += &e;
        o.push('\n');
    }
    no_nul(o, "env")
}

/// `config --format shell`: assignments to `eval`. List values are shell-quoted word lists, so
/// `eval "set -- $IMAGE_ENTRYPOINT $IMAGE_CMD"` rebuilds the argv exactly. `IMAGE_DIGEST`, the manifest's
/// digest, names this very image to the next call (`layers sha256:...`) even if REF moves meanwhile.
pub fn config_shell(c: &Value, bare: bool, digest: &str) -> Result<String> {
    let list =
        |k: &str| -> Result<String> { Ok(strings(c, k)?.iter().map(|s| sh_quote(s)).collect::<Vec<_>>().join(" ")) };
    let mut o = String::new();
    for (k, v) in [
        ("IMAGE_ENTRYPOINT", list("Entrypoint")?),
        ("IMAGE_CMD", list("Cmd")?),
        ("IMAGE_ENV", variables(c, "shell", bare)?.iter().map(|s| sh_quote(s)).collect::<Vec<_>>().join(" ")),
        ("IMAGE_WORKDIR", one(c, "WorkingDir")?),
        ("IMAGE_USER", one(c, "User")?),
        ("IMAGE_PORTS", ports(c).join(" ")),
        ("IMAGE_DIGEST", digest.to_string()),
    ] {
        o += &format!("{k}={}\n", sh_quote(&v));
    }
    no_nul(o, "shell")
}

fn ports(c: &Value) -> Vec<String> {
    let mut ports: Vec<String> =
        c.get("ExposedPorts").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    ports.sort();
    ports
}

/// `config --format json`: the fields a runtime needs, always present (empty when the image has none).
pub fn config_json(c: &Value) -> Result<Value> {
    Ok(json!({
        "entrypoint": strings(c, "Entrypoint")?,
        "cmd": strings(c, "Cmd")?,
        "env": strings(c, "Env")?,
        "working_dir": one(c, "WorkingDir")?,
        "user": one(c, "User")?,
        "exposed_ports": ports(c),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc"), "abc");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn shell_form() {
        let c = json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo 'hi there'"], "Env": ["A=1"], "ExposedPorts": {"80/tcp": {}}});
        let s = config_shell(&c, false, "sha256:0").unwrap();
        assert!(s.contains("IMAGE_ENTRYPOINT='/bin/sh -c'\n"), "{s}");
        assert!(s.contains("IMAGE_PORTS=80/tcp\n"), "{s}");
        let c = json!({"Entrypoint": "/bin/sh -c", "Cmd": null});
        assert_eq!(config_json(&c).unwrap()["entrypoint"], json!(["/bin/sh -c"]));
        assert!(config_json(&json!({"Cmd": ["a", 1]})).is_err());
        assert!(config_shell(&json!({"Cmd": ["a\0b"]}), false, "sha256:0").is_err());
        assert!(config_env(&json!({"Env": ["A=\0"]})).is_err());
        assert!(config_env(&json!({"Env": ["A=x\ny"]})).is_err());
        assert!(config_env(&json!({"Env": ["A"]})).is_err());
        assert!(config_env(&json!({"Env": ["=x"]})).is_err());
        for bad in ["A", "=x", "="] {
            assert!(config_shell(&json!({"Env": ["B=1", bad]}), false, "sha256:0").is_err(), "{bad}");
        }
        assert_eq!(config_json(&json!({"Env": ["A"]})).unwrap()["env"], json!(["A"]));
        // --bare-env: a NAME alone is carried as it is; an empty name still is not.
        let s = config_shell(&json!({"Env": ["B=1", "A"]}), true, "sha256:0").unwrap();
        assert!(s.contains("IMAGE_ENV='B=1 A'\n"), "{s}");
        // ... and an empty entry is dropped, as Docker's daemon drops it (it unsets nothing).
        let s = config_shell(&json!({"Env": ["", "B=1", ""]}), true, "sha256:0").unwrap();
        assert!(s.contains("IMAGE_ENV=B=1\n"), "{s}");
        assert!(config_shell(&json!({"Env": [""]}), false, "sha256:0").is_err());
        for bad in ["=x", "="] {
            assert!(config_shell(&json!({"Env": [bad]}), true, "sha256:0").is_err(), "{bad}");
        }
        assert_eq!(config_env(&json!({"Env": ["A=", "B=x=y z"]})).unwrap(), "A=\nB=x=y z\n");
        assert!(config_json(&json!({"Cmd": ["a\0b"]})).is_ok());
    }
}
