use super::*;

const fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn t(secs: u64) -> Time {
    Time::from_secs(secs)
}

#[test]
fn lustre_defaults() {
    let a = AtSettings::default();
    assert_eq!((a.at_min, a.at_max, a.at_history, a.at_early_margin, a.at_extra), (s(5), s(600), s(600), s(5), s(30)));
    assert_eq!(a.timeout_for(s(5)), Duration::from_millis(11_250));
    assert_eq!(a.timeout_for(s(40)), s(55));
}

#[test]
fn estimator_is_max_over_bins_clamped() {
    let a = AtSettings::default();
    let mut e = AtEstimator::service(t(0), &a);
    assert_eq!(e.estimate(t(0)), s(5));
    e.add(t(1), Duration::from_millis(1));
    assert_eq!(e.estimate(t(1)), s(5), "floored at at_min");
    e.add(t(10), s(40));
    e.add(t(20), s(7));
    assert_eq!(e.estimate(t(20)), s(40));
    e.add(t(200), s(8)); // next bin
    assert_eq!(e.estimate(t(300)), s(40));
    e.add(t(10), s(5000));
    assert_eq!(e.estimate(t(300)), s(600), "clamped at at_max");
}

#[test]
fn samples_age_out_after_history() {
    let a = AtSettings::default();
    let mut e = AtEstimator::service(t(0), &a);
    e.add(t(0), s(40));
    assert_eq!(e.estimate(t(599)), s(40));
    assert_eq!(e.estimate(t(600)), s(5));
    // A later sample shifts the bins; the 40 s one still ages out at 600 s.
    e.add(t(160), s(10));
    assert_eq!(e.estimate(t(599)), s(40));
    assert_eq!(e.estimate(t(600)), s(10));
    e.add(t(2000), s(6));
    assert_eq!(e.estimate(t(2000)), s(6));
}

#[test]
fn client_timeouts_follow_replies() {
    let a = AtSettings::default();
    let p = Portal(12);
    let mut c = ClientAt::new(t(0), a);
    assert_eq!(c.request_timeout(t(0), p), Duration::from_millis(11_250));
    assert_eq!(c.request_deadline(t(0), p), Time::from_millis(11_250));
    // Sent at 0, replied at 40.010 s with a 40 s service time.
    c.handle_reply(Time::from_millis(40_010), p, t(0), s(40));
    assert_eq!(c.service_estimate(t(41), p), s(40));
    assert_eq!(c.net_latency(t(41)), Duration::from_millis(10));
    assert_eq!(c.request_timeout(t(41), p), s(55));
    assert_eq!(c.request_deadline(t(41), p), Time::from_millis(96_010));
    // Other portals keep their own estimate.
    assert_eq!(c.service_estimate(t(41), Portal(6)), s(5));
    // Early replies extend, never shorten.
    let old = t(11);
    assert_eq!(c.early_reply_deadline(t(6), t(0), s(41), old), Time::from_millis(41_010));
    assert_eq!(c.early_reply_deadline(t(6), t(0), s(1), old), old);
}

#[test]
fn client_portal_table_is_bounded() {
    let mut c = ClientAt::new(t(0), AtSettings::default());
    for i in 0..20 {
        c.handle_reply(t(1), Portal(i), t(0), s(u64::from(i) + 1));
    }
    assert_eq!(c.portals.len(), AT_MAX_PORTALS);
}

#[test]
fn early_replies_extend_until_at_max() {
    let a = AtSettings::default();
    let mut svc = ServiceAt::<u64>::new(t(0), a, 16);
    let timeout = a.timeout_for(a.at_min);
    assert_eq!(svc.handle_request(t(0), 1, timeout), Ok(Time::from_millis(11_250)));
    assert_eq!(svc.handle_request(t(0), 1, timeout), Err(AtError::Duplicate));
    assert_eq!(svc.poll_timeout(), Some(Time::from_millis(6_250)));
    svc.handle_timeout(t(6));
    assert_eq!(svc.poll_early_reply(), None, "not due yet");
    svc.handle_timeout(Time::from_millis(6_250));
    let er = svc.poll_early_reply();
    assert_eq!(er.map(|e| (e.key, e.timeout)), Some((1, Duration::from_millis(41_250))));
    assert_eq!(svc.poll_timeout(), Some(Time::from_millis(36_250)));

    let mut count = 1;
    while let Some(at) = svc.poll_timeout() {
        svc.handle_timeout(at);
        while svc.poll_early_reply().is_some() {
            count += 1;
        }
    }
    // 11.25 s + 19 * 30 s = 581.25 s <= at_max; one more would pass it.
    assert_eq!(count, 19);
    assert!(!svc.is_extendable(1));
    assert_eq!(svc.handle_reply_sent(t(590), 1), Some(s(590)));
    assert_eq!(svc.service_estimate(t(590)), s(590));
    assert_eq!(svc.pending(), 0);
}

