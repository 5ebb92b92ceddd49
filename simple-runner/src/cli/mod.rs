//! The binary's own parts, not the library's: its command line (`args.rs`) and the
//! spinner that shows a pull on a terminal (`spinner.rs`).

pub mod args;
pub mod spinner;
