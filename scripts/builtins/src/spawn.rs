//! `spawn -p VAR [-s] [-d] [-c] [-k N] [-r N FILE] [-w N FILE] [-a N FILE] [-i N WVAR] [--] COMMAND [ARG...]` and
//! `reap -p VAR PID`: bash's `COMMAND N<FILE N>FILE N>>FILE &` and `wait -p VAR PID`, without forking
//! the shell; `-i`: a pipe the command reads as fd N while the shell writes into it (fd number in WVAR),
//! which bash cannot make without forking.
//!
//! bash starts every command with fork(2): it copies its page tables, and every page it writes
//! afterwards faults once, copy-on-write (~0.6 ms a start here, against ~0.1 ms for posix_spawn, which
//! lends the child the parent's memory until the exec). `spawn` starts COMMAND with posix_spawn(3): the
//! shell's exported environment, its descriptors (FILEs opened as fds N, as redirections would), its
//! signal mask, and the signal dispositions an exec leaves: the shell's trapped signals at their
//! defaults, its ignored ones ignored. `-s`: in a new session (setsid). VAR gets the PID. `-c`: none of
//! the shell's descriptors from 3 up but those `-k N` names (and the FILEs and the pipe): a command that
//! outlives the shell must not hold what the shell's caller handed it (a pipe the caller reads to its
//! end, a terminal), as Docker's daemon passes a container nothing.
//!
//! bash reaps every child it is sent SIGCHLD for, and drops the status of one it did not start itself.
//! So from a `spawn` until its `reap`, the shell holds SIGCHLD blocked: run no other child in between
//! (bash waits for a foreground child with waitpid(-1), which may take the spawned one's status).
//! `-d`: a command nobody will `reap` (work left to finish in the background): SIGCHLD stays as it
//! is, and bash's own handler collects the command's status and drops it, as for any child it did not
//! start.
//! `reap -p VAR PID` waits for it and returns its status as `wait` does (128+N when signal N killed it),
//! VAR set to PID; `-n` only looks (VAR empty while it runs). A signal the script traps ends the wait
//! early: status 128+that signal, VAR empty (the trap runs next; call `reap` again), as `wait -p` does.
//! A PID whose status bash took (see above) gives 127, VAR empty, and a complaint unless `-q`.
//!
//! Exit status of `spawn`: 0 started; 1 a FILE could not be opened; 126 COMMAND could not be executed;
//! 127 not found; 2 usage.

use crate::{complain, errno, number, signal_for_script, strerror, words, Builtin, Doc, WordList, USAGE};
use core::ffi::{c_char, c_int, c_void, CStr};
use core::{mem, ptr};

// What bash exports to loadable builtins (bash 4.4 to 5.2 alike).
extern "C" {
    fn bind_variable(name: *const c_char, value: *const c_char, flags: c_int) -> *mut c_void;
    fn maybe_make_export_env();
    static export_env: *const *const c_char;
    fn search_for_command(name: *const c_char, flags: c_int) -> *mut c_char;
}

/// `search_for_command`: look in bash's command hash table first, as running the command would.
const CMDSRCH_HASH: c_int = 0x01;

static SPAWN_DOC: Doc = Doc::new(
    c"Start COMMAND as `COMMAND &` would, without forking the shell (posix_spawn), its PID in VAR.

    -p VAR      the variable for the PID (required)
    -s          in a new session (setsid)
    -c          close every other descriptor from 3 up: the command gets 0-2, the FILEs, the pipe and
                the fds named by -k
    -k N        with -c, keep the shell's fd N (0 to 9) open for the command
    -d          never to be reaped (work left running in the background): SIGCHLD is left alone, and
                the shell drops the command's status when it ends
    -r N FILE   FILE open for reading as fd N (N<FILE); -w: for writing, truncated (N>FILE);
                -a: for appending (N>>FILE). N is 0 to 9.
    -i N WVAR   a pipe: the command reads it as fd N; the shell's end, close-on-exec (no other command
                gets it), is the fd whose number goes in WVAR: write with >&$WVAR, close with exec {WVAR}>&-;
                it holds 1 MiB (pipe-max-size) before a write blocks

    Without -d, until `reap` has waited for it, run no other child process: the shell holds SIGCHLD blocked so that
    it does not take the spawned command's status itself. Status: 0 started, 1 a FILE did not open,
    126 cannot execute, 127 not found, 2 usage.",
);

