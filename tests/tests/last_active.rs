//! The last-active writer's pace, against the API emulator. The Go controller releases a
//! sandbox once `now − last-active > T + 1.25·R + 5 s` (T its idle-timeout annotation, R =
//! max(1 s, min(120 s, T/3))), so a busy sandbox with a short T must have its annotation
//! refreshed every R: here T = 6 s, R = 2 s, refreshed within R + the writer's tick. A Pod
//! without the annotation keeps `--last-active-interval`.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandgate_tests::emulator::Kind;
use sandgate_tests::fixtures::{LAST_ACTIVE, pod};
use sandgate_tests::process::Outcome;
use sandgate_tests::stack::{ACME_KEY, KubeStack, PROPAGATION};

const IDLE_TIMEOUT: &str = "agentbox.navix.sh/idle-timeout";
/// `--last-active-interval`: R of the Pod without an idle timeout.
const INTERVAL: Duration = Duration::from_secs(8);
/// The writer's longest wait between passes: min(interval, 5 s).
const TICK: Duration = Duration::from_secs(5);
/// T = 6 s, so R = T/3.
const T: u64 = 6;
const R: Duration = Duration::from_secs(T / 3);
/// How long both sandboxes are kept busy.
const BUSY: Duration = Duration::from_secs(20);

fn annotation(stack: &KubeStack, name: &str) -> Option<Timestamp> {
    let p = stack.emu.get(Kind::Pod, "acme", name)?;
    p["metadata"]["annotations"][LAST_ACTIVE]
        .as_str()?
        .parse()
        .ok()
}

/// The distinct annotation values seen, in order, and the oldest the annotation got (now −
/// value) once first written.
#[derive(Default, Debug)]
struct Seen {
    values: Vec<Timestamp>,
    oldest: Duration,
}

impl Seen {
    fn observe(&mut self, value: Option<Timestamp>) {
        let Some(value) = value else { return };
        if self.values.last() != Some(&value) {
            self.values.push(value);
        }
        let age = Duration::try_from(value.duration_until(Timestamp::now())).unwrap_or_default();
        self.oldest = self.oldest.max(age);
    }

    fn gaps(&self) -> Vec<Duration> {
        self.values
            .windows(2)
            .map(|w| Duration::try_from(w[0].duration_until(w[1])).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_short_idle_timeout_paces_the_annotation_and_no_timeout_keeps_the_interval() {
    let interval = format!("--last-active-interval={}s", INTERVAL.as_secs());
    let stack = KubeStack::start(&[&interval]).await;
    let t = T.to_string();
    stack.emu.apply(
        pod("acme", "short")
            .sandbox("sb-short")
            .phase("running")
            .ip("127.0.0.41")
            .annotation(IDLE_TIMEOUT, &t)
            .json(),
    );
    stack.emu.apply(
        pod("acme", "plain")
            .sandbox("sb-plain")
            .phase("running")
            .ip("127.0.0.42")
            .json(),
    );
    for (id, ip) in [("sb-short", "127.0.0.41"), ("sb-plain", "127.0.0.42")] {
        let want = Outcome::Route(format!("{ip}:8080"));
        let got = stack
            .resolver
            .resolve_until(ACME_KEY, id, 8080, &want, PROPAGATION)
            .await;
        assert_eq!(got, want, "{id}");
    }

    // Both busy: a request each every 100 ms.
    let (mut short, mut plain) = (Seen::default(), Seen::default());
    let started = Instant::now();
    while started.elapsed() < BUSY {
        for id in ["sb-short", "sb-plain"] {
            let got = stack.resolver.resolve(ACME_KEY, id, 8080).await;
            assert!(matches!(got, Outcome::Route(_)), "{id}: {got:?}");
        }
        short.observe(annotation(&stack, "short"));
        plain.observe(annotation(&stack, "plain"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The short one: never older than R + the tick (the values have second precision, and
    // T + 1.25·R + 5 s, the Go controller's limit, is far above), refreshed all along.
    let bound = R + TICK;
    assert!(short.oldest <= bound, "{short:?}");
    let gaps = short.gaps();
    assert!(gaps.iter().all(|&g| g <= bound), "{short:?}");
    assert!(
        short.values.len() as u64 >= BUSY.as_secs() / bound.as_secs() + 2,
        "too few refreshes: {short:?}"
    );

    // The plain one: at the interval, not faster (values are cut to the second).
    let gaps = plain.gaps();
    assert!(!gaps.is_empty(), "{plain:?}");
    assert!(
        gaps.iter()
            .all(|&g| g >= INTERVAL - Duration::from_secs(1) && g <= INTERVAL + TICK),
        "{plain:?}"
    );
    assert!(plain.oldest <= INTERVAL + TICK, "{plain:?}");
    assert!(
        short.values.len() > 2 * plain.values.len(),
        "{short:?} {plain:?}"
    );
}
