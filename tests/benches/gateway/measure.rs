//! Measurement: CPU time per thread role from `/proc`, latency statistics, and one
//! direct-versus-gateway comparison (a [`Row`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::client::{Peer, Upstream};
use crate::counting::{Counters, Snapshot};
use crate::echo_fast::echo_fast_received;
use crate::settings::{CLIENT_THREADS, Era, GATEWAY_THREADS, Settings};

/// CPU time in ns so far of the threads of process `pid` (named `name`, when given), from
/// `/proc/{pid}/task/*/schedstat`. Threads that have exited no longer count: the gateway's
/// runtime keeps its blocking threads for the whole run. 0 where /proc cannot tell.
pub(crate) fn cpu_ns(pid: &str, name: Option<&str>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            name.is_none_or(|n| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == n)
            })
        })
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time so far of the gateway's threads, the client's, and the upstream's, in ns.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cpu(pub(crate) [u64; 3]);

impl Cpu {
    pub(crate) fn now(upstream: &Upstream) -> Cpu {
        let upstream = upstream
            .cpu
            .as_ref()
            .map_or(0, |(pid, name)| cpu_ns(pid, *name));
        Cpu([
            cpu_ns("self", Some(GATEWAY_THREADS)),
            cpu_ns("self", Some(CLIENT_THREADS)),
            upstream,
        ])
    }
    pub(crate) fn since(&self, before: &Cpu) -> Cpu {
        Cpu(std::array::from_fn(|i| {
            self.0[i].saturating_sub(before.0[i])
        }))
    }
    pub(crate) fn add(&mut self, other: &Cpu) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
    /// Microseconds per call: gateway, client, upstream.
    pub(crate) fn per_call_us(&self, calls: usize) -> [f64; 3] {
        self.0.map(|ns| ns as f64 / 1e3 / calls.max(1) as f64)
    }
    pub(crate) fn json(&self, calls: usize) -> Value {
        let [gateway, client, upstream] = self.per_call_us(calls);
        json!({"gateway_us_per_call": gateway, "client_us_per_call": client,
               "upstream_us_per_call": upstream})
    }
}