static REAP_DOC: Doc = Doc::new(
    c"Wait for PID, started by `spawn`; its exit status as `wait` gives it, PID in VAR.

    -n          do not wait: if PID is still running, status 0 and VAR empty
    -q          no complaint when PID is no longer a child (the shell took its status, waiting for
                another command): status 127, VAR empty

    A signal with a trap ends the wait early (status 128+N, VAR empty), as with `wait -p`.",
);

pub(crate) const SPAWN: Builtin = Builtin::new(
    c"spawn",
    spawn_builtin,
    &SPAWN_DOC,
    c"spawn -p VAR [-s] [-d] [-c] [-k N]... [-r|-w|-a N FILE]... [-i N WVAR] [--] COMMAND [ARG...]",
);

pub(crate) const REAP: Builtin = Builtin::new(c"reap", reap_builtin, &REAP_DOC, c"reap [-n] [-q] -p VAR PID");

/// How a FILE is opened, as the redirection it stands for.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Open {
    Read,
    Write,
    Append,
}

impl Open {
    fn flags(self) -> c_int {
        match self {
            Open::Read => libc::O_RDONLY,
            Open::Write => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            Open::Append => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        }
    }
}

const MAX_FILES: usize = 8;
/// What an `-i` pipe can hold before a write blocks (see where it is set).
const PIPE_ROOM: c_int = 1 << 20;

/// `spawn`'s options; the command is the words from `command` on.
#[derive(Debug, PartialEq)]
struct Spec {
    /// The word VAR is.
    var: usize,
    setsid: bool,
    /// `-d`: never reaped, so SIGCHLD is left alone.
    detached: bool,
    files: [Option<(c_int, Open, usize)>; MAX_FILES],
    /// `-i N WVAR`: the fd and the word WVAR is.
    pipe: Option<(c_int, usize)>,
    /// `-c`: close every other descriptor from 3 up.
    close_others: bool,
    /// `-k N`: the fds 0-9 kept through `-c`, a bit each.
    keep: u16,
    command: usize,
}

/// `spawn ARGS` over the words `word(0..n)`; FILEs are named by their word's index. What went wrong
/// names the word, for the one error line.
fn parse<'a>(n: usize, word: impl Fn(usize) -> &'a [u8]) -> Result<Spec, (&'static str, &'a [u8])> {
    let mut s = Spec {
        var: 0,
        setsid: false,
        detached: false,
        files: [None; MAX_FILES],
        pipe: None,
        close_others: false,
        keep: 0,
        command: n,
    };
    let (mut i, mut nfiles) = (0, 0);
    while i < n {
        let w = word(i);
        let open = match w {
            b"--" => {
                i += 1;
                break;
            }
            b"-p" => {
                s.var = (i + 1 < n && !word(i + 1).is_empty()).then_some(i + 1).ok_or(("-p needs a VAR", w))?;
                i += 2;
                continue;
            }
            b"-s" => {
                s.setsid = true;
                i += 1;
                continue;
            }
            b"-d" => {
                s.detached = true;
                i += 1;
                continue;
            }
            b"-c" => {
                s.close_others = true;
                i += 1;
                continue;
            }
            b"-k" => {
                let fd = (i + 1 < n)
                    .then(|| number(word(i + 1)))
                    .flatten()
                    .filter(|&fd| fd < 10)
                    .ok_or(("-k needs a descriptor from 0 to 9", w))?;
                s.keep |= 1 << fd;
                i += 2;
                continue;
            }
            b"-r" => Some(Open::Read),
            b"-w" => Some(Open::Write),
            b"-a" => Some(Open::Append),
            b"-i" => None,
            _ if w.first() == Some(&b'-') => return Err(("unknown option", w)),
            _ => break,
        };
        if i + 2 >= n {
            return Err((if open.is_some() { "needs N and FILE" } else { "needs N and WVAR" }, w));
        }
        let fd =
            number(word(i + 1)).filter(|&fd| fd < 10).ok_or(("N must be a descriptor from 0 to 9", word(i + 1)))?;
        let Some(open) = open else {
            if s.pipe.is_some() || word(i + 2).is_empty() {
                return Err(("one -i N WVAR, WVAR a name", w));
            }
            s.pipe = Some((fd, i + 2));
            i += 3;
            continue;
        };
        if nfiles == MAX_FILES {
            return Err(("too many files", w));
        }
        s.files[nfiles] = Some((fd, open, i + 2));
        nfiles += 1;
        i += 3;
    }
    if s.var == 0 {
        return Err(("-p VAR is required", b""));
    }
    if i >= n {
        return Err(("missing COMMAND", b""));
    }
    if s.keep != 0 && !s.close_others {
        return Err(("-k is for -c", b""));
    }
    s.command = i;
    Ok(s)
}

