//! lnet
