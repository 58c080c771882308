//! cbuild-image CLI: argument parsing and the mapping of errors to the exit code 125. The mechanism is in
//! the library.

use cbuild_image::build::{BuildOptions, RuntimeConfig};
use cbuild_image::export::Format;
use cbuild_image::image::{resolve, Platform};
use cbuild_image::import::{import, ImportOptions};
use cbuild_image::ops::{self, Limits};
use cbuild_image::store::Store;
use cbuild_image::stream::Compression;
use cbuild_image::{build, data_dir, export, reference, show, Ctx, Error, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cbuild-image",
    version,
    about = "OCI images: import, verify, unpack, layers for overlayfs, build, commit, export"
)]
struct Cli {
    /// Print each step on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Machine output: one JSON object, or JSON lines for lists.
    #[arg(long, global = true)]
    json: bool,
    /// The OCI image layout to use instead of <data>/images.
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct LimitArgs {
    /// Refuse a layer whose uncompressed stream is larger (bytes; bounds decompression bombs).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 30)]
    max_layer_size: u64,
    /// Refuse a layer with more tar entries.
    #[arg(long, value_name = "N", default_value_t = 4_000_000)]
    max_entries: u64,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Entrypoint: a JSON array (`["/bin/sh","-c"]`) or words split on spaces.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Cmd: a JSON array or words split on spaces.
    #[arg(long)]
    cmd: Option<String>,
    /// KEY=VALUE added to Env (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// One mtime (Unix seconds) for every entry and for `created`: reproducible images. Default: the
    /// SOURCE_DATE_EPOCH environment variable when it is set and not empty.
    #[arg(long, value_name = "SECS")]
    mtime: Option<u64>,
    /// Layer compression.
    #[arg(long, default_value = "gzip", value_parser = Compression::parse)]
    compression: Compression,
}

#[derive(Subcommand)]
enum Cmd {
    /// Import a docker-archive, an oci-archive (plain or compressed tar) or an OCI layout dir; - is stdin.
    Import {
        source: String,
        /// Name the image (when the input holds one image).
        #[arg(long)]
        tag: Option<String>,
        /// os/arch[/variant] to take from an image index (default: this machine's).
        #[arg(long, value_parser = Platform::parse)]
        platform: Option<Platform>,
        /// Refuse an archive whose uncompressed tar stream is larger (bytes; everything in it is staged
        /// on disk, so this bounds a compressed archive that is a decompression bomb).
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 30)]
        max_size: u64,
        /// Refuse an archive with more tar entries.
        #[arg(long, value_name = "N", default_value_t = 4_000_000)]
        max_entries: u64,
    },
    /// List images.
    Ls,
    /// Manifest, config, layers with sizes, history.
    Inspect { reference: String },
    /// Give the image SOURCE names a second name TARGET (no blob is copied); an existing TARGET moves.
    Tag {
        /// An image in the store: a name, NAME meaning NAME:latest, or a manifest digest.
        source: String,
        /// The new name: [HOST[:PORT]/]NAME[:TAG] (a missing tag is `latest`).
        target: String,
    },
    /// The runtime config (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts).
    Config {
        reference: String,
        #[arg(long, default_value = "json", value_parser = ["json", "env", "shell"])]
        format: String,
        /// With --format shell: an Env entry that is a NAME alone (no `=`) goes into IMAGE_ENV as it is
        /// rather than failing, for a runtime that reads it as Docker's daemon does (it unsets NAME:
        /// `cbuild-ns --env NAME`); an empty entry is dropped, as the daemon drops it. An empty name
        /// (`=V`) still fails.
        #[arg(long)]
        bare_env: bool,
    },
    /// Remove image references (blobs stay until gc).
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove unreferenced blobs, unused layer dirs and leftovers of killed imports.
    Gc,
    /// Check every blob's digest and size and every layer's diff_id.
    Verify { reference: String },
    /// Unpack the image into DIR as one root filesystem (whiteouts applied).
    Unpack {
        reference: String,
        dir: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Extract the layers into the layer store; print their dirs top-first, one per line.
    Layers {
        reference: String,
        /// Mark opaque dirs with user.overlay.opaque (overlay's userxattr); default when not root.
        #[arg(long)]
        userxattr: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Make a one-layer image from a root filesystem directory.
    Build {
        dir: PathBuf,
        #[arg(long)]
        tag: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Make an image from REF plus an overlayfs upper dir as a new layer.
    Commit {
        upper: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        tag: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write REF as an oci-archive or docker-archive file (- is stdout).
    Export {
        reference: String,
        file: String,
        #[arg(long, default_value = "oci-archive", value_parser = Format::parse)]
        format: Format,
    },
}

fn words(s: &str) -> std::result::Result<Vec<String>, Error> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).map_err(|e| Error::new("parse", s, format!("not a JSON array of strings: {e}")))
    } else {
        Ok(s.split_whitespace().map(String::from).collect())
    }
}

