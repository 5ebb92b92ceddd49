//! The examples of conveyor-rs live in `examples/`; this library is empty.