/// The shell's signal mask from before the first unreaped `spawn`, and how many are unreaped.
/// (bash runs builtins on its one thread.)
static mut SAVED_MASK: mem::MaybeUninit<libc::sigset_t> = mem::MaybeUninit::uninit();
static mut UNREAPED: u32 = 0;

/// Block SIGCHLD in the shell (the first time) and return the mask the command is to get.
fn hold_sigchld() -> libc::sigset_t {
    // SAFETY: plain sigset calls on owned values; the statics are only touched on bash's thread.
    unsafe {
        let mut chld: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        let mut old: libc::sigset_t = mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old);
        let unreaped = &mut *ptr::addr_of_mut!(UNREAPED);
        if *unreaped == 0 {
            (*ptr::addr_of_mut!(SAVED_MASK)).write(old);
        }
        *unreaped += 1;
        (*ptr::addr_of!(SAVED_MASK)).assume_init()
    }
}

/// The mask a command is to get without holding SIGCHLD: the shell's own, from before any unreaped
/// `spawn` blocked SIGCHLD.
fn shell_mask() -> libc::sigset_t {
    // SAFETY: as in hold_sigchld.
    unsafe {
        if *ptr::addr_of!(UNREAPED) > 0 {
            return (*ptr::addr_of!(SAVED_MASK)).assume_init();
        }
        let mut now: libc::sigset_t = mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, ptr::null(), &mut now);
        now
    }
}

/// One spawned command less to wait for: the last one gives the shell its SIGCHLD back.
fn release_sigchld() {
    // SAFETY: as in hold_sigchld; SAVED_MASK was written when UNREAPED went above 0.
    unsafe {
        let unreaped = &mut *ptr::addr_of_mut!(UNREAPED);
        if *unreaped == 0 {
            return;
        }
        *unreaped -= 1;
        if *unreaped == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, (*ptr::addr_of!(SAVED_MASK)).as_ptr(), ptr::null_mut());
        }
    }
}

/// Set shell variable `var` to `n` (a PID, an fd) in decimal, or to "" for none.
fn set_number_var(var: &CStr, n: Option<c_int>) {
    let mut buf = [0u8; 12];
    let value = match n {
        // `decimal` leaves its NUL right after the digits, in the same buffer.
        Some(p) => crate::decimal(p, &mut buf).as_ptr().cast(),
        None => c"".as_ptr(),
    };
    // SAFETY: both NUL-terminated and alive during the call; bash copies the value.
    unsafe { bind_variable(var.as_ptr(), value, 0) };
}

unsafe extern "C" fn spawn_builtin(list: *const WordList) -> c_int {
    // The words in one malloc'd array, NULL-terminated: the tail of it is the command's argv.
    let mut n = 0;
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    while next().is_some() {
        n += 1;
    }
    // SAFETY: an array of n+1 pointers, freed below on every path.
    let argv = unsafe { libc::malloc((n + 1) * mem::size_of::<*const c_char>()) } as *mut *const c_char;
    if argv.is_null() {
        complain(b"spawn", b"", strerror(libc::ENOMEM));
        return 1;
    }
    // SAFETY: as above.
    let mut next = unsafe { words(list) };
    for i in 0..n {
        // SAFETY: i < n, the words counted above.
        unsafe { *argv.add(i) = next().map_or(ptr::null(), CStr::as_ptr) };
    }
    // SAFETY: the last slot.
    unsafe { *argv.add(n) = ptr::null() };
    // SAFETY: every slot below n holds one of bash's words, alive during the call.
    let word = |i: usize| unsafe { CStr::from_ptr(*argv.add(i)) };
    let status = match parse(n, |i| word(i).to_bytes()) {
        Err((what, w)) => {
            complain(b"spawn", w, what.as_bytes());
            USAGE
        }
        // SAFETY: s.command < n: argv from there on is NULL-terminated.
        Ok(s) => start(&s, |i| word(i), unsafe { argv.add(s.command) }),
    };
    // SAFETY: allocated above.
    unsafe { libc::free(argv.cast()) };
    status
}

