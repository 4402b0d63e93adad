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
