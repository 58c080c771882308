//! `events NAME [--follow]`: OOM kills and pids-limit hits as JSON lines.
//!
//! The kernel counts these events; we report changes of the counters. Wake-ups come from the kernel's
//! own notifications — inotify on v2 `memory.events` and on `pids.events` (kernfs signals a modify on
//! every change), an eventfd registered through v1 `cgroup.event_control` for `memory.oom_control` —
//! and a slow timer re-reads the counters too, so a missed or unsupported notification delays a line
//! but never loses it.

use crate::cgroup::Cgroup;
use crate::controllers::{memory, pids};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Host;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Serialize;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    oom: Option<u64>,
    oom_kill: Option<u64>,
    pids_max: Option<u64>,
}

impl Counters {
    fn read(host: &Host, cg: &Cgroup) -> Result<Counters> {
        let mut c = Counters::default();
        if let Some(d) = cg.dir_of(host, "memory") {
            let (oom, kill) = memory::oom_counters(d)?;
            c.oom = oom;
            c.oom_kill = Some(kill);
        }
        if let Some(d) = cg.dir_of(host, "pids") {
            c.pids_max = Some(pids::limit_hits(d)?);
        }
        Ok(c)
    }

    fn kinds(&self) -> [(&'static str, Option<u64>); 3] {
        [("oom", self.oom), ("oom_kill", self.oom_kill), ("pids_max", self.pids_max)]
    }
}

/// One line. `count` is how many happened since the previous line of this kind, `total` the kernel's
/// counter; `time` is microseconds since the epoch.
#[derive(Serialize)]
struct Event<'a> {
    time: u64,
    name: &'a str,
    event: &'static str,
    count: u64,
    total: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Print a line; false when the reader went away (a closed pipe ends `--follow` quietly).
fn emit(out: &mut dyn Write, name: &str, event: &'static str, count: u64, total: u64) -> bool {
    let line = serde_json::to_string(&Event { time: now_us(), name, event, count, total }).unwrap_or_default();
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}

pub fn run(host: &Host, cg: &Cgroup, follow: bool, out: &mut dyn Write) -> Result<()> {
    // NAME is "removed" once its directories are not the ones found here: gone, or removed and made
    // again between two wake-ups (the new NAME's counters start from zero; its events are not this
    // NAME's). Taken before the first read, so those totals are these directories'.
    let ids: Vec<Option<(u64, u64)>> = cg.dirs.iter().map(|d| fsutil::identity(d)).collect();
    let mut last = Counters::read(host, cg)?;
    // What already happened, as one line per kind.
    for (kind, total) in last.kinds() {
        if let Some(t) = total.filter(|&t| t > 0) {
            if !emit(out, &cg.name, kind, t, t) {
                return Ok(());
            }
        }
    }
    if !follow {
        return Ok(());
    }
    let watch = Watch::new(host, cg)?;
    loop {
        watch.wait()?;
        if cg.dirs.iter().zip(&ids).all(|(d, id)| id.is_none() || fsutil::identity(d) != *id) {
            emit(out, &cg.name, "removed", 0, 0);
            return Ok(());
        }
        let now = match Counters::read(host, cg) {
            Ok(c) => c,
            Err(e) if e.errno() == Some(libc::ENOENT) || e.errno() == Some(libc::ENODEV) => continue,
            Err(e) => return Err(e),
        };
        for ((kind, before), (_, after)) in last.kinds().into_iter().zip(now.kinds()) {
            if let (Some(b), Some(a)) = (before, after) {
                if a > b && !emit(out, &cg.name, kind, a - b, a) {
                    return Ok(());
                }
            }
        }
        last = now;
    }
}

struct Watch {
    inotify: Inotify,
    /// v1 OOM notification: the eventfd, and memory.oom_control kept open while it is registered.
    oom_efd: Option<(EventFd, std::fs::File)>,
}

impl Watch {
    fn new(host: &Host, cg: &Cgroup) -> Result<Watch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::sys("inotify", "init", e.into()))?;
        let mut files = Vec::new();
        let mut oom_efd = None;
        if let Some(d) = cg.dir_of(host, "memory") {
            if d.v2 {
                files.push(d.file("memory.events"));
            } else {
                let ctl = d.file("memory.oom_control");
                let f = std::fs::File::open(&ctl).map_err(|e| Error::sys("open", ctl.display(), e))?;
                let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|e| Error::sys("eventfd", ctl.display(), e.into()))?;
                fsutil::write(
                    &d.file("cgroup.event_control"),
                    &format!("{} {}", efd.as_fd().as_raw_fd(), f.as_raw_fd()),
                )?;
                oom_efd = Some((efd, f));
            }
        }
        if let Some(d) = cg.dir_of(host, "pids") {
            files.push(d.file("pids.events"));
        }
        for f in files {
            inotify
                .add_watch(&f, AddWatchFlags::IN_MODIFY)
                .map_err(|e| Error::sys("inotify", f.display(), e.into()))?;
        }
        Ok(Watch { inotify, oom_efd })
    }

    /// Until a notification or 250 ms pass; then drain the notifications.
    fn wait(&self) -> Result<()> {
        let mut fds = vec![PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        if let Some((efd, _)) = &self.oom_efd {
            fds.push(PollFd::new(efd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", "events", e.into())),
        }
        let _ = self.inotify.read_events();
        if let Some((efd, _)) = &self.oom_efd {
            let _ = efd.read();
        }
        Ok(())
    }
}
