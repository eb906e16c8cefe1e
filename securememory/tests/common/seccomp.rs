//! A seccomp filter that makes chosen system calls fail with a chosen
//! `errno`, as a container runtime's profile does (classic BPF through
//! `libc`). Installed for every thread of the calling process, after
//! `PR_SET_NO_NEW_PRIVS`; use it only in a child process.

use std::io;

/// `AUDIT_ARCH_*` of the architecture the tests are built for: a filter
/// that sees another one (a 32-bit system call, say) kills the process
/// rather than read its numbers as ours.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_long = 1;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Make each system call `nr` of `denied` fail with its `errno` in every
/// thread of this process from now on; everything else is allowed.
pub fn deny(denied: &[(libc::c_long, i32)]) -> io::Result<()> {
    let mut prog = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, ARCH_OFFSET),
        jump_eq(AUDIT_ARCH, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_KILL_PROCESS),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR_OFFSET),
    ];
    for &(nr, errno) in denied {
        prog.push(jump_eq(nr as u32, 0, 1));
        prog.push(stmt(
            libc::BPF_RET | libc::BPF_K,
            SECCOMP_RET_ERRNO | (errno as u32 & 0xffff),
        ));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `prog`, both alive for the call, which only
    // reads them; TSYNC applies the filter to every thread of the process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
