//! Host edge.
