//! NT kernel services (work in progress).
