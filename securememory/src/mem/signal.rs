//! The purge's signal handler: wipe every registered mapping
//! ([`registry::wipe_all`](super::registry::wipe_all)), then let the signal
//! take its course as if the handler had not been there: the handler the
//! program had installed is called as the kernel would have called it (its
//! `sa_mask` and `SA_NODEFER` make the signal mask it runs with, and a
//! one-shot `SA_RESETHAND` handler runs once, the default action after it);
//! with none (the default action), the default is restored and the signal
//! raised again, so the process ends the way that signal ends it (SIGQUIT
//! still dumps core).
//!
//! Everything the handler does is an atomic load or store or a system call
//! (`getpid`, `mmap`, `fallocate`, `sched_yield`, `sigaction`,
//! `pthread_sigmask`, `raise`): no lock, no allocation, no user code but
//! the program's own previous handler. It saves and restores `errno`.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Signal numbers are below this (Linux: 64 signals; macOS: 31; FreeBSD's
/// real-time signals above it are refused).
const NSIG: usize = 65;

/// Words of a `sigset_t` kept per signal (Linux's is 128 bytes; the
/// others' are smaller).
const MASK_WORDS: usize = std::mem::size_of::<libc::sigset_t>().div_ceil(8);

/// The disposition the program had before ours, per signal: its handler,
/// flags and mask (the mask as the words of a `sigset_t`, so that the
/// handler reads it with atomic loads only).
struct Prev {
    handler: AtomicUsize,
    flags: AtomicUsize,
    mask: [AtomicU64; MASK_WORDS],
}

static PREV: [Prev; NSIG] = [const {
    Prev {
        handler: AtomicUsize::new(libc::SIG_DFL),
        flags: AtomicUsize::new(0),
        mask: [const { AtomicU64::new(0) }; MASK_WORDS],
    }
}; NSIG];

impl Prev {
    fn store_mask(&self, set: &libc::sigset_t) {
        let mut words = [0u64; MASK_WORDS];
        // SAFETY: copies the bytes of a valid sigset_t into an array at
        // least as large; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (set as *const libc::sigset_t).cast::<u8>(),
                words.as_mut_ptr().cast::<u8>(),
                std::mem::size_of::<libc::sigset_t>(),
            )
        };
        for (w, v) in self.mask.iter().zip(words) {
            w.store(v, Ordering::Release);
        }
    }

    /// Add the remembered mask's signals to `set`.
    fn add_mask_to(&self, set: &mut libc::sigset_t) {
        let words: [u64; MASK_WORDS] =
            std::array::from_fn(|i| self.mask[i].load(Ordering::Acquire));
        // SAFETY: plain old data; all-zero is valid.
        let mut remembered: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: fills a valid sigset_t from an array at least as large
        // (the bytes `store_mask` copied out of one).
        unsafe {
            std::ptr::copy_nonoverlapping(
                words.as_ptr().cast::<u8>(),
                (&mut remembered as *mut libc::sigset_t).cast::<u8>(),
                std::mem::size_of::<libc::sigset_t>(),
            )
        };
        for sig in 1..NSIG as libc::c_int {
            // SAFETY: both sets are valid; `sig` is in range (sigismember
            // and sigaddset are async-signal-safe).
            if unsafe { libc::sigismember(&remembered, sig) } == 1 {
                // SAFETY: as above.
                unsafe { libc::sigaddset(set, sig) };
            }
        }
    }
}

/// Serialises installs (ordinary context only).
static INSTALL: Mutex<()> = Mutex::new(());

/// What [`install`] did for one signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Installed {
    /// The purge handler is installed now (or already was).
    Yes,
    /// The signal is ignored (`SIG_IGN`, as `nohup` leaves SIGHUP): left as
    /// it is, so the signal that the program ignores does not wipe its secrets.
    Ignored,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// The signal's current disposition.
fn query(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: `sigaction` is plain old data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the disposition into `old`.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
        return Err(last_error());
    }
    Ok(old)
}

