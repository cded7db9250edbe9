//! Shared by the examples: stdout lines that end the program quietly when the reader goes away
//! (`| head`), and error reports with their causes.

#![allow(dead_code)]

use std::io::Write;

/// `println!` that exits with status 0 on a closed pipe instead of panicking.
macro_rules! out {
    () => { $crate::common::line(format_args!("")) };
    ($($t:tt)*) => { $crate::common::line(format_args!($($t)*)) };
}

pub fn line(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints `e` and its chain of causes to stderr and exits with status 1.
pub fn fail(e: &dyn std::error::Error) -> ! {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    std::process::exit(1);
}

/// A progress bar on stderr where the `progress` feature is on (the default), else none.
pub fn progress(message: &str) -> Option<attrex::Progress> {
    #[cfg(feature = "progress")]
    return Some(attrex::Progress::bar(message));
    #[cfg(not(feature = "progress"))]
    {
        let _ = message;
        None
    }
}

/// The feature cache the examples use: `$ATTREX_CACHE` when set (read here, not by the library),
/// else [`attrex::FeatureCache::default_location`].
pub fn feature_cache() -> attrex::FeatureCache {
    match std::env::var_os("ATTREX_CACHE") {
        Some(dir) => attrex::FeatureCache::new(dir),
        None => attrex::FeatureCache::default_location(),
    }
}
