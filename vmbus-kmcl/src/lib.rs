//! Safe wrapper of the VMBus Kernel Mode Client Library (work in progress).
#![no_std]