/// Open the FILEs, start the command, set VAR. Every descriptor opened here is closed again, but for
/// the shell's end of an `-i` pipe once the command started.
fn start<'a>(s: &Spec, word: impl Fn(usize) -> &'a CStr, argv: *const *const c_char) -> c_int {
    // SAFETY: zeroed structs are what the init calls expect to fill.
    let mut fa: libc::posix_spawn_file_actions_t = unsafe { mem::zeroed() };
    let mut at: libc::posix_spawnattr_t = unsafe { mem::zeroed() };
    let mut opened = [-1; MAX_FILES];
    // The `-i` pipe's ends, both above the descriptors the command gets (as the FILEs).
    let mut pipe_ends = [-1; 2];
    let status = (|| {
        // SAFETY: init of owned structs.
        unsafe {
            libc::posix_spawn_file_actions_init(&mut fa);
            libc::posix_spawnattr_init(&mut at);
        }
        for (k, (fd, open, at_word)) in s.files.iter().flatten().enumerate() {
            let path = word(*at_word);
            // Opened here, as a redirection would be (a FILE that does not open starts nothing), above
            // the descriptors the command gets, so that no dup2 of one overwrites another's source.
            // SAFETY: a NUL-terminated path.
            let f = unsafe { libc::open(path.as_ptr(), open.flags() | libc::O_CLOEXEC, 0o666) };
            if f < 0 {
                complain(b"spawn", path.to_bytes(), strerror(errno()));
                return 1;
            }
            // SAFETY: fcntl on the descriptor just opened.
            let high = unsafe { libc::fcntl(f, libc::F_DUPFD_CLOEXEC, 10) };
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(f) };
            if high < 0 {
                complain(b"spawn", path.to_bytes(), strerror(errno()));
                return 1;
            }
            opened[k] = high;
            // SAFETY: an initialised file-actions object.
            unsafe { libc::posix_spawn_file_actions_adddup2(&mut fa, high, *fd) };
        }
        if let Some((fd, _)) = s.pipe {
            let mut ends = [-1; 2];
            // Close-on-exec: the write end must reach no command at all (the reader would never see
            // the end of it), the read end only the command, as fd N.
            // SAFETY: pipe2 into a local array; then fcntl on the descriptors it made.
            if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
                complain(b"spawn", b"-i", strerror(errno()));
                return 1;
            }
            for (k, e) in ends.into_iter().enumerate() {
                // SAFETY: as above; each low descriptor is closed once moved.
                pipe_ends[k] = unsafe { libc::fcntl(e, libc::F_DUPFD_CLOEXEC, 10) };
                unsafe { libc::close(e) };
                if pipe_ends[k] < 0 {
                    complain(b"spawn", b"-i", strerror(errno()));
                    return 1;
                }
            }
            // Room for what the shell writes (up to the system's pipe-max-size, 1 MiB by default; the
            // default pipe holds 64 KiB): bash runs a trap only once a builtin's write returns, so a
            // signal during a write blocked on a slow reader waited for the reader, and reached a
            // command that might have started meanwhile. Larger than the room left, still blocks.
            // SAFETY: fcntl on the descriptor just made; a refusal (the user's pipe quota) keeps 64 KiB.
            unsafe { libc::fcntl(pipe_ends[1], libc::F_SETPIPE_SZ, PIPE_ROOM) };
            // SAFETY: an initialised file-actions object.
            unsafe { libc::posix_spawn_file_actions_adddup2(&mut fa, pipe_ends[0], fd) };
        }
        if s.close_others {
            // The command's own: 0-2, the FILEs' and the pipe's fds N, and each -k N.
            let mut keep = s.keep | 0b111;
            for (fd, _, _) in s.files.iter().flatten() {
                keep |= 1 << fd;
            }
            if let Some((fd, _)) = s.pipe {
                keep |= 1 << fd;
            }
            if let Err(e) = close_others(&mut fa, keep, &opened, &pipe_ends) {
                complain(b"spawn", b"-c", strerror(e));
                return 1;
            }
        }
        let cmd = word(s.command);
        // A path is used as it is; a bare name is looked up as bash would (its hash table, then PATH).
        let is_path = cmd.to_bytes().contains(&b'/');
        let found = if is_path {
            ptr::null_mut()
        } else {
            // SAFETY: a NUL-terminated name; the result is malloc'd or NULL.
            unsafe { search_for_command(cmd.as_ptr(), CMDSRCH_HASH) }
        };
        if !is_path && found.is_null() {
            complain(b"spawn", cmd.to_bytes(), b"command not found");
            return 127;
        }
        let path = if is_path { cmd.as_ptr() } else { found as *const c_char };
        let mask = if s.detached { shell_mask() } else { hold_sigchld() };
        let mut flags = libc::POSIX_SPAWN_SETSIGMASK;
        if s.setsid {
            flags |= c_int::from(libc::POSIX_SPAWN_SETSID);
        }
        let mut pid: libc::pid_t = 0;
        // SAFETY: initialised attributes and file actions, NULL-terminated argv and environment (bash's
        // export list, rebuilt if variables changed since it was last made).
        let rc = unsafe {
            libc::posix_spawnattr_setsigmask(&mut at, &mask);
            libc::posix_spawnattr_setflags(&mut at, flags as libc::c_short);
            maybe_make_export_env();
            libc::posix_spawn(&mut pid, path, &fa, &at, argv.cast(), export_env.cast())
        };
        if !found.is_null() {
            // SAFETY: bash's malloc'd answer.
            unsafe { libc::free(found.cast()) };
        }
        if rc != 0 {
            if !s.detached {
                release_sigchld();
            }
            complain(b"spawn", cmd.to_bytes(), strerror(rc));
            return if rc == libc::ENOENT { 127 } else { 126 };
        }
        set_number_var(word(s.var), Some(pid));
        if let Some((_, wvar)) = s.pipe {
            // The shell keeps its end: no longer ours to close below.
            set_number_var(word(wvar), Some(mem::replace(&mut pipe_ends[1], -1)));
        }
        0
    })();
    // SAFETY: destroying what was initialised (destroy of a zeroed, uninitialised object is harmless in
    // glibc) and closing our own descriptors.
    unsafe {
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        for f in opened.into_iter().chain(pipe_ends).filter(|&f| f >= 0) {
            libc::close(f);
        }
    }
    status
}

