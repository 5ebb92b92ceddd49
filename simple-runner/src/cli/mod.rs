//! The binary's own parts, not the library's.
//!
//! Its command line, read into the runner's settings (`args.rs`), and the spinner that
//! shows a pull on a terminal (`spinner.rs`); what each command does is in `main.rs`.

pub mod args;
pub mod spinner;