/// The action that runs [`on_signal`], every signal blocked while it runs
/// (a second purge signal waits for the first to finish), with `SA_RESTART`
/// and `SA_ONSTACK` as `flags` has them.
fn ours(flags: libc::c_int) -> libc::sigaction {
    // SAFETY: plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_signal as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | flags & (libc::SA_RESTART | libc::SA_ONSTACK);
    // SAFETY: `sa_mask` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut act.sa_mask) };
    act
}

/// Ours in front of the default action: a blocking call the signal
/// interrupts is restarted (the default never interrupts one it does not
/// end), and the purge runs on the alternate stack if the thread has one.
const IN_FRONT_OF_THE_DEFAULT: libc::c_int = libc::SA_RESTART | libc::SA_ONSTACK;

/// Signals a fault raises: ours runs on the alternate stack for them
/// whatever the program's handler asked (a stack overflow leaves no room
/// on the thread's own stack for the purge). For the others ours runs on
/// the stack the program's handler asked for (`SA_ONSTACK` or not), since
/// it calls that handler from its own frame: on std's alternate stack of
/// a few KiB, a handler the kernel would have run on the thread's own
/// stack could overflow it.
fn faults(sig: libc::c_int) -> bool {
    matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    )
}

/// Install the purge handler for `sig`, remembering what the program had.
pub(crate) fn install(sig: i32) -> io::Result<Installed> {
    let slot = usize::try_from(sig)
        .ok()
        .and_then(|s| PREV.get(s))
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let old = query(sig)?;
    if old.sa_sigaction == on_signal as *const () as usize {
        return Ok(Installed::Yes);
    }
    if old.sa_sigaction == libc::SIG_IGN {
        return Ok(Installed::Ignored);
    }
    // Remembered before ours is in place: the handler may run at once.
    slot.store_mask(&old.sa_mask);
    slot.flags.store(old.sa_flags as usize, Ordering::Release);
    slot.handler.store(old.sa_sigaction, Ordering::Release);
    let act = if old.sa_sigaction == libc::SIG_DFL {
        ours(IN_FRONT_OF_THE_DEFAULT)
    } else {
        ours(old.sa_flags | if faults(sig) { libc::SA_ONSTACK } else { 0 })
    };
    // SAFETY: `act` names `on_signal`, an `extern "C"` handler of the
    // SA_SIGINFO form that stays valid for the life of the process.
    if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
        return Err(last_error());
    }
    Ok(Installed::Yes)
}

/// Whether the purge handler is `sig`'s disposition now (the program may
/// have put a handler of its own in its place since it was installed).
pub(crate) fn is_installed(sig: i32) -> bool {
    query(sig).is_ok_and(|a| a.sa_sigaction == on_signal as *const () as usize)
}

/// Threads running [`on_signal`] now: kernel thread id, the address of the
/// handler's frame, the signal and the context the kernel passed, per slot
/// (tid 0: free). A program's handler that we chain to may call ours itself
/// for the same signal (it was installed in front of ours, found ours as
/// the one to chain to, then `install` ran again and found it): that nested
/// call returns at once (the outer one wiped already), or each would call
/// the other until the stack overflows. It passes no context or the one it
/// was given; a signal the kernel delivers nested there (another one, or
/// the same one under `SA_NODEFER`: the program's handler runs with them
/// unblocked) brings a context of its own and runs in full.
const RUNNING: usize = 64;
static RUNNING_TID: [AtomicUsize; RUNNING] = [const { AtomicUsize::new(0) }; RUNNING];
static RUNNING_AT: [AtomicUsize; RUNNING] = [const { AtomicUsize::new(0) }; RUNNING];
static RUNNING_SIG: [AtomicI32; RUNNING] = [const { AtomicI32::new(0) }; RUNNING];
static RUNNING_CTX: [AtomicUsize; RUNNING] = [const { AtomicUsize::new(0) }; RUNNING];

/// How far below an outer run's frame a nested call's frame may be.
const NESTED_WITHIN: usize = 1 << 20;

/// A run of the handler that [`enter`] recorded: its slot, and the record
/// it stands in front of (the run it is nested in), put back by [`leave`].
struct Entered {
    slot: Option<usize>,
    outer: Option<(i32, usize, usize)>,
}