/// `-c`: a close action for every descriptor the shell has open from 3 up, but those in `keep` (fds 0-9,
/// a bit each) and `ours` (spawn's own, close-on-exec already). Read from /proc/self/fd: the shell's
/// caller may have handed it any number, above 9 too. (A close of one that is close-on-exec costs the
/// child nothing much; glibc ignores one that fails with EBADF.)
fn close_others(
    fa: &mut libc::posix_spawn_file_actions_t,
    keep: u16,
    opened: &[c_int],
    pipe: &[c_int],
) -> Result<(), c_int> {
    // SAFETY: a NUL-terminated path; the stream is closed below on every path.
    let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
    if dir.is_null() {
        return Err(errno());
    }
    // SAFETY: the stream just opened.
    let own = unsafe { libc::dirfd(dir) };
    let mut rc = Ok(());
    loop {
        // SAFETY: readdir on the open stream; the entry is valid until the next call.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
        let Some(fd) = number(name.to_bytes()) else { continue };
        if fd < 3 || fd == own || (fd < 10 && keep & (1 << fd) != 0) || opened.contains(&fd) || pipe.contains(&fd) {
            continue;
        }
        // SAFETY: an initialised file-actions object.
        let r = unsafe { libc::posix_spawn_file_actions_addclose(fa, fd) };
        if r != 0 {
            rc = Err(r);
            break;
        }
    }
    // SAFETY: the stream opened above.
    unsafe { libc::closedir(dir) };
    rc
}

/// `reap [-n] [-q] -p VAR PID`: the options, VAR and PID, or what is wrong.
struct Reap<'a> {
    nohang: bool,
    quiet: bool,
    var: &'a CStr,
    pid: c_int,
}

