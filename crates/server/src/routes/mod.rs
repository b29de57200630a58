//! One file per endpoint group; [`crate::router`] wires them.

pub mod chat;
pub mod completions;
pub mod documents;
pub mod generate;
pub mod ops;
pub mod tokenize;
pub mod ui;
