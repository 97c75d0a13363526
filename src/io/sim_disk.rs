//! TODO(io helper): the simulated disk.
#[derive(Debug, Clone)]
pub struct SimDisk;
#[derive(Debug, Clone, Default)]
pub struct SimDiskFaults;
