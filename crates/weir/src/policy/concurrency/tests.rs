//! The limit on paused time against a simulated upstream whose latency rises with load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

fn config() -> AdaptiveConcurrencyConfig {
    AdaptiveConcurrencyConfig {
        initial_limit: 40,
        min_limit: 2,
        max_limit: 64,
        window: Duration::from_millis(500),
        min_samples: 5,
        tolerance: 2.0,
        baseline_interval: Duration::from_secs(10),
    }
}

#[derive(Clone)]
struct Judge;

impl Settle<Duration, Shed> for Judge {
    fn shed(&self, shed: Shed) -> Shed {
        shed
    }

    fn settle(&self, result: &Result<Duration, Shed>, mut permit: Permit) {
        if result.is_ok() {
            permit.answered();
        }
    }
}

/// An upstream taking `10 ms + 10 ms × (calls in flight − 1)` while `loaded`, 10 ms otherwise.
fn upstream(
    loaded: Arc<AtomicBool>,
) -> impl Service<(), Response = Duration, Error = Shed, Future: Send> + Clone {
    let in_flight = Arc::new(AtomicU32::new(0));
    service_fn(move |()| {
        let (in_flight, loaded) = (Arc::clone(&in_flight), Arc::clone(&loaded));
        async move {
            let others = in_flight.fetch_add(1, Ordering::SeqCst);
            let took = if loaded.load(Ordering::SeqCst) {
                Duration::from_millis(10 + 10 * u64::from(others))
            } else {
                Duration::from_millis(10)
            };
            tokio::time::sleep(took).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Shed>(took)
        }
    })
}

/// `clients` callers in closed loops for `run`; returns (served, shed, worst latency served).
async fn drive<S>(service: S, clients: usize, run: Duration) -> (u32, u32, Duration)
where
    S: Service<(), Response = Duration, Error = Shed> + Clone + Send + 'static,
    S::Future: Send,
{
    let until = Instant::now() + run;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut service = service.clone();
        tasks.push(tokio::spawn(async move {
            let (mut served, mut shed, mut worst) = (0, 0, Duration::ZERO);
            while Instant::now() < until {
                match service.ready().await.unwrap().call(()).await {
                    Ok(took) => {
                        served += 1;
                        worst = worst.max(took);
                    }
                    Err(shed_by) => {
                        shed += 1;
                        // A shed client backs off as Retry-After says.
                        tokio::time::sleep(shed_by.retry_in.max(Duration::from_millis(1))).await;
                    }
                }
            }
            (served, shed, worst)
        }));
    }
    let mut total = (0, 0, Duration::ZERO);
    for task in tasks {
        let (served, shed, worst) = task.await.unwrap();
        total = (total.0 + served, total.1 + shed, total.2.max(worst));
    }
    total
}

#[tokio::test(start_paused = true)]
async fn the_limit_drops_as_latency_rises_and_recovers_when_it_falls() {
    let loaded = Arc::new(AtomicBool::new(true));
    let limit = AdaptiveLimit::new(config());
    let service = AdaptiveConcurrencyLayer::new(limit.clone(), Judge).layer(upstream(Arc::clone(&loaded)));

    // Without a limit, 50 callers would see 10 + 10 × 49 = 500 ms.
    let (served, shed, _) = drive(service.clone(), 50, Duration::from_secs(20)).await;
    let squeezed = limit.limit();
    assert!(served > 0 && shed > 0, "served {served}, shed {shed}");
    assert!(
        squeezed <= 5,
        "the limit stayed at {squeezed} while latency rose with load"
    );
    assert!(
        limit.baseline().is_some_and(|b| b <= Duration::from_millis(30)),
        "{:?}",
        limit.baseline()
    );
    // Settled: what is served now stays near the tolerance, not at 500 ms.
    let (_, _, worst) = drive(service.clone(), 50, Duration::from_secs(5)).await;
    assert!(
        worst <= Duration::from_millis(60),
        "served calls took up to {worst:?}"
    );

    // The upstream no longer slows with load: the limit climbs back.
    loaded.store(false, Ordering::SeqCst);
    let (served_after, _, worst_after) = drive(service.clone(), 50, Duration::from_secs(20)).await;
    let recovered = limit.limit();
    assert!(recovered >= 40, "the limit only came back to {recovered}");
    assert!(
        served_after > served,
        "served {served_after} after vs {served} under load"
    );
    assert_eq!(worst_after, Duration::from_millis(10));
    assert_eq!(limit.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn timeouts_halve_the_limit_and_the_baseline_is_measured_again() {
    let mut config = config();
    config.baseline_interval = Duration::from_secs(2);
    let limit = AdaptiveLimit::new(config);
    let mut permits: Vec<Permit> = (0..40).map(|_| limit.try_acquire().unwrap()).collect();
    assert!(limit.try_acquire().is_err(), "the 41st call is shed");
    for permit in &mut permits {
        permit.sample(Sample::Timeout);
    }
    drop(permits);
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(limit.limit(), 20);

    // A slower upstream for good: after the baseline interval one window runs at min_limit,
    // and its latency becomes the baseline.
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(500)).await;
        if let Ok(mut permit) = limit.try_acquire() {
            tokio::time::advance(Duration::from_millis(80)).await;
            permit.answered();
        }
    }
    assert_eq!(limit.baseline(), Some(Duration::from_millis(80)));
}

#[test]
fn odd_settings_are_clamped_not_refused() {
    let limit = AdaptiveLimit::new(AdaptiveConcurrencyConfig {
        initial_limit: 0,
        min_limit: 0,
        max_limit: 0,
        window: Duration::ZERO,
        min_samples: 0,
        tolerance: f64::NAN,
        baseline_interval: Duration::ZERO,
    });
    assert_eq!(limit.config().min_limit, 1);
    assert_eq!(limit.config().max_limit, 1);
    assert!((limit.config().tolerance - 2.0).abs() < f64::EPSILON);
}
