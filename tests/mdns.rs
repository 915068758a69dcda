//! mDNS discovery between two real `guildhall` processes, with no `--peer` and no invite.
//!
//! mDNS multicasts on every non-loopback interface, so the nodes must not run on the machine's
//! real network: the test builds its own with Linux network namespaces (it needs root, or
//! CAP_SYS_ADMIN and CAP_NET_ADMIN, and iproute2's `ip`), so it is `#[ignore]`d: plain
//! `cargo test` leaves it out, and `./test.sh` runs it, where it fails, not skips, without them). Two namespaces, A and B, are joined by a veth pair, the only link the nodes federate
//! over (10.77.0.1 and 10.77.0.2). The test process reaches each node's HTTP listener over one
//! more veth pair per namespace into the root namespace (10.77.1.0/30 and 10.77.1.4/30). The
//! nodes' mDNS sees those links too, but a multicast sent there ends at the root namespace's
//! end of the pair: nothing is routed on, and no physical interface is involved.
//!
//! Discovery is shown through the product: `guildhall_peers` in `/metrics` becomes 1 on both
//! nodes, and each keeps the other's address in its `peers` file. A control pair without
//! `--mdns`, in the same namespaces, stays unconnected.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the mDNS pair may take to connect before the test fails.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest window the control pair is watched for a connection that must not come.
const CONTROL_WINDOW: Duration = Duration::from_secs(2);

/// The namespaces, links and processes of one run; all removed on drop, panics included.
struct Lab {
    a: String,
    b: String,
    /// The root namespace's ends of the HTTP links (gone with the namespaces anyway).
    root_links: Vec<String>,
    nodes: Vec<Child>,
}

/// Where one node runs: its namespace, federation address and HTTP address.
struct Side<'a> {
    ns: &'a str,
    p2p_ip: &'a str,
    http_ip: &'a str,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        let a = format!("gh-mdns-a-{pid}");
        let b = format!("gh-mdns-b-{pid}");
        let out = Command::new("ip")
            .args(["netns", "add", &a])
            .output()
            .unwrap_or_else(|e| {
                panic!("the mDNS test needs iproute2's `ip` (apt-get install iproute2): {e}")
            });
        assert!(
            out.status.success(),
            "the mDNS test needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network \
             namespaces; `ip netns add {a}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let mut lab = Lab {
            a,
            b,
            root_links: Vec::new(),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &lab.b]);
        let (a, b) = (lab.a.clone(), lab.b.clone());
        // Interface names are at most 15 bytes: "gh" + pid (at most 7 digits) + 2.
        let (fed_a, fed_b) = (format!("gh{pid}fa"), format!("gh{pid}fb"));
        ip(&[
            "link", "add", &fed_a, "netns", &a, "type", "veth", "peer", "name", &fed_b, "netns", &b,
        ]);
        lab.link(&a, &fed_a, "10.77.0.1/24");
        lab.link(&b, &fed_b, "10.77.0.2/24");
        for (ns, side, root_addr, ns_addr) in [
            (&a, 'a', "10.77.1.1/30", "10.77.1.2/30"),
            (&b, 'b', "10.77.1.5/30", "10.77.1.6/30"),
        ] {
            let (root_end, ns_end) = (format!("gh{pid}r{side}"), format!("gh{pid}h{side}"));
            ip(&[
                "link", "add", &root_end, "type", "veth", "peer", "name", &ns_end, "netns", ns,
            ]);
            lab.root_links.push(root_end.clone());
            ip(&["addr", "add", root_addr, "dev", &root_end]);
            ip(&["link", "set", "dev", &root_end, "up"]);
            lab.link(ns, &ns_end, ns_addr);
        }
        for ns in [&a, &b] {
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"]);
        }
        lab
    }

    /// Addresses and brings up one end inside a namespace.
    fn link(&self, ns: &str, dev: &str, addr: &str) {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", "dev", dev, "multicast", "on"]);
        ip(&["-n", ns, "link", "set", "dev", dev, "up"]);
    }

    /// Starts the real binary inside a namespace; returns its HTTP base URL and its peer id.
    fn start(&mut self, side: &Side, data: &Path, args: &[&str]) -> (String, String) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", side.ns])
            .arg(env!("CARGO_BIN_EXE_guildhall"))
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("{}:0", side.http_ip)])
            .args(["--p2p-listen", &format!("/ip4/{}/tcp/0", side.p2p_ip)])
            .arg("--no-voice")
            .args(args)
            .env_remove("GUILDHALL_MDNS")
            .env_remove("GUILDHALL_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("`ip netns exec` starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        self.nodes.push(child);
        let mut next_line = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?} (in {})", side.ns))
                .to_owned()
        };
        let base = next_line("guildhall listening on ");
        let p2p = next_line("guildhall federating on ");
        assert!(
            p2p.starts_with(&format!("/ip4/{}/tcp/", side.p2p_ip)),
            "{p2p}"
        );
        let peer = p2p.rsplit_once("/p2p/").expect("a /p2p/ address").1;
        (base, peer.to_owned())
    }

    fn stop_nodes(&mut self) {
        for mut node in self.nodes.drain(..) {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_nodes();
        for ns in [&self.a, &self.b] {
            ip_quiet(&["netns", "del", ns]);
        }
        for link in &self.root_links {
            ip_quiet(&["link", "del", link]);
        }
    }
}

