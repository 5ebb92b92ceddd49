//! End-to-end tests and examples of the conveyor-rs workspace; nothing to import.
