//! What Linux tells about a process and a directory: resident memory, CPU time (per
//! thread too), bytes written, disk use. Read from `/proc`, no libc.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times, from `getconf CLK_TCK`.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// `VmRSS` of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime from the text of a `stat` file. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of this process's threads, split into the sink (actix's threads) and
/// everything else (the load generator's runtime, the sampler).
pub fn own_cpu_split() -> CpuSplit {
    let mut split = CpuSplit::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return split;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ticks = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| stat_ticks(&stat))
            .unwrap_or(0);
        if comm.starts_with("actix") {
            split.sink_ticks += ticks;
        } else {
            split.load_ticks += ticks;
        }
    }
    split
}

/// CPU ticks of the bench's own threads. Threads that ended are not counted, so the
/// bench keeps its threads alive across a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSplit {
    pub sink_ticks: u64,
    pub load_ticks: u64,
}

/// Machine-wide CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Every state but idle and iowait.
    pub busy_ticks: u64,
    pub iowait_ticks: u64,
    pub total_ticks: u64,
}

pub fn machine_cpu() -> MachineCpu {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|line| line.starts_with("cpu ")) else {
        return MachineCpu::default();
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 8 {
        return MachineCpu::default();
    }
    let total: u64 = values.iter().sum();
    MachineCpu {
        busy_ticks: total - values[3] - values[4],
        iowait_ticks: values[4],
        total_ticks: total,
    }
}

/// Storage I/O counters of `/proc/<pid>/io`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct IoCounters {
    /// Bytes the process caused to be sent to the storage layer.
    pub write_bytes: u64,
    /// Bytes passed to write-like system calls.
    pub wchar: u64,
    /// Write-like system calls.
    pub syscw: u64,
}

pub fn io_counters(pid: u32) -> Option<IoCounters> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim_start_matches(':').trim().parse().ok())
    };
    Some(IoCounters {
        write_bytes: field("write_bytes")?,
        wchar: field("wchar")?,
        syscw: field("syscw")?,
    })
}

impl IoCounters {
    pub fn since(self, before: IoCounters) -> IoCounters {
        IoCounters {
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
            wchar: self.wchar.saturating_sub(before.wchar),
            syscw: self.syscw.saturating_sub(before.syscw),
        }
    }
}

/// Disk use of a directory tree.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DiskUsage {
    /// Blocks allocated, as `du` counts them.
    pub allocated_bytes: u64,
    /// Sum of file lengths.
    pub apparent_bytes: u64,
    pub files: u64,
}

pub fn disk_usage(dir: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt as _;
    let mut usage = DiskUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    // Bounded: a data directory holds a handful of files; stop at 100,000 entries.
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return usage;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                usage.files += 1;
                usage.apparent_bytes += meta.len();
                usage.allocated_bytes += meta.blocks() * 512;
            }
        }
    }
    usage
}

/// One line about the machine: CPU model, cores, memory.
pub fn machine_summary() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_bytes = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        mem_total_bytes,
        loadavg_at_start: loadavg(),
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub mem_total_bytes: u64,
    pub loadavg_at_start: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces() {
        let stat = "123 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 40 2 0 0 20 0";
        assert_eq!(stat_ticks(stat), Some(42));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }
}