#[test]
fn service_limits_and_early_replies_do_not_enter_history() {
    let a = AtSettings::default();
    let mut svc = ServiceAt::<u64>::new(t(0), a, 2);
    assert!(svc.handle_request(t(0), 1, s(6)).is_ok());
    assert!(svc.handle_request(t(0), 2, Duration::ZERO).is_ok());
    assert_eq!(svc.handle_request(t(0), 3, s(6)), Err(AtError::Full(2)));
    svc.handle_timeout(t(1));
    assert_eq!(svc.poll_early_reply().map(|e| e.key), Some(1));
    assert_eq!(svc.service_estimate(t(1)), s(5), "early reply left no sample");
    svc.forget(2);
    assert_eq!(svc.handle_reply_sent(t(2), 2), None);
    assert_eq!(svc.handle_reply_sent(t(2), 1), Some(s(2)));
    assert_eq!(svc.poll_timeout(), None);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a model that keeps every sample: the binned estimate
        /// remembers every sample younger than 3 bins and forgets every
        /// sample older than 4 bins (= at_history), always clamped.
        #[test]
        fn estimator_matches_model(
            steps in prop::collection::vec((0u64..400_000, 0u64..1_000_000), 1..60),
        ) {
            let a = AtSettings::default();
            let w = a.at_history / AT_BINS as u32;
            let mut e = AtEstimator::service(Time::ZERO, &a);
            let mut now = Time::ZERO;
            let mut samples: Vec<(Time, Duration)> = Vec::new();
            for (gap_ms, value_ms) in steps {
                now += Duration::from_millis(gap_ms);
                let v = Duration::from_millis(value_ms);
                e.add(now, v);
                samples.push((now, v));
                for probe in [Duration::ZERO, w, 2 * w, 3 * w + w / 2] {
                    let at = now + probe;
                    let max_within = |window: Duration| {
                        samples
                            .iter()
                            .filter(|(s, _)| at - *s < window)
                            .map(|(_, v)| *v)
                            .max()
                            .unwrap_or(Duration::ZERO)
                            .clamp(a.at_min, a.at_max)
                    };
                    let est = e.estimate(at);
                    prop_assert!(est >= max_within(3 * w), "forgot a young sample");
                    prop_assert!(est <= max_within(4 * w), "kept an old sample");
                    prop_assert!(est >= a.at_min && est <= a.at_max);
                }
            }
        }

        /// Deadlines never shrink on early replies and the client timeout
        /// always covers the estimate.
        #[test]
        fn client_timeouts_cover_estimates(
            replies in prop::collection::vec((1u64..100_000, 0u64..700_000), 1..30),
        ) {
            let a = AtSettings::default();
            let mut c = ClientAt::new(Time::ZERO, a);
            let mut now = Time::ZERO;
            for (gap_ms, service_ms) in replies {
                let sent = now;
                now += Duration::from_millis(gap_ms);
                let service = Duration::from_millis(service_ms).min(now - sent);
                c.handle_reply(now, Portal(1), sent, service);
                let est = c.service_estimate(now, Portal(1));
                prop_assert!(est >= service.clamp(a.at_min, a.at_max));
                let timeout = c.request_timeout(now, Portal(1));
                prop_assert!(timeout >= est + est / 4 + a.timeout_slack);
                let dl = c.request_deadline(now, Portal(1));
                prop_assert!(dl >= now + timeout);
                prop_assert_eq!(c.early_reply_deadline(now, now, Duration::ZERO, dl), dl);
            }
        }
    }
}

#[test]
fn served_untracked_requests_enter_the_estimate() {
    let mut at = ServiceAt::<u64>::new(t(0), AtSettings::default(), 8);
    assert_eq!(at.handle_served(t(10), t(3)), s(7));
    assert_eq!(at.pending(), 0, "nothing tracked");
    assert_eq!(at.poll_timeout(), None, "no early-reply timer for it");
    at.handle_served(t(20), t(0));
    assert_eq!(at.service_estimate(t(20)), s(20), "the worst sample in the history");
}