/// `--mtime`, else SOURCE_DATE_EPOCH as reproducible-builds.org specifies it: empty is unset, anything
/// but a number of seconds is an error (never silently the current time).
fn mtime(c: &ConfigArgs) -> Result<Option<u64>> {
    let (secs, from) = match (c.mtime, std::env::var_os("SOURCE_DATE_EPOCH")) {
        (Some(s), _) => (s, "--mtime"),
        (None, None) => return Ok(None),
        (None, Some(v)) if v.is_empty() => return Ok(None),
        (None, Some(v)) => {
            let v = v.to_string_lossy();
            let s = v.parse::<u64>().map_err(|_| {
                Error::new("parse", "SOURCE_DATE_EPOCH", format!("{v:?} is not a number of seconds since 1970"))
            })?;
            (s, "SOURCE_DATE_EPOCH")
        }
    };
    build::check_mtime(secs).map_err(|why| Error::new("parse", from, why))?;
    Ok(Some(secs))
}

fn build_options(c: &ConfigArgs) -> Result<BuildOptions> {
    for e in &c.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(Error::new("parse", e, "--env wants KEY=VALUE"));
        }
    }
    Ok(BuildOptions {
        compression: c.compression,
        mtime: mtime(c)?,
        config: RuntimeConfig {
            entrypoint: c.entrypoint.as_deref().map(words).transpose()?,
            cmd: c.cmd.as_deref().map(words).transpose()?,
            env: c.env.clone(),
            workdir: c.workdir.clone(),
            user: c.user.clone(),
        },
    })
}

fn limits(l: LimitArgs) -> Limits {
    Limits { max_layer_size: l.max_layer_size, max_entries: l.max_entries }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap());
}

fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx { verbose: cli.verbose, json: cli.json };
    let data = data_dir();
    let default_store = data.join("images");
    let owns_layers = cli.store.as_ref().is_none_or(|s| *s == default_store);
    let (dir, layers) = (cli.store.unwrap_or(default_store), data.join("layers"));
    // Verbs that add images create the store on first use; all others find what they act on first and
    // create nothing (`rm` and `tag` only rewrite index.json of a store that has the image, `gc` only
    // tidies one that exists).
    let store = match cli.cmd {
        Cmd::Import { .. } | Cmd::Build { .. } | Cmd::Commit { .. } => Store::open(dir, layers, owns_layers)?,
        _ => Store::open_existing(dir, layers, owns_layers),
    };
    // Readers hold the store lock shared till they are done, so `rm` + `gc` cannot pull an image's blobs
    // out from under them. (Not `rm` and `tag`: they take it exclusively themselves.)
    let reads = matches!(
        cli.cmd,
        Cmd::Ls
            | Cmd::Inspect { .. }
            | Cmd::Config { .. }
            | Cmd::Verify { .. }
            | Cmd::Unpack { .. }
            | Cmd::Layers { .. }
            | Cmd::Export { .. }
    );
    let _read = if reads { store.read_lock()? } else { None };
    match cli.cmd {
        Cmd::Import { source, tag, platform, max_size, max_entries } => {
            let tag = tag.as_deref().map(reference::normalize).transpose()?;
            let opts = ImportOptions { tag, platform: platform.unwrap_or_else(Platform::host), max_size, max_entries };
            for im in import(&store, &source, &opts, &ctx)? {
                if ctx.json {
                    print_json(&im);
                } else {
                    println!("{}\t{}", im.reference.as_deref().unwrap_or("<none>"), im.digest);
                }
            }
        }
        Cmd::Ls => {
            if !ctx.json {
                println!("{:<32} {:<14} {:>6} {:>9}  CREATED", "REF", "DIGEST", "LAYERS", "SIZE");
            }
            for (name, d) in store.entries()? {
                // One broken image (a blob removed by hand) must not hide the others.
                let img = match cbuild_image::image::load(&store, name.clone(), &d) {
                    Ok(img) => img,
                    Err(e) => {
                        ctx.warn(&format!("ls: {}: {e}", name.as_deref().unwrap_or(d.digest().as_ref())));
                        continue;
                    }
                };
                if ctx.json {
                    print_json(&show::ls_json(&img));
                } else {
                    println!(
                        "{:<32} {:<14} {:>6} {:>9}  {}",
                        img.reference.as_deref().unwrap_or("<none>"),
                        img.manifest_digest.short(),
                        img.layers.len(),
                        show::human_size(img.size()),
                        img.config.get("created").and_then(|c| c.as_str()).unwrap_or("")
                    );
                }
            }
        }
        Cmd::Inspect { reference } => {
            let img = resolve(&store, &reference)?;
            let v = show::inspect_json(&img, |c| store.layer_dir(c).is_dir());
            if ctx.json {
                print_json(&v);
            } else {
                print!("{}", show::inspect_human(&v));
            }
        }
        Cmd::Tag { source, target } => {
            let (target, digest) = ops::tag(&store, &source, &target, &ctx)?;
            if ctx.json {
                print_json(&serde_json::json!({"ref": target, "digest": digest.as_str(), "source": source}));
            } else {
                println!("{target}\t{digest}");
            }
        }
        Cmd::Config { reference, format, bare_env } => {
            let img = resolve(&store, &reference)?;
            match format.as_str() {
                "env" => print!("{}", show::config_env(img.runtime())?),
                "shell" => print!("{}", show::config_shell(img.runtime(), bare_env, img.manifest_digest.as_str())?),
                _ => print_json(&show::config_json(img.runtime())?),
            }
        }
        Cmd::Rm { references } => {
            for r in references {
                let img = resolve(&store, &r)?;
                // By name when REF names what it resolved to (`NAME` and `NAME:latest` alike).
                let by_digest = img.reference.as_deref() != Some(r.as_str())
                    && img.reference.as_deref() != Some(&format!("{r}:latest"))
                    && img.reference.as_deref() != r.strip_suffix(":latest");
                let n = store.untag(|name, d| {
                    if by_digest {
                        d.digest().as_ref() == img.manifest_digest.as_str()
                    } else {
                        name == &img.reference
                    }
                })?;
                ctx.step("rm", format!("{r} ({n} references)"));
                if ctx.json {
                    print_json(
                        &serde_json::json!({"ref": img.reference, "digest": img.manifest_digest.as_str(), "removed": n}),
                    );
                } else {
                    println!("{}", img.name());
                }
            }
        }
        Cmd::Gc => {
            let rep = ops::gc(&store, &ctx)?;
            if ctx.json {
                print_json(&rep);
            } else {
                let mut kept = String::new();
                if rep.kept_mounted > 0 {
                    kept += &format!("; kept {} layer dirs in use by mounts", rep.kept_mounted);
                }
                if rep.kept_unknown > 0 {
                    kept += &format!("; kept {} layer dirs another store may need (see the warning)", rep.kept_unknown);
                }
                println!(
                    "removed {} blobs ({}), {} layer dirs, {} temporary dirs{kept}",
                    rep.blobs,
                    show::human_size(rep.bytes),
                    rep.layer_dirs,
                    rep.temp,
                );
            }
        }
        Cmd::Verify { reference } => {
            let img = resolve(&store, &reference)?;
            for c in ops::verify(&store, &img, &ctx)? {
                if ctx.json {
                    print_json(&c);
                } else {
                    println!("ok {:<8} {} {}", c.kind, c.digest, c.size);
                }
            }
        }
        Cmd::Unpack { reference, dir, limits: l } => {
            let img = resolve(&store, &reference)?;
            ops::unpack(&store, &img, &dir, limits(l), &ctx)?;
            if ctx.json {
                print_json(
                    &serde_json::json!({"ref": img.reference, "digest": img.manifest_digest.as_str(), "dir": dir}),
                );
            }
        }
        Cmd::Layers { reference, userxattr, limits: l } => {
            let img = resolve(&store, &reference)?;
            let dirs = ops::layers(&store, &img, userxattr, limits(l), &ctx)?;
            for (d, l) in dirs.iter().zip(&img.layers).rev() {
                if ctx.json {
                    print_json(
                        &serde_json::json!({"dir": d, "digest": l.digest.as_str(), "diff_id": l.diff_id.as_str(), "chain_id": l.chain_id.as_str()}),
                    );
                } else {
                    println!("{}", d.display());
                }
            }
        }
        Cmd::Build { dir, tag, config } => {
            let tag = reference::normalize(&tag)?;
            let opts = build_options(&config)?;
            let (d, l) = build::build(&store, &dir, &tag, &opts, &ctx)?;
            report(&ctx, &tag, &d, &l);
        }
        Cmd::Commit { upper, from, tag, config } => {
            let tag = reference::normalize(&tag)?;
            let opts = build_options(&config)?;
            let base = resolve(&store, &from)?;
            let (d, l) = build::commit(&store, &upper, &base, &tag, &opts, &ctx)?;
            report(&ctx, &tag, &d, &l);
        }
        Cmd::Export { reference, file, format } => {
            let img = resolve(&store, &reference)?;
            export::export(&store, &img, &file, format, &ctx)?;
        }
    }
    Ok(())
}

fn report(ctx: &Ctx, tag: &str, d: &cbuild_image::digest::Digest, l: &build::LayerOut) {
    if ctx.json {
        print_json(
            &serde_json::json!({"ref": tag, "digest": d.as_str(), "layer": l.blob.digest.as_str(), "diff_id": l.diff_id.as_str(), "size": l.blob.size}),
        );
    } else {
        println!("{tag}\t{d}");
    }
}

fn main() {
    // End quietly, as C tools do, when the reader of our output goes away (`| head`); the Rust runtime
    // ignores SIGPIPE, which turns that into a panic (and would pass the ignore on to a command we exec).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Usage errors follow the contract too: one line, exit 125.
            let msg = e.to_string();
            // clap's first paragraph, on one line: a list it ends with a colon ("not provided:") is in it.
            let first = msg.split("\n\n").next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!("cbuild-image: parse: arguments: {first}");
            eprintln!("hint: cbuild-image --help");
            std::process::exit(125);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("cbuild-image: {e}");
        if let Some(h) = &e.hint {
            eprintln!("hint: {h}");
        }
        // A stop signal that interrupted a step (already undone) lands now, after its line: 128+N.
        cbuild_image::signals::release();
        std::process::exit(125);
    }
}
