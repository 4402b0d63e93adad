//! The LND conformance suite on o2ib (soft-RoCE in the guest).
//!
//! Outside the guest every case prints that it skipped and returns.

mod on_o2ib {
    lnet::conformance_tests!(match hw_tests::fabric() {
        Some(f) => f,
        None => return,
    });
}
