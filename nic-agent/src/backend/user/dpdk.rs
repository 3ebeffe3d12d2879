//! The DPDK port device (next commit).
