//! What /proc says about a process or thread: CPU time and resident memory.

use std::time::Duration;

/// User plus system CPU time from a `/proc/.../stat` file (a process's or a thread's).
pub fn cpu_time(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the command name, which is parenthesized and may hold spaces.
    let Some(close) = text.rfind(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports these in USER_HZ, 100 per second on every platform Rust targets.
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// Resident memory of a process (a pid, or `self`), in MiB.
pub fn rss_mib(process: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// A node process watched over a run: its CPU time and memory at the start.
pub struct Watched {
    pid: u32,
    cpu: Duration,
    rss: f64,
    started: std::time::Instant,
}

impl Watched {
    pub fn start(pid: u32) -> Watched {
        Watched {
            pid,
            cpu: cpu_time(&format!("/proc/{pid}/stat")),
            rss: rss_mib(&pid.to_string()),
            started: std::time::Instant::now(),
        }
    }

    /// Prints and records the node's memory while it holds `clients` sessions.
    pub fn holding(&self, clients: usize) {
        let rss = rss_mib(&self.pid.to_string());
        let per_client = (rss - self.rss) * 1024.0 / clients.max(1) as f64;
        crate::record("node_rss_mib_holding", rss);
        crate::record("node_kib_per_client", per_client);
        println!(
            "node process {}: RSS {:.1} → {rss:.1} MiB holding {clients} sessions ({per_client:.1} KiB per client)",
            self.pid, self.rss
        );
    }

    /// Prints and records the node's CPU time and memory over the whole run.
    pub fn finish(self) {
        let cpu = (cpu_time(&format!("/proc/{}/stat", self.pid)) - self.cpu).as_secs_f64();
        let load = cpu / self.started.elapsed().as_secs_f64();
        let rss = rss_mib(&self.pid.to_string());
        crate::record("node_cpu_fraction", load);
        crate::record("node_rss_mib_before", self.rss);
        crate::record("node_rss_mib_after", rss);
        println!(
            "node process {}: {cpu:.1} s CPU ({:.0}% of a core over the run), RSS {:.1} → {rss:.1} MiB",
            self.pid,
            100.0 * load,
            self.rss,
        );
    }
}
