//! Image references as Docker's reference grammar has them: `[HOST[:PORT]/]NAME[/NAME...][:TAG]`, name
//! components lowercase `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes, a tag `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
//! A stored reference is always the full name: `NAME` is stored (and looked up) as `NAME:latest`.

use crate::{Error, Result};

/// Check `r` is a name the store may hold and return it in stored form (`NAME` → `NAME:latest`).
/// Refused: anything outside the grammar, a digest (`@...`), a 64-hex name and a name starting with
/// `sha256:` (either would shadow a manifest digest in `inspect`/`rm`).
pub fn normalize(r: &str) -> Result<String> {
    let bad = |why: &str| Error::new("reference", format!("{r:?}"), why);
    if r.is_empty() {
        return Err(bad("empty reference"));
    }
    if r.contains('@') {
        return Err(bad("a stored reference cannot contain a digest ('@')"));
    }
    if r.starts_with("sha256:") || (r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(bad("looks like a digest; a name must not be one"));
    }
    // The tag is after the last ':' unless that ':' belongs to a registry port (a '/' follows it).
    let (name, tag) = match r.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (r, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad("invalid tag: 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
        }
    }
    if name.len() > 255 {
        return Err(bad("name longer than 255 characters"));
    }
    let mut comps: Vec<&str> = name.split('/').collect();
    if comps.len() > 1 && (comps[0].contains(['.', ':']) || comps[0] == "localhost") {
        if !valid_host(comps[0]) {
            return Err(bad("invalid registry host"));
        }
        comps.remove(0);
    }
    if !comps.iter().all(|c| valid_component(c)) {
        return Err(bad(
            "invalid name: lowercase components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'",
        ));
    }
    Ok(match tag {
        Some(_) => r.to_string(),
        None => format!("{r}:latest"),
    })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// `[a-z0-9]+ (sep [a-z0-9]+)*` with sep one of `.`, `_`, `__`, `-+`.
fn valid_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `label(.label)*[:port]`, labels `[A-Za-z0-9]` with inner dashes.
fn valid_host(h: &str) -> bool {
    let (host, port) = match h.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn grammar() {
        for (i, o) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("reg.example.com/x_y__z.w-v:T_1.2-3", "reg.example.com/x_y__z.w-v:T_1.2-3"),
            ("1.36", "1.36:latest"),
        ] {
            assert_eq!(normalize(i).unwrap(), o, "{i}");
        }
        let hex = "a".repeat(64);
        let long_tag = format!("a:{}", "t".repeat(129));
        for bad in [
            "",
            "evil\nline",
            "UPPER/../..:x@y",
            "Upper",
            "a//b",
            "a/",
            "/a",
            "a:",
            "a:.x",
            "a:-x",
            "a@sha256:00",
            hex.as_str(),
            "sha256:abc",
            "a..b",
            "-a",
            "a b",
            long_tag.as_str(),
            "bad_host.x/a",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} accepted");
        }
    }
}
