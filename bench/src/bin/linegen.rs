//! The line source every server runs as its build step:
//!
//!     linegen --count C [--rate R] [--go PATH] [--size BYTES]
//!
//! Waits until the file `--go` exists (the load generator creates it once every
//! client is subscribed), then prints C lines to stdout, R per second (0 or absent:
//! as fast as the pipe takes them), one write per line. Each line carries the
//! wall-clock time at which it was written and its number, padded to `--size` bytes:
//!
//!     t=1732184130123456789 n=0 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
//!
//! Stops early if its parent goes away while it waits (a server that was stopped).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use buildcast_bench::sys::now_ns;

struct Args {
    count: u64,
    rate: u64,
    go: Option<PathBuf>,
    size: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        count: 100,
        rate: 0,
        go: None,
        size: 80,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => a.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--rate" => a.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--go" => a.go = Some(PathBuf::from(value()?)),
            "--size" => a.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "linegen: {e}\nusage: linegen --count C [--rate R] [--go PATH] [--size BYTES]"
            );
            std::process::exit(2);
        }
    };
    if let Some(go) = &args.go {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        while !go.exists() {
            if unsafe { libc::getppid() } != parent {
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = Vec::with_capacity(args.size + 32);
    let start = Instant::now();
    for n in 0..args.count {
        if let Some(at) = (n * 1_000_000_000).checked_div(args.rate) {
            let due = start + Duration::from_nanos(at);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        line.clear();
        write!(line, "t={} n={n} ", now_ns()).expect("to a Vec");
        if line.len() < args.size {
            line.resize(args.size, b'x');
        }
        line.push(b'\n');
        // Stdout is line-buffered: this is one write(2), made right after stamping.
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }
}
