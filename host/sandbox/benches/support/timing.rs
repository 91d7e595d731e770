//! Timing helpers shared by the sandbox's bench binaries (included with `#[path]`).

use std::time::{Duration, Instant};

/// Median of `rounds` batch means of `batch` iterations each (after one warm-up batch).
pub fn measure<F: FnMut()>(rounds: usize, batch: u32, mut f: F) -> Duration {
    for _ in 0..batch {
        f();
    }
    let mut means: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed() / batch
        })
        .collect();
    means.sort();
    means[rounds / 2]
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
