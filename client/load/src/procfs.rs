//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use super::Result;

/// (utime, stime) of a process in clock ticks; `pid` may be `"self"`.
pub fn cpu_split(pid: &str) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok((utime, stime))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: &str) -> Result<u64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when it cannot be read.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The machine's load average over the last minute, from `/proc/loadavg` (0 when it cannot be
/// read): how busy the cores were that the figures share.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The machine's count of UDP datagrams dropped for a full socket receive buffer
/// (`RcvbufErrors` of `/proc/net/snmp`, every socket of the network namespace); `None` when it
/// cannot be read.
pub fn udp_receive_buffer_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Clock ticks per second, from `getconf CLK_TCK` (100 when that fails).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A CPU reading of one process, to subtract from a later one.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    user: u64,
    system: u64,
    at: std::time::Instant,
}

/// CPU used between two marks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Share of `cpu_s` spent in the kernel, percent.
    pub system_pct: f64,
    /// Wall-clock seconds between the marks.
    pub wall_s: f64,
}

impl CpuMark {
    /// Reads the CPU time of `pid` now. `Instant::now()` is read here: this module measures.
    pub fn read(pid: &str) -> Result<CpuMark> {
        let (user, system) = cpu_split(pid)?;
        Ok(CpuMark {
            user,
            system,
            at: std::time::Instant::now(),
        })
    }

    /// What was used since `self`, `ticks` being clock ticks per second.
    pub fn until(&self, later: &CpuMark, ticks: f64) -> CpuUse {
        let user = later.user.saturating_sub(self.user);
        let system = later.system.saturating_sub(self.system);
        let total = user + system;
        CpuUse {
            cpu_s: total as f64 / ticks,
            system_pct: if total == 0 {
                0.0
            } else {
                100.0 * system as f64 / total as f64
            },
            wall_s: later.at.duration_since(self.at).as_secs_f64(),
        }
    }
}

/// utime + stime, in clock ticks, of the threads of process `pid` whose name starts with
/// `prefix` (the gateway's media workers are `strait-media-<i>`); 0 when none is found.
pub fn threads_ticks(pid: &str, prefix: &str) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = entry?.file_name();
        let Some(tid) = tid.to_str() else {
            continue;
        };
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
            continue;
        };
        if name.trim_end().starts_with(prefix) {
            total += cpu_ticks(&format!("{pid}/task/{tid}")).unwrap_or(0);
        }
    }
    Ok(total)
}
