//! # hw-tests — tests that need an RDMA device (not built yet)
//!
//! This crate will hold the soft-RoCE (rdma_rxe) QEMU guest harness and the
//! o2ib runs of the LND conformance suite and lnet-selftest; see issue 3.
//! Nothing is implemented here yet and it exports nothing.
