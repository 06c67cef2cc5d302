// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device behind the FIFO tests: an entropy device that never touches guest memory, so a
//! test sees the FIFO and the transport alone.

use virtio_msg_device::{transport::QueueState, Backend};

/// A device that never touches guest memory.
pub struct Quiet;

impl Backend for Quiet {
    fn device_id(&self) -> u32 {
        4
    }
    fn features(&self) -> u64 {
        1 << 32
    }
    fn config_size(&self) -> u32 {
        0
    }
    fn read_config(&self, _offset: u32, _out: &mut [u8]) {}
    fn write_config(&mut self, _offset: u32, _data: &[u8]) {}
    fn num_queues(&self) -> u32 {
        1
    }
    fn queue_notified(&mut self, _index: u32, _queues: &[QueueState]) -> Vec<u32> {
        Vec::new()
    }
    fn reset(&mut self) {}
}
