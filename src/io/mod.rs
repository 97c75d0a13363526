//! The seams between node logic and the machine: disk and clock.
//!
//! Everything that decides what happens (the storage engine, the server, later Raft and gossip)
//! reaches files and time only through these traits, so the same code runs on real files and
//! tokio in production and on a simulated disk and clock in tests and under madsim.

mod clock;
mod disk;
pub mod sim_disk;
pub mod slot_file;
mod std_disk;

pub use clock::{Clock, ManualClock, SystemClock};
pub use disk::{create_dir_durable, Disk, DiskFile, MapMut};
pub use sim_disk::{SimDisk, SimDiskFaults, SimDiskStats};
pub use slot_file::{SlotFile, SlotLoad};
pub use std_disk::StdDisk;
