//! Integration tests of supplier quotes: real suppliers, a real gateway, the
//! real broker and Redis that `make test` starts.

mod concurrency;
mod helpers;
mod orders;
mod quotes;
mod supplier;
