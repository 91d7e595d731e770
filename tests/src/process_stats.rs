//! What a process costs, read from `/proc` (for the benches): resident memory, its peak (which
//! can be reset, to find the peak of one phase), and CPU time.

use std::time::Duration;

use anyhow::{Context, Result};

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak since start, or since [`reset_peak`].
    pub peak_kib: u64,
}

impl Memory {
    /// `VmRSS` in MiB.
    #[allow(
        clippy::cast_precision_loss,
        reason = "KiB counts of a process fit f64 exactly"
    )]
    pub fn rss_mib(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// `VmHWM` in MiB.
    #[allow(
        clippy::cast_precision_loss,
        reason = "KiB counts of a process fit f64 exactly"
    )]
    pub fn peak_mib(self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// `VmRSS` and `VmHWM` of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Resets `VmHWM` of `pid` to its current `VmRSS` (`clear_refs` value 5), so that the next
/// [`memory`] reports the peak of what happened in between.
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// User plus system CPU time `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields of the line, the 12th and 13th after the name.
    let rest = text
        .rfind(')')
        .and_then(|i| text.get(i + 2..))
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("malformed /proc/PID/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_millis(total * 1000 / hz.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss_kib > 0 && m.peak_kib >= m.rss_kib);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        reset_peak(me).unwrap();
        assert!(memory(me).unwrap().peak_kib <= m.peak_kib + 1024);
    }
}
