//! `laconic run`'s pipeline: its file ([`config`]) and its stages ([`stage`]).

pub mod config;
pub mod stage;
