//! Examples live under examples/*/main.rs.
