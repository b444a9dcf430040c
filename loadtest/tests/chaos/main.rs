//! The fault scenarios T1–T9 of `reliability.md`, each driving load through a
//! pipeline of real service processes it started itself, injecting its fault,
//! and failing on any lost or duplicated order. `CHAOS_ORDERS` sets the size
//! (default 1500; `make chaos` runs 20,000).

mod harness;
mod scenarios;
