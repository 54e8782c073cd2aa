//! flagtally's entry point: parse the command line, run the command ([`flagtally::app`]),
//! map the outcome to an exit code.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use flagtally::cli::Cli;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    // OpenSSL first, without its `atexit` cleanup: librdkafka's threads (a detached
    // topic check, a client being torn down) may still be inside a TLS call when the
    // process exits, and OpenSSL's cleanup then waits on a lock they hold, forever
    // (openssl/openssl#10453). Initialised this way before anything else uses OpenSSL,
    // librdkafka's own initialisation registers no cleanup either.
    openssl_sys::init();
    let cli = Cli::parse();
    match flagtally::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flagtally: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. mimalloc asks for huge pages on its arenas and returns freed memory to the
/// system in 64 KiB pieces; with huge pages, each later fault there zeroes 2 MiB again.
/// In a full-output drain that was half of flagtally's system time and 7–15 % of its
/// CPU (docs/benchmarks.md), and the pipeline's hot data is far smaller than its churn.
/// The kernel checks the flag at every fault, so memory mapped before `main` is covered
/// too.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of
    // ours; on failure (an old kernel) nothing changes.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc: the hot path allocates small strings per event; it is measurably faster
/// than the system allocator there. Its `override` feature (Cargo.toml) makes it the
/// C libraries' `malloc` too: librdkafka allocates every produced record and header on
/// the sending thread and frees them where the delivery report is served (for the
/// collector and the sinks, a polling thread), where glibc's arenas contended (23 % of
/// the CPU of a full-output drain, before the pipeline served its own reports;
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