/// The node's `guildhall_peers` gauge: federation peers connected now.
async fn peers(http: &reqwest::Client, base: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"))
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("guildhall_peers "))
        .unwrap_or_else(|| panic!("no guildhall_peers in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

fn kept_peers(data: &Path) -> String {
    std::fs::read_to_string(data.join("peers")).unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs root and iproute2 to build network namespaces: ./test.sh runs it"]
async fn mdns_finds_a_node_on_the_lan_and_stays_off_by_default() {
    let mut lab = Lab::new();
    let (ns_a, ns_b) = (lab.a.clone(), lab.b.clone());
    let side_a = Side {
        ns: &ns_a,
        p2p_ip: "10.77.0.1",
        http_ip: "10.77.1.2",
    };
    let side_b = Side {
        ns: &ns_b,
        p2p_ip: "10.77.0.2",
        http_ip: "10.77.1.6",
    };
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // With mDNS on and nothing else, the two nodes find each other.
    let (data_a, data_b) = (dir.path().join("mdns-a"), dir.path().join("mdns-b"));
    let started = Instant::now();
    // One turned on by the flag, the other by its config file.
    let config_b = dir.path().join("b.toml");
    std::fs::write(&config_b, "mdns = true\n").unwrap();
    let (base_a, peer_a) = lab.start(&side_a, &data_a, &["--mdns"]);
    let (base_b, peer_b) = lab.start(&side_b, &data_b, &["--config", config_b.to_str().unwrap()]);
    loop {
        let (a, b) = (peers(&http, &base_a).await, peers(&http, &base_b).await);
        if a == 1 && b == 1 {
            break;
        }
        assert!(
            started.elapsed() < DISCOVERY_TIMEOUT,
            "with mDNS on the nodes did not connect within {DISCOVERY_TIMEOUT:?} \
             (peers: A {a}, B {b})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let discovery = started.elapsed();
    eprintln!("mDNS: both nodes started and connected in {discovery:?}");
    // Each keeps the other like any peer met, so a restart redials it.
    while !(kept_peers(&data_a).contains("/ip4/10.77.0.2/tcp/")
        && kept_peers(&data_a).contains(&format!("/p2p/{peer_b}"))
        && kept_peers(&data_b).contains(&format!("/p2p/{peer_a}")))
    {
        assert!(
            started.elapsed() < DISCOVERY_TIMEOUT,
            "peers files: A {:?}, B {:?}",
            kept_peers(&data_a),
            kept_peers(&data_b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.stop_nodes();

    // The control: the same namespaces and addresses without --mdns. Proving that something
    // does not happen needs a fixed wait; it is at least twice as long as the mDNS pair took
    // to start and connect, so a connection that mDNS would bring about has had time to come.
    let window = CONTROL_WINDOW.max(discovery * 2);
    let (data_a, data_b) = (dir.path().join("plain-a"), dir.path().join("plain-b"));
    let started = Instant::now();
    let (base_a, _) = lab.start(&side_a, &data_a, &[]);
    let (base_b, _) = lab.start(&side_b, &data_b, &[]);
    while started.elapsed() < window {
        let (a, b) = (peers(&http, &base_a).await, peers(&http, &base_b).await);
        assert_eq!((a, b), (0, 0), "without --mdns the nodes connected anyway");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kept_peers(&data_a).is_empty() && kept_peers(&data_b).is_empty());
}