fn record(i: usize, sig: i32, at: usize, ctx: usize) {
    RUNNING_SIG[i].store(sig, Ordering::Release);
    RUNNING_AT[i].store(at, Ordering::Release);
    RUNNING_CTX[i].store(ctx, Ordering::Release);
}

/// Record this thread as running the handler for `sig` at frame `at` with
/// context `ctx`; `None` for a call back into ours (see [`RUNNING`]). A
/// record left by a run that never returned (the program's handler jumped
/// out with `siglongjmp`) may lie above a later run's frame (the signal
/// interrupted deeper code): that run brings a new context, so it is not
/// taken for a call back. Atomics only: async-signal-safe. A thread
/// finding no free slot runs unrecorded.
fn enter(tid: usize, sig: i32, at: usize, ctx: usize) -> Option<Entered> {
    for (i, t) in RUNNING_TID.iter().enumerate() {
        if t.load(Ordering::Acquire) == tid {
            let outer_at = RUNNING_AT[i].load(Ordering::Acquire);
            let outer_sig = RUNNING_SIG[i].load(Ordering::Acquire);
            let outer_ctx = RUNNING_CTX[i].load(Ordering::Acquire);
            let mut outer = None;
            if outer_at > at && outer_at - at <= NESTED_WITHIN {
                if outer_sig == sig && (ctx == 0 || ctx == outer_ctx) {
                    return None;
                }
                outer = Some((outer_sig, outer_at, outer_ctx));
            }
            record(i, sig, at, ctx);
            return Some(Entered {
                slot: Some(i),
                outer,
            });
        }
    }
    for (i, t) in RUNNING_TID.iter().enumerate() {
        if t.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            record(i, sig, at, ctx);
            return Some(Entered {
                slot: Some(i),
                outer: None,
            });
        }
    }
    Some(Entered {
        slot: None,
        outer: None,
    })
}

/// End a run [`enter`] recorded: put back the record of the run it was
/// nested in, or free the slot.
fn leave(run: Entered) {
    match (run.slot, run.outer) {
        (Some(i), Some((sig, at, ctx))) => record(i, sig, at, ctx),
        (Some(i), None) => RUNNING_TID[i].store(0, Ordering::Release),
        (None, _) => {}
    }
}

/// The calling thread's id, never 0, read with no lock or allocation.
#[cfg(target_os = "linux")]
fn this_thread() -> usize {
    // SAFETY: gettid has no preconditions (async-signal-safe).
    unsafe { libc::syscall(libc::SYS_gettid) as usize }
}

/// The calling thread's id, never 0 (`pthread_self` reads the thread
/// pointer: no lock, no allocation).
#[cfg(not(target_os = "linux"))]
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: only returns this thread's errno slot.
    #[cfg(target_os = "linux")]
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: as above (macOS and FreeBSD name it `__error`).
    #[cfg(not(target_os = "linux"))]
    let slot = unsafe { libc::__error() };
    // SAFETY: the slot is valid for this thread's life.
    let errno = unsafe { *slot };
    // Every signal blocked, and the mask ours was entered with kept: every
    // signal already for a delivery (our `sa_mask`), the caller's own for a
    // program's handler calling ours, which then wipes blocked too.
    let (all, entered) = block_all();
    let tid = this_thread();
    let frame = 0u8;
    let at = std::ptr::addr_of!(frame) as usize;
    if let Some(run) = enter(tid, sig, at, ctx as usize) {
        super::registry::wipe_all();
        chain(sig, info, ctx);
        // The program's handler ran with its own mask: every signal blocked
        // again, so that none lands between the record's stores.
        set_mask(&all);
        leave(run);
    }
    // Back to the mask ours was entered with (`sigreturn` then restores the
    // interrupted code's).
    set_mask(&entered);
    // SAFETY: as above; the interrupted code finds its errno unchanged.
    unsafe { *slot = errno };
}

