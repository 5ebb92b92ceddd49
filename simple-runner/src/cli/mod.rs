//! The binary's own parts, not the library's.
//!
//! Its command line, read into the runner's settings (`args.rs`), the spinner that
//! shows a pull on a terminal (`spinner.rs`), and the `artifact` commands
//! (`artifact.rs`); what the other commands do is in `main.rs`.

pub mod args;
pub mod artifact;
pub mod spinner;