fn parse_reap<'a>(mut next: impl FnMut() -> Option<&'a CStr>) -> Result<Reap<'a>, &'static str> {
    let (mut nohang, mut quiet, mut var, mut pid) = (false, false, None, None);
    while let Some(w) = next() {
        match w.to_bytes() {
            b"-n" => nohang = true,
            b"-q" => quiet = true,
            b"-p" => var = Some(next().filter(|v| !v.is_empty()).ok_or("-p needs a VAR")?),
            p if pid.is_none() => pid = Some(number(p).filter(|&p| p > 0).ok_or("PID must be a process id")?),
            _ => return Err("one PID only"),
        }
    }
    Ok(Reap { nohang, quiet, var: var.ok_or("-p VAR is required")?, pid: pid.ok_or("missing PID")? })
}

unsafe extern "C" fn reap_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let Reap { nohang, quiet, var, pid } = match parse_reap(unsafe { words(list) }) {
        Ok(r) => r,
        Err(what) => {
            complain(b"reap", b"", what.as_bytes());
            return USAGE;
        }
    };
    set_number_var(var, None);
    loop {
        let mut st = 0;
        // SAFETY: waitpid for one child into a local.
        let r = unsafe { libc::waitpid(pid, &mut st, if nohang { libc::WNOHANG } else { 0 }) };
        if r == 0 {
            // -n, and it is still running: VAR stays empty.
            return 0;
        }
        if r == pid {
            release_sigchld();
            set_number_var(var, Some(pid));
            return if libc::WIFEXITED(st) { libc::WEXITSTATUS(st) } else { 128 + libc::WTERMSIG(st) };
        }
        match errno() {
            libc::EINTR => {
                // A trap's signal (or bash's own SIGINT handling): back to bash, which runs the trap
                // next. Anything else: wait on.
                if let Some(code) = signal_for_script() {
                    return code;
                }
            }
            e => {
                // ECHILD: bash took its status, waiting for another command with waitpid(-1) (see the top
                // of this file). It has ended all the same: one spawned command less to hold SIGCHLD for.
                if e == libc::ECHILD {
                    release_sigchld();
                    if quiet {
                        return 127;
                    }
                }
                let mut buf = [0u8; 12];
                complain(b"reap", crate::decimal(pid, &mut buf), strerror(e));
                return 127;
            }
        }
    }
}

/// bash's side, for the unit tests' binary (which bash does not load).
#[cfg(test)]
#[allow(non_upper_case_globals)]
mod bash {
    use core::ffi::{c_char, c_int, c_void};
    #[no_mangle]
    extern "C" fn bind_variable(_: *const c_char, _: *const c_char, _: c_int) -> *mut c_void {
        core::ptr::null_mut()
    }
    #[no_mangle]
    extern "C" fn maybe_make_export_env() {}
    #[no_mangle]
    extern "C" fn search_for_command(_: *const c_char, _: c_int) -> *mut c_char {
        core::ptr::null_mut()
    }
    #[repr(transparent)]
    pub struct Env(*const *const c_char);
    unsafe impl Sync for Env {}
    #[no_mangle]
    static export_env: Env = Env(core::ptr::null());
    #[no_mangle]
    static trapped_signal_received: c_int = 0;
    #[no_mangle]
    static interrupt_state: c_int = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VAR, setsid, the FILEs, the command.
    type Parsed = (String, bool, Vec<(c_int, Open, String)>, Vec<String>);

    fn p(a: &[&str]) -> Result<Parsed, String> {
        let s = parse(a.len(), |i| a[i].as_bytes()).map_err(|(w, s)| format!("{w}: {}", String::from_utf8_lossy(s)))?;
        let files = s.files.iter().flatten().map(|&(fd, o, i)| (fd, o, a[i].to_string())).collect();
        let cmd = a[s.command..].iter().map(|w| w.to_string()).collect();
        Ok((a[s.var].to_string(), s.setsid, files, cmd))
    }