/// Let the signal take its course: the program's handler, or the default.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = usize::try_from(sig).ok().and_then(|s| PREV.get(s)) else {
        return;
    };
    let flags = prev.flags.load(Ordering::Acquire) as libc::c_int;
    // A one-shot handler: the kernel would have reset the disposition to
    // the default as it delivered the signal; the next one takes the
    // default action (another thread's delivery may have taken it first).
    let handler = if flags & libc::SA_RESETHAND != 0 {
        prev.handler.swap(libc::SIG_DFL, Ordering::AcqRel)
    } else {
        prev.handler.load(Ordering::Acquire)
    };
    if handler == libc::SIG_IGN {
        return;
    }
    if handler == libc::SIG_DFL {
        default_action(sig);
        return;
    }
    if flags & libc::SA_RESETHAND != 0 {
        in_front_of_the_default(sig);
    }
    program_mask(sig, flags, prev, ctx);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this address as an SA_SIGINFO
        // handler; it is called with the arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this address as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Give this thread the signal mask the kernel would have given the
/// program's handler: the interrupted code's mask, plus the handler's
/// `sa_mask`, plus the signal itself unless `SA_NODEFER`. Ours runs with
/// every signal blocked, which a handler that never returns (`siglongjmp`
/// out of it) would otherwise leave in place. `sigreturn` restores the
/// interrupted mask when the handlers return.
fn program_mask(sig: libc::c_int, flags: libc::c_int, prev: &Prev, ctx: *mut libc::c_void) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: the kernel passes an SA_SIGINFO handler a valid ucontext_t,
    // whose `uc_sigmask` is the mask of the interrupted code.
    let mut set = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_sigmask };
    prev.add_mask_to(&mut set);
    if flags & libc::SA_NODEFER == 0 {
        // SAFETY: `set` is a valid sigset_t; `sig` was delivered.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set_mask(&set);
}

/// The one-shot handler is spent: ours stands in front of the default from
/// now on, so it takes [`IN_FRONT_OF_THE_DEFAULT`]'s flags (without
/// `SA_RESTART`, a signal whose default is to ignore it would make a
/// blocking `read` fail with `EINTR`, which the kernel's default never
/// does). Left alone if the program has put a handler of its own in ours'
/// place.
fn in_front_of_the_default(sig: libc::c_int) {
    let Ok(now) = query(sig) else {
        return;
    };
    if now.sa_sigaction != on_signal as *const () as usize
        || now.sa_flags & IN_FRONT_OF_THE_DEFAULT == IN_FRONT_OF_THE_DEFAULT
    {
        return;
    }
    let act = ours(IN_FRONT_OF_THE_DEFAULT);
    // SAFETY: as in `install`.
    unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
}

/// Restore the default action, unblock the signal in this thread and raise
/// it: a fatal signal ends the process here (with a core file for SIGQUIT).
/// If the process lives on (a signal whose default is to ignore it), the
/// purge handler is put back as `install` put it in front of the default:
/// with `SA_RESTART`.
fn default_action(sig: libc::c_int) {
    // SAFETY: plain old data; all-zero (with SIG_DFL = 0) is valid.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    // SAFETY: `dfl` is a valid action; sigaction is async-signal-safe.
    if unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) } != 0 {
        return;
    }
    // SAFETY: plain old data; all-zero is valid.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above; `sig` is a valid signal (it was delivered).
    unsafe { libc::sigaddset(&mut set, sig) };
    // SAFETY: changes this thread's mask only; sigreturn restores the mask
    // the interrupted code had.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: raise is async-signal-safe (tgkill to this thread).
    unsafe { libc::raise(sig) };
    let act = ours(IN_FRONT_OF_THE_DEFAULT);
    // SAFETY: as in `install`.
    unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
}

/// Run the signal path's wipe outside a handler (the panic hook), every
/// signal blocked meanwhile, as in the handler. Returns the mappings wiped.
pub(crate) fn wipe_all_blocked() -> usize {
    let (_, old) = block_all();
    let n = super::registry::wipe_all();
    set_mask(&old);
    n
}

/// Block every signal in this thread: the full set, and the mask before.
/// Async-signal-safe.
fn block_all() -> (libc::sigset_t, libc::sigset_t) {
    // SAFETY: plain old data; all-zero is valid.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: plain old data; all-zero is valid.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: changes this thread's mask only; `before` receives the old one.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before) };
    (all, before)
}

/// Make `set` this thread's signal mask. Async-signal-safe.
fn set_mask(set: &libc::sigset_t) {
    // SAFETY: changes this thread's mask only; `set` is a valid sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
}
