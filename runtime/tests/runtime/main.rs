//! kiln-runtime's integration tests.

mod architecture;