    #[test]
    fn parses_the_forms_the_scripts_use() {
        let (var, sid, files, cmd) = p(&["-p", "child", "-w", "4", "/s/status", "--", "cbuild-overlay", "-x"]).unwrap();
        assert_eq!((var.as_str(), sid), ("child", false));
        assert_eq!(files, vec![(4, Open::Write, "/s/status".to_string())]);
        assert_eq!(cmd, ["cbuild-overlay", "-x"]);
        let (_, sid, files, cmd) =
            p(&["-p", "s", "-s", "-r", "0", "/dev/null", "-a", "1", "o", "-a", "2", "e", "sh", "-c", "x"]).unwrap();
        assert!(sid);
        assert_eq!(files.len(), 3);
        assert_eq!(files[0], (0, Open::Read, "/dev/null".to_string()));
        assert_eq!(cmd, ["sh", "-c", "x"]);
        assert!(p(&["-p", "v", "-d", "rm", "-rf", "x"]).is_ok_and(|(_, sid, _, cmd)| !sid && cmd == ["rm", "-rf", "x"]));
        assert!(parse(3, |i| [&b"-p"[..], b"v", b"-d"][i]).is_err());
        assert!(parse(4, |i| [&b"-p"[..], b"v", b"-d", b"c"][i]).unwrap().detached);
        // The command's own options are its own.
        assert_eq!(p(&["-p", "v", "--", "-w", "x"]).unwrap().3, ["-w", "x"]);
        let a = ["-p", "c", "-w", "4", "st", "-i", "5", "args_fd", "--", "cbuild-overlay"];
        let s = parse(a.len(), |i| a[i].as_bytes()).unwrap();
        assert_eq!((s.pipe, s.command), (Some((5, 7)), 9));
        let e = |a: &[&'static str]| parse(a.len(), |i| a[i].as_bytes()).unwrap_err().0;
        assert_eq!(e(&["-p", "c", "-i", "5", "w", "-i", "6", "x", "cmd"]), "one -i N WVAR, WVAR a name");
        assert_eq!(e(&["-p", "c", "-i", "5", "", "cmd"]), "one -i N WVAR, WVAR a name");
        assert_eq!(e(&["-p", "c", "-i", "12", "w", "cmd"]), "N must be a descriptor from 0 to 9");
        assert_eq!(e(&["-p", "c", "-i", "5"]), "needs N and WVAR");
        let a = ["-p", "c", "-c", "-k", "9", "-k", "4", "--", "sh"];
        let s = parse(a.len(), |i| a[i].as_bytes()).unwrap();
        assert_eq!((s.close_others, s.keep, s.command), (true, 1 << 9 | 1 << 4, 8));
        assert!(!parse(3, |i| [&b"-p"[..], b"v", b"c"][i]).unwrap().close_others);
        assert_eq!(e(&["-p", "c", "-k", "9", "sh"]), "-k is for -c");
        assert_eq!(e(&["-p", "c", "-c", "-k", "10", "sh"]), "-k needs a descriptor from 0 to 9");
        assert_eq!(e(&["-p", "c", "-c", "-k"]), "-k needs a descriptor from 0 to 9");
    }

    #[test]
    fn reap_words() {
        let r = |a: &[&CStr]| {
            let mut it = a.iter().copied();
            parse_reap(|| it.next()).map(|r| (r.nohang, r.var.to_string_lossy().to_string(), r.pid))
        };
        assert_eq!(r(&[c"-p", c"e", c"42"]), Ok((false, "e".into(), 42)));
        assert_eq!(r(&[c"-n", c"-p", c"e", c"42"]), Ok((true, "e".into(), 42)));
        let mut it = [c"-q", c"-p", c"e", c"7"].into_iter();
        assert!(parse_reap(|| it.next()).is_ok_and(|r| r.quiet && !r.nohang && r.pid == 7));
        assert_eq!(r(&[c"42"]), Err("-p VAR is required"));
        assert_eq!(r(&[c"-p", c"e"]), Err("missing PID"));
        assert_eq!(r(&[c"-p", c"e", c"0"]), Err("PID must be a process id"));
        assert_eq!(r(&[c"-p", c"e", c"1", c"2"]), Err("one PID only"));
        assert_eq!(r(&[c"-p"]), Err("-p needs a VAR"));
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        assert_eq!(p(&["true"]).unwrap_err(), "-p VAR is required: ");
        assert_eq!(p(&["-p", "v"]).unwrap_err(), "missing COMMAND: ");
        assert_eq!(p(&["-p", "v", "--"]).unwrap_err(), "missing COMMAND: ");
        assert!(p(&["-p"]).is_err());
        assert_eq!(p(&["-p", "v", "-w", "10", "f", "c"]).unwrap_err(), "N must be a descriptor from 0 to 9: 10");
        assert!(p(&["-p", "v", "-w", "4"]).is_err());
        assert_eq!(p(&["-p", "v", "-x", "c"]).unwrap_err(), "unknown option: -x");
    }
}
