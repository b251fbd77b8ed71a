//! The one integration-test binary: a module per area.

mod util;

mod cache;
