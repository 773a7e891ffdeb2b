use std::time::Duration;
use strait_tests::sim::*;
const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
fn main() {
    let which = std::env::args().nth(1).unwrap_or("fall".into());
    let seed: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let from: f64 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(8.0);
    let to: f64 = std::env::args()
        .nth(4)
        .map(|s| s.parse().unwrap())
        .unwrap_or(16.0);
    let (rate, dur) = match which.as_str() {
        "fall" => (RateTrace::step(4_000_000, 10 * S, 800_000), 30 * S),
        "hover" => (
            RateTrace::constant((150_000 + 500_000 + 40_000) * 11 / 10).with_noise(
                0.10,
                S,
                70 * S,
                seed,
            ),
            70 * S,
        ),
        "nobr" => (RateTrace::constant(600_000), 30 * S),
        "loss" => (RateTrace::constant(4_000_000), 30 * S),
        "rise" => (RateTrace::step(800_000, 10 * S, 4_000_000), 25 * S),
        _ => panic!(),
    };
    let mut link = QuicPairConfig::new(1_000_000, 40 * MS);
    link.forward = LinkConfig::with_rate(rate).delay(20 * MS);
    if which == "loss" {
        link.forward = link.forward.clone().loss(0.03);
    }
    let mut config = RoomConfig::new(link);
    if std::env::var_os("WEBRTC").is_some() {
        config.leg = LegKind::WebRtc;
    }
    if which == "nobr" {
        config.publishers[0].declared = false;
    }
    let mut r = SimRoom::new(seed, &config).unwrap();
    let start = r.start();
    eprintln!("START {:?}", start);
    if std::env::var_os("STEPS").is_some() {
        let mut t = start;
        while t < start + dur {
            t += 50 * MS;
            r.run_until(t);
            let at = (t - start).as_secs_f64();
            if at >= from && at <= to {
                let now = r.now();
                let s = r.quic().unwrap().server_sample();
                let q = r.quic().unwrap().forward().queued_bytes(now);
                let slot = r.timeline(0).last().copied();
                println!(
                    "{at:6.2} buffered {:>6} linkq {:>6} cwnd {:>6} srtt {:>4?} lost {:>5} {:?}",
                    s.buffered_bytes,
                    q,
                    s.cwnd,
                    s.srtt,
                    s.lost_packets,
                    slot.map(|s| (s.current, s.target))
                );
            }
        }
    }
    r.run_until(start + dur);
    for (at, e) in r.estimates() {
        let t = at.as_secs_f64();
        if t >= from && t <= to {
            let slot = r.timeline(0).iter().rev().find(|s| s.at <= *at).copied();
            println!(
                "{t:7.2} avail {:>8} acked {:>8} proven {:>8} {:?} q {:>4}ms  {:?}",
                e.available_bps,
                e.acked_bps,
                e.proven_bps,
                e.state,
                e.queue_delay.as_millis(),
                slot.map(|s| (s.current, s.target, s.paused))
            );
        }
    }
    let bins = r.forward_rate_bins(
        Duration::from_secs_f64(from),
        Duration::from_secs_f64(to),
        250 * MS,
    );
    for b in bins {
        println!("bin {:?} {:?}", b.start, b);
    }
    println!("{:?}", r.video_report(0));
    println!("{:?}", r.sfu().stats());
}