/// The latencies and the wall time of `calls` calls, `concurrency` in flight.
pub(crate) async fn phase(
    client: &reqwest::Client,
    peer: &Peer,
    calls: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    if concurrency == 1 {
        let mut lat = Vec::with_capacity(calls);
        for _ in 0..calls {
            lat.push(peer.call(client).await?);
        }
        return Ok((lat, started.elapsed()));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.min(calls))
        .map(|_| {
            let (client, peer, next) = (client.clone(), peer.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    lat.push(peer.call(&client).await?);
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(calls);
    for w in workers {
        lat.extend(w.await??);
    }
    Ok((lat, started.elapsed()))
}

/// Latency percentiles (nearest rank) and throughput of one path.
#[derive(Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) calls: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) mean_ms: f64,
    pub(crate) rps: f64,
}

pub(crate) fn stats(lat: &mut [Duration], wall: Duration) -> Stats {
    lat.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| {
        let rank = (p * lat.len() as f64).ceil() as usize;
        ms(lat[rank.clamp(1, lat.len()) - 1])
    };
    Stats {
        calls: lat.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        mean_ms: lat.iter().map(|&d| ms(d)).sum::<f64>() / lat.len() as f64,
        rps: lat.len() as f64 / wall.as_secs_f64(),
    }
}

impl Stats {
    pub(crate) fn json(&self) -> Value {
        json!({"calls": self.calls, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
               "mean_ms": self.mean_ms, "throughput_rps": self.rps})
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

/// One comparison: an upstream, a client era, a concurrency.
pub(crate) struct Row {
    pub(crate) upstream: &'static str,
    pub(crate) era: Era,
    pub(crate) concurrency: usize,
    /// Over all rounds.
    pub(crate) direct: Stats,
    pub(crate) gateway: Stats,
    /// (direct, gateway) of each round.
    pub(crate) rounds: Vec<(Stats, Stats)>,
    /// CPU time of all measured calls: direct, through the gateway.
    pub(crate) cpu: [Cpu; 2],
    /// Messages echo-fast received per call, by method: direct, through the gateway (empty
    /// for other upstreams).
    pub(crate) received: [BTreeMap<String, f64>; 2],
    /// Store and secrets traffic of the measured gateway over all its measured calls.
    pub(crate) accounting: Snapshot,
}

impl Row {
    pub(crate) fn added_p50(&self) -> f64 {
        self.gateway.p50_ms - self.direct.p50_ms
    }
    pub(crate) fn added_p99(&self) -> f64 {
        self.gateway.p99_ms - self.direct.p99_ms
    }
    /// Gateway throughput / direct throughput, over all rounds.
    pub(crate) fn ratio(&self) -> f64 {
        self.gateway.rps / self.direct.rps
    }
    pub(crate) fn round_ratios(&self) -> Vec<f64> {
        self.rounds.iter().map(|(d, g)| g.rps / d.rps).collect()
    }
    pub(crate) fn round_added_p50(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|(d, g)| g.p50_ms - d.p50_ms)
            .collect()
    }
    pub(crate) fn json(&self) -> Value {
        json!({
            "upstream": self.upstream, "era": self.era.label(), "concurrency": self.concurrency,
            "direct": self.direct.json(), "gateway": self.gateway.json(),
            "added_p50_ms": self.added_p50(), "added_p99_ms": self.added_p99(),
            "throughput_ratio": self.ratio(),
            "per_round": {
                "throughput_ratio": self.round_ratios(),
                "throughput_ratio_median": median(self.round_ratios()),
                "added_p50_ms": self.round_added_p50(),
                "added_p50_ms_median": median(self.round_added_p50()),
                "direct": self.rounds.iter().map(|(d, _)| d.json()).collect::<Vec<_>>(),
                "gateway": self.rounds.iter().map(|(_, g)| g.json()).collect::<Vec<_>>(),
            },
            "cpu_direct": self.cpu[0].json(self.direct.calls),
            "cpu_gateway": self.cpu[1].json(self.gateway.calls),
            "upstream_messages_per_call": {"direct": self.received[0], "gateway": self.received[1]},
            "gateway_accounting": self.accounting.json(self.gateway.calls),
        })
    }
}

/// Warm-up, then `rounds` rounds of `calls` calls on each path, alternating which goes first.
pub(crate) async fn compare(
    client: &reqwest::Client,
    s: &Settings,
    upstream: &Upstream,
    (direct, gateway): (&Peer, &Peer),
    counters: &Counters,
    concurrency: usize,
) -> Result<Row> {
    let warmup = s.warmup.max(2 * concurrency);
    phase(client, direct, warmup, concurrency).await?;
    phase(client, gateway, warmup, concurrency).await?;
    // All latencies and the summed wall time of each path: [direct, gateway].
    let mut all: [(Vec<Duration>, Duration); 2] = Default::default();
    let mut rounds = Vec::new();
    let mut cpu = [Cpu::default(); 2];
    let mut received: [BTreeMap<String, u64>; 2] = Default::default();
    let echo_fast = upstream.name == "echo-fast";
    let before = counters.snapshot();
    for round in 0..s.rounds {
        let gateway_first = round % 2 == 1;
        let mut this: [Option<Stats>; 2] = [None, None];
        for step in 0..2 {
            let through_gateway = (step == 0) == gateway_first;
            let peer = if through_gateway { gateway } else { direct };
            let cpu_before = Cpu::now(upstream);
            let received_before = echo_fast_received();
            let (mut lat, wall) = phase(client, peer, s.calls, concurrency).await?;
            // Late upstream traffic (a cancellation sent after the answer) counts for this path.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let path = usize::from(through_gateway);
            cpu[path].add(&Cpu::now(upstream).since(&cpu_before));
            if echo_fast {
                for (m, n) in echo_fast_received() {
                    let new = n - received_before.get(&m).copied().unwrap_or(0);
                    *received[path].entry(m).or_default() += new;
                }
            }
            this[path] = Some(stats(&mut lat, wall));
            let (lats, total) = &mut all[path];
            lats.extend(lat);
            *total += wall;
        }
        rounds.push((this[0].expect("ran"), this[1].expect("ran")));
    }
    let accounting = counters.snapshot().since(&before);
    let [(mut d_lat, d_wall), (mut g_lat, g_wall)] = all;
    Ok(Row {
        upstream: upstream.name,
        era: direct.era,
        concurrency,
        direct: stats(&mut d_lat, d_wall),
        gateway: stats(&mut g_lat, g_wall),
        rounds,
        cpu,
        received: received.map(|r| {
            r.into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(m, n)| (m, n as f64 / (s.rounds * s.calls) as f64))
                .collect()
        }),
        accounting,
    })
}

/// Opens `peer` and makes one call, counting the gateway's traffic. On the first use of an
/// endpoint nothing is cached yet; a later era finds the server's config cached.
pub(crate) async fn open_counted(
    client: &reqwest::Client,
    peer: &mut Peer,
    counters: &Counters,
    upstream: &str,
    first_use: bool,
) -> Result<Value> {
    let before = counters.snapshot();
    let requests = peer.open(client).await? + 1;
    peer.call(client).await?;
    let mut v = counters.snapshot().since(&before).json(requests);
    v["upstream"] = json!(upstream);
    v["era"] = json!(peer.era.label());
    v["path"] = json!(peer.path);
    v["endpoint_first_use"] = json!(first_use);
    v["requests"] = json!(match peer.era {
        Era::Session => "initialize, initialized, tools/list, tools/call",
        Era::Modern => "server/discover, tools/list, tools/call",
    });
    Ok(v)
}

/// Sequential calls with the store reads of every single one (a snapshot between two calls
/// is exact when they are one at a time), for the accounting of the DynamoDB gateway.
pub(crate) async fn counted_calls(
    client: &reqwest::Client,
    peer: &Peer,
    counters: &Counters,
    calls: usize,
) -> Result<Value> {
    let first = counters.snapshot();
    let mut lat = Vec::with_capacity(calls);
    let mut max_reads = 0;
    let started = Instant::now();
    for _ in 0..calls {
        let before = counters.snapshot();
        lat.push(peer.call(client).await?);
        max_reads = max_reads.max(counters.snapshot().since(&before).request_path_reads());
    }
    let st = stats(&mut lat, started.elapsed());
    let mut v = counters.snapshot().since(&first).json(calls);
    v["max_request_path_store_reads_in_one_call"] = json!(max_reads);
    v["latency"] = st.json();
    Ok(v)
}
