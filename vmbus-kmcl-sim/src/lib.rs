//! Host emulation of the VMBus Kernel Mode Client Library (work in progress).

pub mod nt;
